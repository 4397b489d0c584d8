"""The platform's ``filter`` language, as the client writes it: literals, and many values in
few filters (``Number eq 1 or Number eq 2 ...``) that keep the URL short enough."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote_plus

# How long one filter of many values may be, URL-encoded (assumed: IIS refuses a query
# string over 2,048 characters by default, and the rest of the URL needs room too).
FILTER_BUDGET = 1600


def quote(value: Any) -> str:
    """A literal for the platform's ``filter`` language."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def unquote(literal: str) -> str:
    """The value of a literal ``quote`` made, as text (the platform's rows give it back so)."""
    if literal.startswith("'"):
        return literal[1:-1].replace("''", "'")
    return literal


def chunks(terms: list[str], budget: int) -> list[list[str]]:
    """Terms joined by `` or `` into filters of at most ``budget`` URL-encoded characters."""
    chunks: list[list[str]] = []
    size = 0
    for term in terms:
        cost = len(quote_plus(term + " or "))
        if chunks and size + cost <= budget:
            chunks[-1].append(term)
            size += cost
        else:
            chunks.append([term])
            size = cost
    return chunks
