"""The paper broker: a real broker process for `PAPER` accounts, with IB's command and event formats.

It consumes the signed commands (`oms.submit`, `oms.cancel`, `oms.modify`) of the accounts'
`cmd.<account id>` streams, fills orders with the project's one fill model
(`apps.brokers.matching.OrderBook`) over a price path, and reports what happened as broker events
on `ib:events` in the IB gateway's format (`apps.brokers.ib.wire`). Pure parts: `walk` (the price
path) and `venue` (order books, bracket legs, OCA groups, commissions). `process` is the loop
run by `manage.py run_paper_broker`.
"""
