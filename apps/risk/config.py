"""The risk defaults of `config/risk/defaults.yaml` (path in settings.RISK_DEFAULTS_FILE), parsed
once and validated: a malformed file stops the process at start-up rather than at the first order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.risk.derisk import DeriskConfig, Regime

BREAKER_KINDS = ("REJECT_STORM", "DAILY_LOSS", "ACK_LATENCY", "STALE_MARKET_DATA", "RECONCILIATION_BREAK")


@dataclass(frozen=True, slots=True)
class RiskDefaults:
    default_capital: Decimal
    max_gross_exposure_pct: Decimal
    derisk: DeriskConfig
    calendars: dict[str, str]
    breakers: dict[str, dict[str, Any]]
    max_override_hours: int


def _decimal(raw: Any, name: str) -> Decimal:
    try:
        value = Decimal(str(raw))
    except InvalidOperation as exc:
        raise ImproperlyConfigured(f"risk defaults: {name} is not a decimal: {raw!r}") from exc
    if not value.is_finite() or value <= 0:
        raise ImproperlyConfigured(f"risk defaults: {name} must be positive")
    return value


def parse(raw: dict[str, Any]) -> RiskDefaults:
    """Validate the YAML document; raise ImproperlyConfigured naming the bad key."""
    try:
        d = raw["derisk"]
        caps = {str(k): _decimal(v, f"derisk.regime_caps.{k}") for k, v in (d.get("regime_caps") or {}).items()}
        if set(caps) - set(Regime):
            raise ImproperlyConfigured(f"risk defaults: unknown regimes {sorted(set(caps) - set(Regime))}")
        derisk = DeriskConfig(
            timezone=str(d["timezone"]),
            soft_at=time.fromisoformat(str(d["soft_at"])),
            hard_at=time.fromisoformat(str(d["hard_at"])),
            target_gross_pct=_decimal(d["target_gross_pct"], "derisk.target_gross_pct"),
            hard_cap_pct=_decimal(d["hard_cap_pct"], "derisk.hard_cap_pct"),
            open_minutes=int(d["open_minutes"]),
            early_until_minutes=int(d["early_until_minutes"]),
            late_minutes=int(d["late_minutes"]),
            close_minutes=int(d["close_minutes"]),
            regime_caps=caps,
        )
        breakers = {str(k): dict(v) for k, v in raw["breakers"].items()}
        if set(breakers) != set(BREAKER_KINDS):
            raise ImproperlyConfigured(f"risk defaults: breakers must configure exactly {', '.join(BREAKER_KINDS)}")
        for kind, conf in breakers.items():
            if conf.get("reset") not in ("AUTO", "MANUAL") or conf.get("action") not in ("HALTED", "REDUCING"):
                raise ImproperlyConfigured(
                    f"risk defaults: breakers.{kind} needs reset AUTO|MANUAL, action HALTED|REDUCING"
                )
        return RiskDefaults(
            default_capital=_decimal(raw["default_capital"], "default_capital"),
            max_gross_exposure_pct=_decimal(raw["max_gross_exposure_pct"], "max_gross_exposure_pct"),
            derisk=derisk,
            calendars={str(k): str(v) for k, v in raw["calendars"].items()},
            breakers=breakers,
            max_override_hours=int(raw["max_override_hours"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ImproperlyConfigured(f"risk defaults: {exc!r}") from exc


@lru_cache(maxsize=1)
def defaults() -> RiskDefaults:
    """The parsed defaults (cached for the life of the process)."""
    path = Path(settings.RISK_DEFAULTS_FILE)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ImproperlyConfigured(f"cannot read risk defaults {path}: {exc}") from exc
    return parse(raw)
