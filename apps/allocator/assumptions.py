"""Capital-market assumptions: expected return, volatility and correlations per asset class.

Defaults live in ``config/allocator/assumptions.yaml``; a tenant may override single figures
(`apply_overrides`). Whatever the source, the result is validated the same way: volatilities
are >= 0, and the correlation matrix is symmetric, has a unit diagonal, entries in [-1, 1] and
is positive semi-definite (otherwise no joint distribution has those correlations and the
simulation could not draw from it).

Override format (the same shape as the YAML file, every member optional)::

    {"asset_classes": {"us_equity": {"expected_return": 0.065, "volatility": 0.17}},
     "correlations": {"us_equity": {"bonds": 0.0}}}

A correlation given as ``a: {b: x}`` sets both (a, b) and (b, a); giving (b, a) too with another
value is refused as asymmetric. Field errors are keyed ``assumptions.<path>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml  # type: ignore[import-untyped]
from numpy.typing import NDArray

from apps.allocator.household import ValidationProblem

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "config" / "allocator" / "assumptions.yaml"

MIN_RETURN, MAX_RETURN = -0.5, 0.5
MAX_VOLATILITY = 1.0
# Eigenvalues of a PSD matrix computed in floating point can come out at -1e-16; anything above
# this tolerance below zero is a genuinely inconsistent matrix.
PSD_TOLERANCE = 1e-10


@dataclass(frozen=True)
class Assumptions:
    """Per-class annual nominal assumptions, in the order of `names` (hashable, so cacheable)."""

    names: tuple[str, ...]
    labels: tuple[str, ...]
    expected_returns: tuple[float, ...]
    volatilities: tuple[float, ...]
    correlation: tuple[tuple[float, ...], ...]
    version: str = ""

    @property
    def n_classes(self) -> int:
        return len(self.names)

    def correlation_matrix(self) -> NDArray[np.float64]:
        return np.array(self.correlation, dtype=np.float64)

    def as_dict(self) -> dict[str, Any]:
        """The assumptions in the override/YAML shape (JSON-ready), e.g. to store with a job."""
        return {
            "version": self.version,
            "asset_classes": {
                name: {"label": label, "expected_return": mean, "volatility": vol}
                for name, label, mean, vol in zip(
                    self.names, self.labels, self.expected_returns, self.volatilities, strict=True
                )
            },
            "correlations": {
                a: {b: self.correlation[i][j] for j, b in enumerate(self.names) if j > i}
                for i, a in enumerate(self.names)
                if i < len(self.names) - 1
            },
        }


def _number(value: Any, path: str, errors: dict[str, list[str]], *, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.setdefault(path, []).append("must be a number")
        return None
    number = float(value)
    if not low <= number <= high:  # also refuses NaN, which fails every comparison
        errors.setdefault(path, []).append(f"must be between {low:g} and {high:g}")
        return None
    return number


def _build(
    base: Assumptions | None, data: Mapping[str, Any], prefix: str, errors: dict[str, list[str]]
) -> Assumptions | None:
    """Merge `data` over `base` (or build from scratch when `base` is None) and validate."""
    for key in sorted(set(data) - {"asset_classes", "correlations", "version"}, key=str):
        errors.setdefault(f"{prefix}.{key}", []).append("is not a known field")
    classes = data.get("asset_classes") or {}
    if not isinstance(classes, Mapping):
        errors.setdefault(f"{prefix}.asset_classes", []).append("must be an object")
        return None
    names = list(base.names) if base else [str(name) for name in classes]
    if not names:
        errors.setdefault(f"{prefix}.asset_classes", []).append("must list at least one asset class")
        return None
    labels = list(base.labels) if base else [str(name) for name in names]
    means = list(base.expected_returns) if base else [0.0] * len(names)
    vols = list(base.volatilities) if base else [0.0] * len(names)
    for name, figures in classes.items():
        path = f"{prefix}.asset_classes.{name}"
        if name not in names:
            errors.setdefault(path, []).append(f"is not an asset class (known: {', '.join(names)})")
            continue
        if not isinstance(figures, Mapping):
            errors.setdefault(path, []).append("must be an object")
            continue
        index = names.index(name)
        for key in sorted(set(figures) - {"label", "expected_return", "volatility"}, key=str):
            errors.setdefault(f"{path}.{key}", []).append("is not a known field")
        if "label" in figures:
            labels[index] = str(figures["label"])
        for key, target, low, high in (
            ("expected_return", means, MIN_RETURN, MAX_RETURN),
            ("volatility", vols, 0.0, MAX_VOLATILITY),
        ):
            if key in figures:
                number = _number(figures[key], f"{path}.{key}", errors, low=low, high=high)
                if number is not None:
                    target[index] = number
            elif base is None:
                errors.setdefault(f"{path}.{key}", []).append("is required")

    matrix = base.correlation_matrix() if base else np.eye(len(names))
    given: dict[tuple[int, int], float] = {}
    correlations = data.get("correlations") or {}
    if not isinstance(correlations, Mapping):
        errors.setdefault(f"{prefix}.correlations", []).append("must be an object")
        correlations = {}
    for a, row in correlations.items():
        if a not in names:
            errors.setdefault(f"{prefix}.correlations.{a}", []).append("is not an asset class")
            continue
        if not isinstance(row, Mapping):
            errors.setdefault(f"{prefix}.correlations.{a}", []).append("must be an object")
            continue
        for b, value in row.items():
            path = f"{prefix}.correlations.{a}.{b}"
            if b not in names:
                errors.setdefault(path, []).append("is not an asset class")
                continue
            rho = _number(value, path, errors, low=-1.0, high=1.0)
            if rho is None:
                continue
            i, j = names.index(a), names.index(b)
            if i == j and rho != 1.0:
                errors.setdefault(path, []).append("must be 1 (the diagonal of a correlation matrix)")
                continue
            if (j, i) in given and given[(j, i)] != rho:
                errors.setdefault(path, []).append(
                    f"must equal correlations.{b}.{a} ({given[(j, i)]:g}); the matrix must be symmetric"
                )
                continue
            given[(i, j)] = rho
            matrix[i, j] = matrix[j, i] = rho
    if errors:
        return None
    return _validated(
        Assumptions(
            names=tuple(names),
            labels=tuple(labels),
            expected_returns=tuple(means),
            volatilities=tuple(vols),
            correlation=tuple(tuple(float(x) for x in row) for row in matrix),
            version=str(data.get("version", base.version if base else "")),
        ),
        prefix,
    )


def _validated(assumptions: Assumptions, prefix: str) -> Assumptions:
    """Check the whole set (the per-entry checks cannot see positive semi-definiteness)."""
    errors: dict[str, list[str]] = {}
    n = assumptions.n_classes
    if not (len(assumptions.labels) == len(assumptions.expected_returns) == len(assumptions.volatilities) == n) or any(
        len(row) != n for row in assumptions.correlation
    ):
        raise ValidationProblem({prefix: [f"every figure must be given for each of the {n} asset classes"]})
    matrix = assumptions.correlation_matrix()
    if not np.allclose(matrix, matrix.T, rtol=0, atol=0):
        errors.setdefault(f"{prefix}.correlations", []).append("must be symmetric")
    if not np.all(np.diag(matrix) == 1.0):
        errors.setdefault(f"{prefix}.correlations", []).append("must have 1 on the diagonal")
    if not np.all((matrix >= -1.0) & (matrix <= 1.0)):
        errors.setdefault(f"{prefix}.correlations", []).append("entries must be within [-1, 1]")
    if not errors:
        smallest = float(np.linalg.eigvalsh(matrix).min())
        if smallest < -PSD_TOLERANCE:
            errors.setdefault(f"{prefix}.correlations", []).append(
                f"must be positive semi-definite (smallest eigenvalue {smallest:.4g})"
            )
    for name, vol in zip(assumptions.names, assumptions.volatilities, strict=True):
        if vol < 0:
            errors.setdefault(f"{prefix}.asset_classes.{name}.volatility", []).append("must be >= 0")
    if errors:
        raise ValidationProblem(errors)
    return assumptions


def load_assumptions(path: Path | str = DEFAULT_PATH) -> Assumptions:
    """Read and validate an assumptions file (the defaults unless `path` is given)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, Mapping):
        raise ValidationProblem({"assumptions": [f"{path} must hold a mapping"]})
    errors: dict[str, list[str]] = {}
    assumptions = _build(None, data, "assumptions", errors)
    if assumptions is None:
        raise ValidationProblem(errors)
    return assumptions


def apply_overrides(base: Assumptions, overrides: Mapping[str, Any] | None) -> Assumptions:
    """Return `base` with a tenant's overrides applied, validated as a whole."""
    if not overrides:
        return base
    if not isinstance(overrides, Mapping):
        raise ValidationProblem({"assumptions": ["must be an object"]})
    errors: dict[str, list[str]] = {}
    assumptions = _build(base, overrides, "assumptions", errors)
    if assumptions is None:
        raise ValidationProblem(errors)
    return assumptions


def from_arrays(
    names: tuple[str, ...],
    expected_returns: tuple[float, ...],
    volatilities: tuple[float, ...],
    correlation: tuple[tuple[float, ...], ...],
) -> Assumptions:
    """Build validated assumptions directly (tests, notebooks)."""
    return _validated(
        Assumptions(
            names=names,
            labels=names,
            expected_returns=expected_returns,
            volatilities=volatilities,
            correlation=correlation,
        ),
        "assumptions",
    )
