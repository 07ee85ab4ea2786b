from django.apps import AppConfig


class AllocatorConfig(AppConfig):
    """The household allocator: jobs, the Monte Carlo optimiser and the PPTX reports."""

    name = "apps.allocator"
    label = "allocator"

    def ready(self) -> None:
        from django.test.signals import setting_changed

        from apps.allocator.storage import reset_on_settings_change

        # Tests switch STORAGES (local ↔ S3); the report storage follows them.
        setting_changed.connect(reset_on_settings_change, dispatch_uid="allocator-report-storage")
