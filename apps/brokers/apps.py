from django.apps import AppConfig


class BrokersConfig(AppConfig):
    """Broker accounts, instruments and connection status; the paper broker and the IB simulator."""

    name = "apps.brokers"
    label = "brokers"
