"""The allocator's inputs: a household and the run parameters, parsed and validated.

The API hands `parse_request` (or `parse_household` / `parse_params`) the JSON body of
`POST /allocator/jobs`; everything after that works on the frozen dataclasses defined here.
Money stays `Decimal` at this boundary; the simulation converts to floats itself.

Every problem found is collected (not just the first) into a `ValidationProblem` whose `errors`
map a JSON path such as ``household.retirement_age`` or ``household.goals[1].amount`` to its
messages, so the API renders one precise 422 for the whole body.

Bounds, and why:

========================  ==============================  ===========================================
field                     accepted                        reason
========================  ==============================  ===========================================
current_age               18 .. 100 (integer)             adults only; the model has no childhood
retirement_age            current_age .. 100 (integer)    "already retired" is retirement_age == current_age
money amounts             0 .. 1e12, at most 2 decimals   cents; a trillion is beyond any household
other_income start_age    0 .. 120                        may start before today (already paid)
other_income end_age      > start_age, <= 120             exclusive: paid while start_age <= age < end_age
goals years_from_now      0 .. horizon_years - 1          0 is "now"; later goals fall outside the run
n_sims                    100 .. 200 000                  fewer gives noise; more gives no information
n_jobs                    1 .. 64                         processes; more than cores only adds overhead
grid_step                 0.01 .. 0.5, 1/step whole       the simplex grid needs a whole number of steps
payout_rate               null or 0 < rate <= 0.25        a 25 % draw is already a liquidation plan
horizon_years             1 .. 60                         a 60-year plan is already a lifetime
current_age + horizon     <= 120                          nobody plans past 120
inflation                 -0.05 .. 0.20                   deflation to high inflation
seed                      0 .. 2**63 - 1                  numpy's SeedSequence takes any non-negative int
rebalance                 true / false                    annual rebalancing to the target weights
========================  ==============================  ===========================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from apps.common.errors import ValidationFailed

MIN_AGE = 18
MAX_AGE = 100
MAX_LIFE_AGE = 120
MAX_MONEY = Decimal("1e12")
MIN_SIMS, MAX_SIMS = 100, 200_000
MIN_JOBS, MAX_JOBS = 1, 64
MIN_GRID_STEP, MAX_GRID_STEP = 0.01, 0.5
MAX_PAYOUT_RATE = 0.25
MIN_HORIZON, MAX_HORIZON = 1, 60
MIN_INFLATION, MAX_INFLATION = -0.05, 0.20
MAX_SEED = 2**63 - 1
# 1/step must be a whole number; 1e-9 forgives the binary representation of e.g. 0.05.
GRID_STEP_TOLERANCE = 1e-9

CENT = Decimal("0.01")

# API.md's example job body: the OpenAPI example, the benchmark's job and the tests' default.
EXAMPLE_REQUEST: dict[str, Any] = {
    "household": {
        "current_age": 55,
        "retirement_age": 65,
        "assets": {"taxable": "500000", "tax_deferred": "250000", "tax_free": "0"},
        "annual_contribution": "20000",
        "annual_spending": "60000",
        "other_income": [{"annual_amount": "24000", "start_age": 67}],
        "goals": [{"amount": "50000", "years_from_now": 5}],
    },
    "params": {
        "n_sims": 10000,
        "n_jobs": 2,
        "grid_step": 0.05,
        "payout_rate": None,
        "horizon_years": 30,
        "inflation": 0.025,
        "seed": 42,
    },
}


class ValidationProblem(ValidationFailed):
    """The payload is invalid; `errors` maps JSON paths to precise messages (rendered as a 422)."""

    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        self.errors: dict[str, list[str]] = {path: list(messages) for path, messages in errors.items()}
        super().__init__("Invalid allocator request", fields=self.errors)


@dataclass(frozen=True)
class Assets:
    """Current investable assets by account type (taxes are not modelled; they are summed)."""

    taxable: Decimal = Decimal(0)
    tax_deferred: Decimal = Decimal(0)
    tax_free: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        return self.taxable + self.tax_deferred + self.tax_free


@dataclass(frozen=True)
class OtherIncome:
    """Income in today's money (pension, Social Security) paid while start_age <= age < end_age."""

    annual_amount: Decimal
    start_age: int
    end_age: int | None = None

    def pays_at(self, age: int) -> bool:
        return self.start_age <= age and (self.end_age is None or age < self.end_age)


@dataclass(frozen=True)
class Goal:
    """A one-off withdrawal in today's money at the start of year `years_from_now` (0 is now)."""

    amount: Decimal
    years_from_now: int


@dataclass(frozen=True)
class Household:
    """Ages, assets and cash flows; all amounts are in today's money and indexed to inflation."""

    current_age: int
    retirement_age: int
    assets: Assets
    annual_contribution: Decimal = Decimal(0)
    annual_spending: Decimal = Decimal(0)
    other_income: tuple[OtherIncome, ...] = ()
    goals: tuple[Goal, ...] = ()


@dataclass(frozen=True)
class Params:
    """How to run: simulation size, grid, horizon, inflation, seed; defaults are the API's."""

    n_sims: int = 10_000
    n_jobs: int = 1
    grid_step: float = 0.05
    payout_rate: float | None = None
    horizon_years: int = 30
    inflation: float = 0.025
    seed: int = 0
    rebalance: bool = True

    @property
    def grid_steps(self) -> int:
        """The number of grid steps between 0 and 1 (20 for a step of 0.05)."""
        return round(1 / self.grid_step)


@dataclass(frozen=True)
class AllocationRequest:
    """A validated job body: the household and the parameters."""

    household: Household
    params: Params


@dataclass
class _Errors:
    """Collects messages by JSON path so one response lists every problem."""

    by_path: dict[str, list[str]] = field(default_factory=dict)

    def add(self, path: str, message: str) -> None:
        self.by_path.setdefault(path, []).append(message)

    def raise_if_any(self) -> None:
        if self.by_path:
            raise ValidationProblem(self.by_path)


_MISSING: Any = object()


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _object(value: Any, path: str, errors: _Errors) -> Mapping[str, Any] | None:
    if not isinstance(value, Mapping):
        errors.add(path, "must be an object")
        return None
    return value


def _unknown_keys(data: Mapping[str, Any], allowed: set[str], prefix: str, errors: _Errors) -> None:
    # Unknown members are refused so a typo ("retirment_age") is not silently ignored.
    for key in sorted(set(data) - allowed, key=str):
        errors.add(_join(prefix, str(key)), "is not a known field")


def _int(
    data: Mapping[str, Any], key: str, prefix: str, errors: _Errors, *, low: int, high: int, default: Any = _MISSING
) -> int | None:
    path = _join(prefix, key)
    value = data.get(key, _MISSING)
    if value is _MISSING or value is None:
        if default is _MISSING:
            errors.add(path, "is required")
        return default if default is not _MISSING else None
    # bool is an int subclass in Python; `true` is not an age.
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(path, "must be an integer")
        return None
    if not low <= value <= high:
        errors.add(path, f"must be between {low} and {high}")
        return None
    return value


def _float(
    data: Mapping[str, Any],
    key: str,
    prefix: str,
    errors: _Errors,
    *,
    low: float,
    high: float,
    low_inclusive: bool = True,
    default: Any = _MISSING,
) -> float | None:
    path = _join(prefix, key)
    value = data.get(key, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            errors.add(path, "is required")
        return default if default is not _MISSING else None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        errors.add(path, "must be a number")
        return None
    try:
        number = float(value)
    except ValueError:
        errors.add(path, "must be a number")
        return None
    if not math.isfinite(number):
        errors.add(path, "must be a finite number")
        return None
    below = number < low if low_inclusive else number <= low
    if below or number > high:
        opening = "between" if low_inclusive else "greater than"
        closing = "and at most" if not low_inclusive else "and"
        errors.add(path, f"must be {opening} {low:g} {closing} {high:g}")
        return None
    return number


def _money(data: Mapping[str, Any], key: str, prefix: str, errors: _Errors, *, required: bool) -> Decimal | None:
    path = _join(prefix, key)
    value = data.get(key, _MISSING)
    if value is _MISSING or value is None:
        if required:
            errors.add(path, "is required")
            return None
        return Decimal(0)
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        errors.add(path, 'must be a decimal amount such as "1500.00"')
        return None
    try:
        # A float goes through its shortest repr so 0.1 means 0.1, not its binary expansion.
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        errors.add(path, 'must be a decimal amount such as "1500.00"')
        return None
    if not amount.is_finite():
        errors.add(path, "must be a finite amount")
        return None
    if amount < 0:
        errors.add(path, "must be >= 0")
        return None
    if amount > MAX_MONEY:
        errors.add(path, f"must be <= {MAX_MONEY:f}")
        return None
    # Cents: 12.345 is refused rather than rounded behind the client's back.
    if amount != amount.quantize(CENT):
        errors.add(path, "must have at most 2 decimal places")
        return None
    return amount


def _parse_assets(value: Any, prefix: str, errors: _Errors) -> Assets | None:
    if value is None or value is _MISSING:
        errors.add(prefix, "is required")
        return None
    data = _object(value, prefix, errors)
    if data is None:
        return None
    _unknown_keys(data, {"taxable", "tax_deferred", "tax_free"}, prefix, errors)
    taxable = _money(data, "taxable", prefix, errors, required=False)
    deferred = _money(data, "tax_deferred", prefix, errors, required=False)
    free = _money(data, "tax_free", prefix, errors, required=False)
    if taxable is None or deferred is None or free is None:
        return None
    return Assets(taxable=taxable, tax_deferred=deferred, tax_free=free)


def _list(value: Any, path: str, errors: _Errors) -> list[Any]:
    if value is None or value is _MISSING:
        return []
    if not isinstance(value, list | tuple):
        errors.add(path, "must be a list")
        return []
    return list(value)


def _parse_other_income(value: Any, prefix: str, errors: _Errors) -> tuple[OtherIncome, ...]:
    incomes: list[OtherIncome] = []
    for index, item in enumerate(_list(value, prefix, errors)):
        path = f"{prefix}[{index}]"
        data = _object(item, path, errors)
        if data is None:
            continue
        _unknown_keys(data, {"annual_amount", "start_age", "end_age"}, path, errors)
        amount = _money(data, "annual_amount", path, errors, required=True)
        start = _int(data, "start_age", path, errors, low=0, high=MAX_LIFE_AGE)
        end = _int(data, "end_age", path, errors, low=0, high=MAX_LIFE_AGE, default=None)
        if start is not None and end is not None and end <= start:
            errors.add(f"{path}.end_age", "must be > start_age")
            continue
        if amount is not None and start is not None:
            incomes.append(OtherIncome(annual_amount=amount, start_age=start, end_age=end))
    return tuple(incomes)


def _parse_goals(value: Any, prefix: str, errors: _Errors, *, horizon_years: int | None) -> tuple[Goal, ...]:
    goals: list[Goal] = []
    # Without a known horizon (parse_household alone) only the absolute bound applies.
    last_year = (horizon_years if horizon_years is not None else MAX_HORIZON) - 1
    for index, item in enumerate(_list(value, prefix, errors)):
        path = f"{prefix}[{index}]"
        data = _object(item, path, errors)
        if data is None:
            continue
        _unknown_keys(data, {"amount", "years_from_now"}, path, errors)
        amount = _money(data, "amount", path, errors, required=True)
        years = _int(data, "years_from_now", path, errors, low=0, high=MAX_HORIZON - 1)
        if years is not None and years > last_year:
            errors.add(f"{path}.years_from_now", f"must be < horizon_years ({last_year + 1})")
            continue
        if amount is not None and years is not None:
            goals.append(Goal(amount=amount, years_from_now=years))
    return tuple(goals)


def _household(payload: Any, prefix: str, errors: _Errors, *, horizon_years: int | None) -> Household | None:
    data = _object(payload, prefix or "household", errors)
    if data is None:
        return None
    allowed = {
        "current_age",
        "retirement_age",
        "assets",
        "annual_contribution",
        "annual_spending",
        "other_income",
        "goals",
    }
    _unknown_keys(data, allowed, prefix, errors)
    current_age = _int(data, "current_age", prefix, errors, low=MIN_AGE, high=MAX_AGE)
    retirement_age = _int(data, "retirement_age", prefix, errors, low=MIN_AGE, high=MAX_AGE)
    if current_age is not None and retirement_age is not None and retirement_age < current_age:
        errors.add(_join(prefix, "retirement_age"), "must be >= current_age")
        retirement_age = None
    assets = _parse_assets(data.get("assets", _MISSING), _join(prefix, "assets"), errors)
    contribution = _money(data, "annual_contribution", prefix, errors, required=False)
    spending = _money(data, "annual_spending", prefix, errors, required=False)
    incomes = _parse_other_income(data.get("other_income"), _join(prefix, "other_income"), errors)
    goals = _parse_goals(data.get("goals"), _join(prefix, "goals"), errors, horizon_years=horizon_years)
    if (
        current_age is None
        or retirement_age is None
        or assets is None
        or contribution is None
        or spending is None
        or errors.by_path
    ):
        return None
    return Household(
        current_age=current_age,
        retirement_age=retirement_age,
        assets=assets,
        annual_contribution=contribution,
        annual_spending=spending,
        other_income=incomes,
        goals=goals,
    )


def _grid_step(data: Mapping[str, Any], prefix: str, errors: _Errors) -> float | None:
    step = _float(data, "grid_step", prefix, errors, low=MIN_GRID_STEP, high=MAX_GRID_STEP, default=Params.grid_step)
    if step is None:
        return None
    steps = 1 / step
    if abs(steps - round(steps)) > GRID_STEP_TOLERANCE * steps:
        errors.add(_join(prefix, "grid_step"), f"must divide 1 into a whole number of steps (1/{step:g} = {steps:.4g})")
        return None
    # Normalise (0.0500000001 -> 0.05) so equal grids compare and hash equal.
    return 1 / round(steps)


def _params(payload: Any, prefix: str, errors: _Errors) -> Params | None:
    if payload is None:
        payload = {}
    data = _object(payload, prefix or "params", errors)
    if data is None:
        return None
    allowed = {"n_sims", "n_jobs", "grid_step", "payout_rate", "horizon_years", "inflation", "seed", "rebalance"}
    _unknown_keys(data, allowed, prefix, errors)
    defaults = Params()
    n_sims = _int(data, "n_sims", prefix, errors, low=MIN_SIMS, high=MAX_SIMS, default=defaults.n_sims)
    n_jobs = _int(data, "n_jobs", prefix, errors, low=MIN_JOBS, high=MAX_JOBS, default=defaults.n_jobs)
    grid_step = _grid_step(data, prefix, errors)
    payout_rate = None
    if data.get("payout_rate") is not None:
        payout_rate = _float(data, "payout_rate", prefix, errors, low=0.0, high=MAX_PAYOUT_RATE, low_inclusive=False)
    horizon = _int(
        data, "horizon_years", prefix, errors, low=MIN_HORIZON, high=MAX_HORIZON, default=defaults.horizon_years
    )
    inflation = _float(
        data, "inflation", prefix, errors, low=MIN_INFLATION, high=MAX_INFLATION, default=defaults.inflation
    )
    seed = _int(data, "seed", prefix, errors, low=0, high=MAX_SEED, default=defaults.seed)
    rebalance = data.get("rebalance", defaults.rebalance)
    if not isinstance(rebalance, bool):
        errors.add(_join(prefix, "rebalance"), "must be true or false")
    if errors.by_path:
        return None
    assert n_sims is not None
    assert n_jobs is not None
    assert grid_step is not None
    assert horizon is not None
    assert inflation is not None
    assert seed is not None
    return Params(
        n_sims=n_sims,
        n_jobs=n_jobs,
        grid_step=grid_step,
        payout_rate=payout_rate,
        horizon_years=horizon,
        inflation=inflation,
        seed=seed,
        rebalance=bool(rebalance),
    )


def parse_household(payload: Any, *, prefix: str = "household") -> Household:
    """Validate a household object; raise `ValidationProblem` listing every bad field."""
    errors = _Errors()
    household = _household(payload, prefix, errors, horizon_years=None)
    errors.raise_if_any()
    assert household is not None
    return household


def parse_params(payload: Any, *, prefix: str = "params") -> Params:
    """Validate a params object (missing members take the defaults of `Params`)."""
    errors = _Errors()
    params = _params(payload, prefix, errors)
    errors.raise_if_any()
    assert params is not None
    return params


def parse_request(payload: Any) -> AllocationRequest:
    """Validate a whole job body ``{"household": …, "params": …}`` including cross-field rules."""
    errors = _Errors()
    data = _object(payload, "body", errors)
    if data is None:
        errors.raise_if_any()
    assert data is not None
    _unknown_keys(data, {"household", "params"}, "", errors)
    params_errors = _Errors()
    params = _params(data.get("params"), "params", params_errors)
    errors.by_path.update(params_errors.by_path)
    household_errors = _Errors()
    if "household" not in data:
        household_errors.add("household", "is required")
    horizon = params.horizon_years if params is not None else None
    household = (
        _household(data["household"], "household", household_errors, horizon_years=horizon)
        if "household" in data
        else None
    )
    errors.by_path.update(household_errors.by_path)
    if household is not None and params is not None and household.current_age + params.horizon_years > MAX_LIFE_AGE:
        errors.add(
            "params.horizon_years",
            f"must be <= {MAX_LIFE_AGE - household.current_age} (current_age + horizon_years <= {MAX_LIFE_AGE})",
        )
    errors.raise_if_any()
    assert household is not None
    assert params is not None
    return AllocationRequest(household=household, params=params)
