"""Portfolio tests reuse the orders fixtures (instruments, a connected paper account, grants)."""

from tests.orders.conftest import account, granted_trader, instruments  # noqa: F401
