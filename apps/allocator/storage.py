"""Where reports live: the `reports` alias of `settings.STORAGES` (local files or S3).

The FileField gets a lazy proxy rather than a storage instance, so the backend is chosen from
the settings when first used, not frozen when the model class is created.
"""

from __future__ import annotations

from typing import Any

from django.core.files.storage import Storage, storages
from django.utils.functional import LazyObject, empty

REPORTS_ALIAS = "reports"


class ReportStorage(LazyObject):
    def _setup(self) -> None:
        self._wrapped = storages[REPORTS_ALIAS]


report_storage = ReportStorage()


def get_report_storage() -> Storage:
    """The FileField's storage callable (a stable import path for migrations)."""
    return report_storage  # type: ignore[return-value]


def is_local(storage: Any) -> bool:
    """Whether files are on this server's disk (we serve them) rather than remote (S3 presigns)."""
    try:
        storage.path("probe")
    except NotImplementedError:  # Storage.path: "this backend doesn't support absolute paths"
        return False
    return True


def reset_on_settings_change(*, setting: str, **_: Any) -> None:
    if setting == "STORAGES":
        report_storage._wrapped = empty
