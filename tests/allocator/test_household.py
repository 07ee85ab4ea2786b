"""Parsing and validation of the job body: every bound, precise messages keyed by JSON path."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from apps.allocator.household import (
    Assets,
    Goal,
    OtherIncome,
    Params,
    ValidationProblem,
    parse_household,
    parse_params,
    parse_request,
)
from apps.common.errors import ValidationFailed


def errors_of(payload: Any) -> dict[str, list[str]]:
    with pytest.raises(ValidationProblem) as caught:
        parse_request(payload)
    return caught.value.errors


def test_example_body_parses_to_decimal_household(body: dict[str, Any]) -> None:
    request = parse_request(body)

    assert request.household.assets == Assets(
        taxable=Decimal("500000"), tax_deferred=Decimal("250000"), tax_free=Decimal("0")
    )
    assert request.household.assets.total == Decimal("750000")
    assert request.household.other_income == (OtherIncome(annual_amount=Decimal("24000"), start_age=67),)
    assert request.household.goals == (Goal(amount=Decimal("50000"), years_from_now=5),)
    assert request.params == Params(
        n_sims=10000, n_jobs=2, grid_step=0.05, payout_rate=None, horizon_years=30, inflation=0.025, seed=42
    )


def test_omitted_params_take_defaults() -> None:
    assert parse_params({}) == Params()
    assert parse_params(None) == Params()


def test_omitted_asset_members_are_zero(body: dict[str, Any]) -> None:
    body["household"]["assets"] = {"tax_free": "10.50"}

    household = parse_request(body).household

    assert household.assets == Assets(tax_free=Decimal("10.50"))


def test_retirement_before_current_age_is_refused(body: dict[str, Any]) -> None:
    body["household"]["retirement_age"] = 50

    assert errors_of(body) == {"household.retirement_age": ["must be >= current_age"]}


def test_every_problem_is_reported_at_once(body: dict[str, Any]) -> None:
    body["household"]["current_age"] = "55"
    body["household"]["assets"]["taxable"] = "-1"
    body["household"]["goals"][0]["amount"] = "12.345"
    body["household"]["other_income"][0]["end_age"] = 60
    body["params"]["n_sims"] = 99
    body["params"]["grid_step"] = 0.3
    body["params"]["rebalance"] = "yes"
    body["params"]["extra"] = 1

    assert errors_of(body) == {
        "household.current_age": ["must be an integer"],
        "household.assets.taxable": ["must be >= 0"],
        "household.goals[0].amount": ["must have at most 2 decimal places"],
        "household.other_income[0].end_age": ["must be > start_age"],
        "params.n_sims": ["must be between 100 and 200000"],
        "params.grid_step": ["must divide 1 into a whole number of steps (1/0.3 = 3.333)"],
        "params.rebalance": ["must be true or false"],
        "params.extra": ["is not a known field"],
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_sims", 200_001, "must be between 100 and 200000"),
        ("n_sims", True, "must be an integer"),
        ("n_jobs", 0, "must be between 1 and 64"),
        ("grid_step", 0.005, "must be between 0.01 and 0.5"),
        ("grid_step", 0.6, "must be between 0.01 and 0.5"),
        ("grid_step", "x", "must be a number"),
        ("payout_rate", 0, "must be greater than 0 and at most 0.25"),
        ("payout_rate", 0.3, "must be greater than 0 and at most 0.25"),
        ("horizon_years", 0, "must be between 1 and 60"),
        ("horizon_years", 61, "must be between 1 and 60"),
        ("inflation", 0.21, "must be between -0.05 and 0.2"),
        ("inflation", float("nan"), "must be a finite number"),
        ("seed", -1, "must be between 0 and 9223372036854775807"),
    ],
)
def test_param_bounds_are_checked(body: dict[str, Any], field: str, value: Any, message: str) -> None:
    body["params"][field] = value

    assert errors_of(body) == {f"params.{field}": [message]}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("current_age",), 17, "must be between 18 and 100"),
        (("retirement_age",), 101, "must be between 18 and 100"),
        (("annual_spending",), "1e13", "must be <= 1000000000000"),
        (("annual_spending",), "abc", 'must be a decimal amount such as "1500.00"'),
        (("annual_spending",), "NaN", "must be a finite amount"),
        (("annual_contribution",), [], 'must be a decimal amount such as "1500.00"'),
        (("assets",), "lots", "must be an object"),
        (("goals",), {}, "must be a list"),
        (("other_income", 0, "start_age"), 121, "must be between 0 and 120"),
        (("goals", 0, "years_from_now"), 30, "must be < horizon_years (30)"),
        (("retirment_age",), 65, "is not a known field"),
    ],
)
def test_household_bounds_are_checked(body: dict[str, Any], path: tuple[Any, ...], value: Any, message: str) -> None:
    target = body["household"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    json_path = "household" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)

    assert errors_of(body) == {json_path: [message]}


def test_missing_household_fields_are_required() -> None:
    assert errors_of({"household": {}}) == {
        "household.current_age": ["is required"],
        "household.retirement_age": ["is required"],
        "household.assets": ["is required"],
    }


def test_plan_past_age_120_is_refused(body: dict[str, Any]) -> None:
    body["household"]["current_age"] = 70
    body["household"]["retirement_age"] = 70
    body["params"]["horizon_years"] = 51

    assert errors_of(body) == {"params.horizon_years": ["must be <= 50 (current_age + horizon_years <= 120)"]}


def test_body_must_be_an_object() -> None:
    assert errors_of([1]) == {"body": ["must be an object"]}


def test_grid_step_is_normalised() -> None:
    assert parse_params({"grid_step": 0.0500000000001}).grid_step == 1 / 20
    assert parse_params({"grid_step": "0.25"}).grid_steps == 4


def test_float_money_keeps_its_decimal_meaning(body: dict[str, Any]) -> None:
    body["household"]["annual_spending"] = 60000.1

    assert parse_request(body).household.annual_spending == Decimal("60000.1")


def test_problem_is_a_422_domain_error(body: dict[str, Any]) -> None:
    body["params"]["n_jobs"] = 65
    with pytest.raises(ValidationFailed) as caught:
        parse_request(body)

    assert caught.value.status == 422
    assert caught.value.code == "VALIDATION_ERROR"
    assert caught.value.details == {"params.n_jobs": ["must be between 1 and 64"]}


def test_parse_household_alone_uses_its_prefix(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationProblem) as caught:
        parse_household({**body["household"], "current_age": 10})

    assert caught.value.errors == {"household.current_age": ["must be between 18 and 100"]}
