"""Fetching one row by its key, with the 404 of API.md when there is none."""

from __future__ import annotations

from typing import Any, TypeVar

from django.db.models import Model, QuerySet

from apps.common.errors import NotFound

ModelT = TypeVar("ModelT", bound=Model)


def one_or_not_found(queryset: QuerySet[ModelT], message: str, **lookup: Any) -> ModelT:
    """The row of `queryset` matching `lookup`, or `NotFound(message)`.

    Put the tenant in `lookup` (or the queryset): another tenant's row is then not found either."""
    try:
        return queryset.get(**lookup)
    except queryset.model.DoesNotExist as exc:
        raise NotFound(message) from exc
