"""Where risk gets the order book from without importing the orders app (which sits above it).

The orders app registers its book source when it starts (`register_book_source`); risk calls it
for the status page and the exposure upkeep. Placing hands its own source to `pretrade_evaluate`.
Without a registered source the book is empty, and the status says so.
"""

from __future__ import annotations

from apps.risk.services.pretrade import Book, BookProvider, BookQuery

_source: list[BookProvider] = []


def register_book_source(source: BookProvider) -> None:
    """Install the provider of open orders and submissions (called once, by the orders app)."""
    _source[:] = [source]


def book_for(query: BookQuery) -> tuple[Book, bool]:
    """The book for `query`, and whether a real source answered."""
    if not _source:
        return Book(open_orders=(), submissions=()), False
    return _source[0](query), True
