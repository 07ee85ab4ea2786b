"""The risk defaults of `config/risk_rules.yaml` (path in settings.RISK_RULES_FILE), parsed
once and validated: a malformed file stops the process at start-up rather than at the first order."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.risk.derisk import DeriskConfig, Regime
from apps.risk.exposure import BucketLimits, Buckets

BREAKER_KINDS = ("REJECT_STORM", "DAILY_LOSS", "ACK_LATENCY", "STALE_MARKET_DATA", "RECONCILIATION_BREAK")


@dataclass(frozen=True, slots=True)
class RiskDefaults:
    default_capital: Decimal
    max_gross_exposure_pct: Decimal
    derisk: DeriskConfig
    calendars: dict[str, str]
    breakers: dict[str, dict[str, Any]]
    max_override_hours: int
    buckets: Buckets = field(default_factory=Buckets)
    price_throttle_seconds: int = 5
    tenants: dict[str, TenantRisk] | None = None  # per-tenant overrides by tenant slug

    def derisk_for(self, slug: str | None) -> DeriskConfig:
        """The de-risk playbook of a tenant (its overrides, else the defaults)."""
        tenant = (self.tenants or {}).get(slug or "")
        return tenant.derisk if tenant is not None else self.derisk

    def buckets_for(self, slug: str | None) -> Buckets:
        """The bucket assignment of a tenant (its overrides, else the defaults)."""
        tenant = (self.tenants or {}).get(slug or "")
        return tenant.buckets if tenant is not None else self.buckets

    def breakers_for(self, slug: str | None) -> dict[str, dict[str, Any]]:
        """The circuit breakers' settings of a tenant (its overrides key by key, else the defaults)."""
        tenant = (self.tenants or {}).get(slug or "")
        return tenant.breakers if tenant is not None and tenant.breakers else self.breakers


@dataclass(frozen=True, slots=True)
class TenantRisk:
    derisk: DeriskConfig
    buckets: Buckets
    breakers: dict[str, dict[str, Any]] | None = None


def _decimal(raw: Any, name: str) -> Decimal:
    try:
        value = Decimal(str(raw))
    except InvalidOperation as exc:
        raise ImproperlyConfigured(f"risk defaults: {name} is not a decimal: {raw!r}") from exc
    if not value.is_finite() or value <= 0:
        raise ImproperlyConfigured(f"risk defaults: {name} must be positive")
    return value


def _derisk(d: dict[str, Any]) -> DeriskConfig:
    caps = {str(k): _decimal(v, f"derisk.regime_caps.{k}") for k, v in (d.get("regime_caps") or {}).items()}
    if set(caps) - set(Regime):
        raise ImproperlyConfigured(f"risk defaults: unknown regimes {sorted(set(caps) - set(Regime))}")
    return DeriskConfig(
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


def _buckets(b: dict[str, Any]) -> Buckets:
    limits = {}
    for name, conf in (b.get("limits") or {}).items():
        target = conf.get("target_gross_pct")
        limits[str(name)] = BucketLimits(
            max_gross_pct=_decimal(conf["max_gross_pct"], f"buckets.limits.{name}.max_gross_pct"),
            target_gross_pct=None if target is None else _decimal(target, f"buckets.limits.{name}.target_gross_pct"),
        )
    accounts = {str(k): str(v) for k, v in (b.get("accounts") or {}).items()}
    symbols = {str(k).upper(): str(v) for k, v in (b.get("symbols") or {}).items()}
    default = str(b.get("default", "LT"))
    unknown = ({default} | set(accounts.values()) | set(symbols.values())) - set(limits)
    if unknown:
        raise ImproperlyConfigured(f"risk defaults: buckets {sorted(unknown)} have no limits")
    return Buckets(default=default, limits=limits, accounts=accounts, symbols=symbols)


def _tenants(raw: dict[str, Any], derisk: dict[str, Any], buckets: dict[str, Any]) -> dict[str, TenantRisk]:
    tenants = {}
    for slug, conf in (raw.get("tenants") or {}).items():
        unknown = set(conf or {}) - {"derisk", "buckets", "breakers"}
        if unknown:
            raise ImproperlyConfigured(f"risk defaults: tenants.{slug} may only override derisk, buckets and breakers")
        conf = conf or {}
        overrides = conf.get("breakers") or {}
        if set(overrides) - set(BREAKER_KINDS):
            raise ImproperlyConfigured(
                f"risk defaults: tenants.{slug}.breakers: unknown {sorted(set(overrides) - set(BREAKER_KINDS))}"
            )
        merged = {kind: {**dict(value), **dict(overrides.get(kind) or {})} for kind, value in raw["breakers"].items()}
        tenants[str(slug)] = TenantRisk(
            derisk=_derisk({**derisk, **(conf.get("derisk") or {})}),
            buckets=_buckets({**buckets, **(conf.get("buckets") or {})}),
            breakers=_breakers(merged) if overrides else None,
        )
    return tenants


def _breakers(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    breakers = {str(k): dict(v) for k, v in raw.items()}
    if set(breakers) != set(BREAKER_KINDS):
        raise ImproperlyConfigured(f"risk defaults: breakers must configure exactly {', '.join(BREAKER_KINDS)}")
    for kind, conf in breakers.items():
        if conf.get("reset") not in ("AUTO", "MANUAL") or conf.get("action") not in ("HALTED", "REDUCING"):
            raise ImproperlyConfigured(
                f"risk defaults: breakers.{kind} needs reset AUTO|MANUAL, action HALTED|REDUCING"
            )
        if conf["reset"] == "AUTO" and int(conf.get("reset_seconds", 0)) <= 0:
            raise ImproperlyConfigured(f"risk defaults: breakers.{kind} resets AUTO and needs reset_seconds > 0")
    return breakers


def parse(raw: dict[str, Any]) -> RiskDefaults:
    """Validate the YAML document; raise ImproperlyConfigured naming the bad key."""
    try:
        derisk = _derisk(raw["derisk"])
        breakers = _breakers(raw["breakers"])
        raw_buckets = raw.get("buckets") or {"default": "LT", "limits": {"LT": {"max_gross_pct": "130"}}}
        return RiskDefaults(
            default_capital=_decimal(raw["default_capital"], "default_capital"),
            max_gross_exposure_pct=_decimal(raw["max_gross_exposure_pct"], "max_gross_exposure_pct"),
            derisk=derisk,
            calendars={str(k): str(v) for k, v in raw["calendars"].items()},
            breakers=breakers,
            max_override_hours=int(raw["max_override_hours"]),
            buckets=_buckets(raw_buckets),
            price_throttle_seconds=int((raw.get("exposure") or {}).get("price_throttle_seconds", 5)),
            tenants=_tenants(raw, raw["derisk"], raw_buckets),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ImproperlyConfigured(f"risk defaults: {exc!r}") from exc


@lru_cache(maxsize=1)
def defaults() -> RiskDefaults:
    """The parsed defaults (cached for the life of the process)."""
    path = Path(settings.RISK_RULES_FILE)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ImproperlyConfigured(f"cannot read risk defaults {path}: {exc}") from exc
    return parse(raw)
