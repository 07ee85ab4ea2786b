from tests.orders.conftest import account, instruments  # noqa: F401
