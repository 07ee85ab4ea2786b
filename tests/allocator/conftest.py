"""Shared inputs of the allocator's tests: the example body, default assumptions, local report storage."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from apps.allocator.assumptions import Assumptions, load_assumptions
from apps.allocator.household import EXAMPLE_REQUEST


def example_body() -> dict[str, Any]:
    """The job body of API.md's example."""
    return copy.deepcopy(EXAMPLE_REQUEST)


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
