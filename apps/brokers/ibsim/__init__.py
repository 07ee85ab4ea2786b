"""A simulated IB Gateway that speaks the TWS API socket protocol (server version 178).

The unmodified ib_async client connects to it over TCP as to IB Gateway. Entry points:
`IBSimulator` (start/stop from a thread, plus the control API tests use), `cli.run` (blocking,
for ``manage.py ibsim``), and `testing.running_simulator` (the pytest fixture's body).
Nothing in this package imports Django.
"""

from apps.brokers.ibsim.simulator import IBSimulator, SimConfig

__all__ = ["IBSimulator", "SimConfig"]
