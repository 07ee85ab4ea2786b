from django.apps import AppConfig


class CommonConfig(AppConfig):
    """Shared plumbing with no tables: partition maintenance, errors, pagination."""

    name = "apps.common"
    label = "common"
