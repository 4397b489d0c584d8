"""The platform's ``filter`` language, as the client writes it: literals, and many values in
few filters (``Number eq 1 or Number eq 2 ...``) that keep the URL short enough."""
from __future__ import annotations

from typing import Any, Callable, Iterable
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
    out: list[list[str]] = []
    size = 0
    for term in terms:
        cost = len(quote_plus(term + " or "))
        if out and size + cost <= budget:
            out[-1].append(term)
            size += cost
        else:
            out.append([term])
            size = cost
    return out


Query = Callable[..., list[dict[str, Any]]]    # SB1Client.query: (route, filter=, expand=, top=) -> rows


def find_many(query: Query, route: str, field_name: str, values: Iterable[Any], *, expand: str | None = None,
              budget: int = FILTER_BUDGET) -> dict[str, dict[str, Any] | None]:
    """The books' one record for each of ``values`` (as text), or None when the books have
    none; a value held by more than one record, or not known (see ``rows_for``), is left
    out: ask for it alone. Close whole numbers (a page of customers) take one call for the
    range they span; other values as few ``or`` filters as the URL's length allows."""
    values = list(dict.fromkeys(values))
    ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    if len(values) > 1 and len(ints) == len(values) and max(ints) - min(ints) < 2 * len(ints):
        rows = rows_between(query, route, field_name, min(ints), max(ints), expand=expand)
        if rows is not None:
            return {str(v): found[0] if found else None for v in ints if len(found := rows.get(str(v), [])) <= 1}
    rows = rows_for(query, route, field_name, values, expand=expand, budget=budget)
    return {value: found[0] if found else None for value, found in rows.items() if len(found) <= 1}


def _by_value(rows: list[dict[str, Any]], field_name: str) -> dict[str, list[dict[str, Any]]]:
    by_value: dict[str, list] = {}
    for row in rows:        # the platform ignores a filter it does not understand: each row is checked
        by_value.setdefault(str(row.get(field_name)), []).append(row)
    return by_value


def rows_between(query: Query, route: str, field_name: str, low: int, high: int, *,
                 expand: str | None = None) -> dict[str, list[dict[str, Any]]] | None:
    """The books' records whose whole-number ``field_name`` is from ``low`` to ``high``, by
    value (as text); None when the answer may not hold them all (a full page)."""
    top = high - low + 11
    rows = query(route, filter=f"{field_name} ge {int(low)} and {field_name} le {int(high)}", expand=expand, top=top)
    return None if len(rows) >= top else _by_value(rows, field_name)


def rows_for(query: Query, route: str, field_name: str, values: Iterable[Any], *, expand: str | None = None,
             per_value: int = 1, budget: int = FILTER_BUDGET) -> dict[str, list[dict[str, Any]]]:
    """The books' records whose ``field_name`` is one of ``values``, in as few calls as the
    URL's length allows (``a eq 1 or a eq 2 ...``): each value (as text) → its records.
    A value is left out when the answer may not hold all of its records: the answer was a
    full page (``per_value``: how many records a value usually has; or a filter the
    platform did not understand, answered unfiltered)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for chunk in chunks([f"{field_name} eq {quote(v)}" for v in dict.fromkeys(values)], budget):
        top = 2 * per_value * len(chunk) + 10
        rows = query(route, filter=" or ".join(chunk), expand=expand, top=top)
        if len(rows) >= top:
            continue
        by_value = _by_value(rows, field_name)
        for term in chunk:
            value = unquote(term.split(" eq ", 1)[1])
            found[value] = by_value.get(value, [])
    return found
