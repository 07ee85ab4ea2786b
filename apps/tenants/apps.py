from django.apps import AppConfig


class TenantsConfig(AppConfig):
    """Tenants, users, memberships, API keys, invitations and authentication."""

    name = "apps.tenants"
    label = "tenants"
