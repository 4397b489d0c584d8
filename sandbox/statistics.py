"""The platform's statistics API for the SpareBank 1 sandbox: ``GET /api/statistics``.

    GET /api/statistics?model=JournalEntryLine&select=Account.AccountNumber as AccountNumber,
        VatType.VatCode as VatCode,sum(Amount) as Amount&expand=Account,VatType
        &filter=FinancialDate ge '2026-11-01' and FinancialDate le '2026-11-30'&wrap=false

Answers as the platform does (domain brief, "Reading back"): ``wrap=false`` gives the rows
as a plain list, otherwise ``{"Success": true, "Data": [...]}`` (and a query that fails
answers 200 with ``Success: false``); every column under its alias (``X as Y``); with an
aggregate (``sum``, ``count``, ``min``, ``max``) the rows are grouped by the other
columns; without one they are distinct. ``expand`` joins a related record by its ``…ID``
field (``Account``, ``SubAccount``, ``VatType``, ``CurrencyCode``, ``JournalEntry``,
``Customer``, ``Project``); ``Period`` is the month of ``FinancialDate`` (``No``,
``AccountYear``). ``filter`` and ``orderby`` take dotted paths through what is expanded;
``top`` and ``skip`` page the rows.
"""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from flask import Flask, jsonify, request

from .query import QueryError, get_path, parse_filter
from .sb1_schema import ROUTES

# a join's name -> (the field holding its ID, the route it is read from)
JOINS = {"Account": ("AccountID", "accounts"), "SubAccount": ("SubAccountID", "accounts"),
         "VatType": ("VatTypeID", "vattypes"), "CurrencyCode": ("CurrencyCodeID", "currencycodes"),
         "JournalEntry": ("JournalEntryID", "journalentries"), "Customer": ("CustomerID", "customers"),
         "Project": ("ProjectID", "projects")}
_COLUMN = re.compile(r"^\s*(?:(sum|count|min|max)\((.+)\)|([\w.]+))\s+as\s+(\w+)\s*$", re.I)
STATISTICS_TYPE = "Statistics"      # not in the schema: any dotted path is accepted as written
DEFAULT_TOP = 10000


class StatisticsError(ValueError):
    pass


def _columns(select: str) -> list[tuple[str | None, tuple[str, ...], str]]:
    """(aggregate or None, path, alias) per column; a column without an alias is refused."""
    columns = []
    for part in (select or "").split(","):
        match = _COLUMN.match(part)
        if not match:
            raise StatisticsError(f"cannot read the column {part.strip()!r} (write 'X as Alias')")
        aggregate, inner, plain, alias = match.groups()
        columns.append((aggregate.lower() if aggregate else None, tuple((inner or plain).strip().split(".")), alias))
    return columns


def _joined(company, doc: dict, joins: list[str]) -> dict:
    row = dict(doc)
    for name in joins:
        if name == "Period":
            when = str(doc.get("FinancialDate") or "")
            row["Period"] = {"No": int(when[5:7]), "AccountYear": int(when[:4])} if len(when) >= 7 else None
        elif name in JOINS:
            field, route = JOINS[name]
            row[name] = company.tables[route].get(doc.get(field))
        else:
            raise StatisticsError(f"cannot expand {name!r}")
    return row


def _number(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


def statistics(store, company_key: str, args) -> list[dict[str, Any]]:
    params = {k.lower(): v for k, v in args.items()}
    model = params.get("model") or ""
    route = next((r for r, t in ROUTES.items() if t.lower() == model.lower()), None)
    if route is None:
        raise StatisticsError(f"unknown model {model!r}")
    columns = _columns(params.get("select", ""))
    joins = [j.strip() for j in (params.get("expand") or "").split(",") if j.strip()]
    try:
        predicate = parse_filter(params["filter"], store.schema, STATISTICS_TYPE) if params.get("filter") else None
    except QueryError as exc:
        raise StatisticsError(str(exc)) from None
    with store.lock:
        company = store._company(company_key)
        docs = [_joined(company, d, joins) for _, d in sorted(company.tables[route].items())]
    docs = [d for d in docs if predicate is None or predicate(d)]
    for term in reversed([t.strip() for t in (params.get("orderby") or "").split(",") if t.strip()]):
        path, _, direction = term.partition(" ")
        docs.sort(key=lambda d: (get_path(d, tuple(path.split("."))) is None, str(get_path(d, tuple(path.split("."))))),
                  reverse=direction.strip().lower() == "desc")
    grouped: dict[tuple, dict[str, Any]] = {}
    for doc in docs:
        key = tuple(get_path(doc, path) for aggregate, path, _ in columns if aggregate is None)
        row = grouped.get(key)
        if row is None:
            row = grouped[key] = {alias: (get_path(doc, path) if aggregate is None else
                                          Decimal(0) if aggregate in ("sum", "count") else None)
                                  for aggregate, path, alias in columns}
        for aggregate, path, alias in columns:
            value = get_path(doc, path)
            if aggregate == "sum":
                row[alias] += _number(value)
            elif aggregate == "count":
                row[alias] += value is not None
            elif aggregate in ("min", "max") and value is not None:
                row[alias] = value if row[alias] is None else (min if aggregate == "min" else max)(row[alias], value)
    rows = list(grouped.values())
    skip, top = int(params.get("skip") or 0), int(params.get("top") or DEFAULT_TOP)
    return rows[skip:skip + top]


def install_statistics(app: Flask, store) -> None:
    """Add ``GET /api/statistics`` to the sandbox's app (same token and CompanyKey as ``/api/biz``)."""
    @app.get("/api/statistics")
    def statistics_route():
        store.count_request("GET", "statistics")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        company_key = request.headers.get("CompanyKey", "").strip()
        if scheme.lower() != "bearer" or store.check_token(token.strip()) is None:
            return jsonify({"Message": "Unauthorized"}), 401
        if store.company(company_key) is None:
            return jsonify({"Message": "Missing or unknown CompanyKey"}), 401
        wrap = request.args.get("wrap", "true").lower() != "false"
        try:
            rows = statistics(store, company_key, request.args)
        except (StatisticsError, ValueError) as exc:
            if wrap:
                return jsonify({"Success": False, "Message": str(exc), "Data": []})
            return jsonify({"Message": str(exc)}), 400
        return jsonify({"Success": True, "Data": rows} if wrap else rows)
