"""Fixtures of the risk tests: the orders fixtures (instruments, a connected paper account)."""

from tests.orders.conftest import account, granted_trader, instruments, order_body  # noqa: F401
