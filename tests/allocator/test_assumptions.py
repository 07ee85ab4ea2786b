"""Capital-market assumptions: defaults from YAML, tenant overrides, matrix validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apps.allocator.assumptions import Assumptions, apply_overrides, from_arrays, load_assumptions
from apps.allocator.household import ValidationProblem


def test_defaults_cover_four_classes(default_assumptions: Assumptions) -> None:
    assert default_assumptions.names == ("us_equity", "intl_equity", "bonds", "cash")
    matrix = default_assumptions.correlation_matrix()
    assert np.array_equal(matrix, matrix.T)
    assert np.all(np.diag(matrix) == 1.0)
    assert matrix[0, 1] == 0.75


def test_override_changes_only_what_it_names(default_assumptions: Assumptions) -> None:
    changed = apply_overrides(
        default_assumptions,
        {"asset_classes": {"bonds": {"expected_return": 0.05}}, "correlations": {"cash": {"us_equity": -0.1}}},
    )

    assert changed.expected_returns == (0.07, 0.075, 0.05, 0.03)
    assert changed.volatilities == default_assumptions.volatilities
    assert changed.correlation[0][3] == changed.correlation[3][0] == -0.1
    assert default_assumptions.correlation[0][3] == 0.0  # the base is untouched


def test_empty_override_returns_the_base(default_assumptions: Assumptions) -> None:
    assert apply_overrides(default_assumptions, None) is default_assumptions
    assert apply_overrides(default_assumptions, {}) is default_assumptions


def test_matrix_that_is_not_psd_is_refused(default_assumptions: Assumptions) -> None:
    with pytest.raises(ValidationProblem) as caught:
        apply_overrides(default_assumptions, {"correlations": {"us_equity": {"intl_equity": -0.9, "bonds": 0.9}}})

    (message,) = caught.value.errors["assumptions.correlations"]
    assert message.startswith("must be positive semi-definite (smallest eigenvalue -")


def test_asymmetric_pair_is_refused(default_assumptions: Assumptions) -> None:
    with pytest.raises(ValidationProblem) as caught:
        apply_overrides(default_assumptions, {"correlations": {"bonds": {"cash": 0.3}, "cash": {"bonds": 0.2}}})

    assert caught.value.errors == {
        "assumptions.correlations.cash.bonds": [
            "must equal correlations.bonds.cash (0.3); the matrix must be symmetric"
        ]
    }


@pytest.mark.parametrize(
    ("override", "errors"),
    [
        (
            {"asset_classes": {"cash": {"volatility": -0.01}}},
            {"assumptions.asset_classes.cash.volatility": ["must be between 0 and 1"]},
        ),
        (
            {"asset_classes": {"gold": {"volatility": 0.2}}},
            {"assumptions.asset_classes.gold": ["is not an asset class (known: us_equity, intl_equity, bonds, cash)"]},
        ),
        (
            {"correlations": {"bonds": {"bonds": 0.5}}},
            {"assumptions.correlations.bonds.bonds": ["must be 1 (the diagonal of a correlation matrix)"]},
        ),
        (
            {"correlations": {"bonds": {"cash": 1.5}}},
            {"assumptions.correlations.bonds.cash": ["must be between -1 and 1"]},
        ),
        ({"correlations": {"bonds": {"cash": "high"}}}, {"assumptions.correlations.bonds.cash": ["must be a number"]}),
        ({"volatility": 1}, {"assumptions.volatility": ["is not a known field"]}),
    ],
)
def test_bad_override_is_refused_precisely(
    default_assumptions: Assumptions, override: dict[str, object], errors: dict[str, list[str]]
) -> None:
    with pytest.raises(ValidationProblem) as caught:
        apply_overrides(default_assumptions, override)

    assert caught.value.errors == errors


def test_perfectly_correlated_classes_are_psd_and_accepted() -> None:
    assumptions = from_arrays(("a", "b"), (0.05, 0.05), (0.1, 0.1), ((1.0, 1.0), (1.0, 1.0)))

    assert assumptions.correlation == ((1.0, 1.0), (1.0, 1.0))


def test_file_with_missing_figures_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "assumptions.yaml"
    path.write_text("asset_classes:\n  stocks:\n    expected_return: 0.06\n", encoding="utf-8")

    with pytest.raises(ValidationProblem) as caught:
        load_assumptions(path)

    assert caught.value.errors == {"assumptions.asset_classes.stocks.volatility": ["is required"]}


def test_as_dict_round_trips_through_overrides(default_assumptions: Assumptions) -> None:
    assert apply_overrides(default_assumptions, default_assumptions.as_dict()) == default_assumptions
