"""Shared inputs of the allocator's tests: the example body, default assumptions, local report storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from apps.allocator.assumptions import Assumptions, load_assumptions


def example_body() -> dict[str, Any]:
    """The job body of API.md's example."""
    return {
        "household": {
            "current_age": 55,
            "retirement_age": 65,
            "assets": {"taxable": "500000", "tax_deferred": "250000", "tax_free": "0"},
            "annual_contribution": "20000",
            "annual_spending": "60000",
            "other_income": [{"annual_amount": "24000", "start_age": 67}],
            "goals": [{"amount": "50000", "years_from_now": 5}],
        },
        "params": {
            "n_sims": 10000,
            "n_jobs": 2,
            "grid_step": 0.05,
            "payout_rate": None,
            "horizon_years": 30,
            "inflation": 0.025,
            "seed": 42,
        },
    }


@pytest.fixture
def body() -> dict[str, Any]:
    return example_body()


@pytest.fixture(scope="session")
def default_assumptions() -> Assumptions:
    return load_assumptions()


@pytest.fixture
def report_dir(settings: Any, tmp_path: Any) -> Any:
    """Reports go to a temporary directory (local storage) for the test."""
    settings.STORAGES = local_storages(tmp_path)
    return tmp_path / "reports"


def local_storages(location: Path) -> dict[str, Any]:
    """STORAGES with every file under `location` (reports in its `reports/`)."""
    return {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": location}},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "reports": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": location / "reports"},
        },
    }
