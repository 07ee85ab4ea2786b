"""The IB connector: the gateway process that alone talks to Interactive Brokers (through ib_async).

Pure decision modules (no Django, tested without a database): `mapping` (our orders to IB orders
and back), `pacing` (the token bucket under IB's 50 messages/second), `resilience` (backoff with
jitter, the circuit breaker), `reconcile` (the three-way diff) and `wire` (the broker event
format of the `ib:events` stream). The rest is the process: `store` (persistence: order-id
leases, tickets, the gateway lock, reconciliation runs), `session` (one ib_async connection and
its callbacks), `router` (commands to IB), `sync` (reconciliation against IB) and `gateway`
(the reconnect loop that ties them together).
"""
