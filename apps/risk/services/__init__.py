"""Risk use cases: limits and overrides (`limits`), kill switches and breakers (`controls`), the
pre-trade evaluation that orders calls (`pretrade`), and exposure / de-risk upkeep (`upkeep`)."""

from apps.risk.services.controls import CancelPlan, kill_switch_cancellations, kill_switch_cancelled
from apps.risk.services.pretrade import Book, BookOrder, BookQuery, Evaluation, OrderSpec, pretrade_evaluate

__all__ = [
    "Book",
    "BookOrder",
    "BookQuery",
    "CancelPlan",
    "Evaluation",
    "OrderSpec",
    "kill_switch_cancellations",
    "kill_switch_cancelled",
    "pretrade_evaluate",
]
