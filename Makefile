# IB OMS — every day-to-day command. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)
PORT ?= 8000
IBSIM_PORT ?= 4002
export OMS_PORT := $(PORT)
export IBSIM_PORT
PYTEST_ARGS ?=

.PHONY: help install run test lint fmt migrations-check openapi bench services-check clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel setuptools
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP) ## create .venv with the project and its dev extras (quick when nothing changed)

services-check: install ## check PostgreSQL and Redis, create the database if it is missing
	$(PY) scripts/preflight.py

run: services-check ## install, migrate, seed the demo tenant, start every process (config/Procfile)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(PY) manage.py seed_demo_brokers
	$(PY) manage.py seed_demo_risk
	@$(PY) scripts/banner.py
	exec $(BIN)/honcho -f config/Procfile -d . start

test: install lint services-check migrations-check ## lint, then the whole test suite against the real PostgreSQL and Redis
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install ## ruff, the import-linter layer contract, mypy on the pure domain modules
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

fmt: install ## format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrations-check: install ## fail if a model change has no migration
	$(PY) manage.py makemigrations --check --dry-run

openapi: install ## export the OpenAPI document to openapi.json
	$(PY) scripts/export_openapi.py --output openapi.json

bench: install ## run the benchmarks in bench/ (they start what they need) on a database and Redis db of their own
	@$(PY) scripts/bench.py

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
