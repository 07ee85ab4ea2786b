from django.apps import AppConfig


class PortfolioConfig(AppConfig):
    """Positions from our own executions, P&L (average cost) and daily P&L snapshots."""

    name = "apps.portfolio"
    label = "portfolio"
