"""Reading both sides of a month in bulk: calls grow with pages, never with records.

* The books' vouchers of the month: the platform's statistics API (domain brief, "Reading
  back"), the voucher lines summed per journal entry, invoice number, account and VAT code,
  ``STATISTICS_PAGE`` rows a call (``top``/``skip``): a sales invoice is 3 to 9 rows, so one
  call covers at least 100 invoices.
* The books' customers and projects: their routes in pages of ``PAGE_SIZE`` (``top``/``skip``).
* Moment: its list pages (``clients.moment``). Moment's invoice list has no date filter, only
  ``lastModifiedDateFrom``: finalizing an invoice modifies it, so every invoice of the month
  (by invoice date, the voucher's date) was modified on or after the month's first day; the
  list is read from then (``MODIFIED_SLACK`` earlier) and kept to finalized invoices dated in
  the month.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterator

from clients.http import send
from clients.sb1 import CURRENCIES_ROUTE, SB1Client, authorized
from errors import TransientError
from schemas.vouchers import ORE

from .compare import BookRow

STATISTICS_PATH = "/api/statistics"     # beside /api/biz on the same host (domain brief)
STATISTICS_PAGE = 1000
PAGE_SIZE = 1000                        # open-source readers of the platform page with top=1000
# the columns of a month's voucher rows (every column aliased; sum() groups by the others)
STATISTICS_SELECT = ",".join([
    "JournalEntryID as JournalEntryID", "InvoiceNumber as InvoiceNumber",
    "Account.AccountNumber as AccountNumber", "VatType.VatCode as VatCode", "VatType.VatPercent as VatPercent",
    "CurrencyCode.Code as CurrencyCode", "sum(Amount) as Amount", "sum(AmountCurrency) as AmountCurrency"])
STATISTICS_EXPAND = "Account,VatType,CurrencyCode"
MODIFIED_SLACK = timedelta(days=1)      # clocks and time zones: read Moment's list a day earlier


def _host(sb1: SB1Client) -> str:
    return sb1.base[: -len("/api/biz")] if sb1.base.endswith("/api/biz") else sb1.base


def statistics(sb1: SB1Client, params: dict[str, Any]) -> list[dict[str, Any]]:
    """One call of ``GET {host}/api/statistics`` (``wrap=false``), with the client's token,
    company key and rate limit; a refused token is fetched anew once, as the client does."""
    url = _host(sb1) + STATISTICS_PATH

    def call(token: str):
        headers = {"Authorization": f"Bearer {token}", "CompanyKey": sb1.company_key, "Accept": "application/json"}
        return send(sb1.http, "GET", url, service=sb1.service, timeouts=sb1.timeouts, headers=headers,
                    params={**params, "wrap": "false"})
    body = authorized(sb1.tokens, sb1.limits, call).json()
    if isinstance(body, dict) and body.get("Success") is False:
        raise TransientError(f"{sb1.service} statistics: the query failed", service=sb1.service)
    rows = body.get("Data") if isinstance(body, dict) else body
    if not isinstance(rows, list):
        raise TransientError(f"{sb1.service} statistics: the answer cannot be read", service=sb1.service)
    return rows


def _decimal(value: Any) -> Decimal | None:
    """An amount as the books sent it (a JSON number), to the øre."""
    return None if value in (None, "") else Decimal(str(value)).quantize(ORE)


def month_rows(sb1: SB1Client, first: date, last: date) -> tuple[list[BookRow], int]:
    """The month's voucher rows, and the calls it took."""
    rows: list[BookRow] = []
    calls, skip = 0, 0
    while True:
        page = statistics(sb1, {"model": "JournalEntryLine", "select": STATISTICS_SELECT,
                                "expand": STATISTICS_EXPAND, "orderby": "JournalEntryID",
                                "filter": f"FinancialDate ge '{first.isoformat()}' and "
                                          f"FinancialDate le '{last.isoformat()}'",
                                "top": STATISTICS_PAGE, "skip": skip})
        calls += 1
        for row in page:
            if not isinstance(row, dict) or row.get("JournalEntryID") is None:
                continue
            number = row.get("InvoiceNumber")
            account = row.get("AccountNumber")
            code = row.get("VatCode")
            rows.append(BookRow(
                entry=int(row["JournalEntryID"]), invoice_number=None if number in (None, "") else str(number),
                account=int(account) if account not in (None, "") else None,
                vat_code=None if code in (None, "") else str(code), vat_percent=_decimal(row.get("VatPercent")),
                amount=_decimal(row.get("Amount")) or Decimal(0), currency=row.get("CurrencyCode") or None,
                amount_currency=_decimal(row.get("AmountCurrency"))))
        if len(page) < STATISTICS_PAGE:
            return rows, calls
        skip += STATISTICS_PAGE


def pages(sb1: SB1Client, route: str, *, expand: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """Every record of a route, a page of ``PAGE_SIZE`` a call, and the calls it took."""
    out: list[dict[str, Any]] = []
    calls, skip = 0, 0
    while True:
        params = {"top": PAGE_SIZE, "skip": skip, "orderby": "ID", **({"expand": expand} if expand else {})}
        body = sb1.request("GET", route, params=params).json()
        calls += 1
        page = body if isinstance(body, list) else []
        out += [row for row in page if isinstance(row, dict)]
        if len(page) < PAGE_SIZE:
            return out, calls
        skip += PAGE_SIZE


def currency_ids(sb1: SB1Client) -> tuple[dict[str, int], int]:
    """Currency code -> the platform's ID (one call)."""
    rows = sb1.query(CURRENCIES_ROUTE, select="ID,Code", top=PAGE_SIZE)
    return {str(r.get("Code")): int(r["ID"]) for r in rows if r.get("Code") and r.get("ID")}, 1


def moment_list(moment, entity: str, modified_from: datetime | None = None) -> Iterator[dict[str, Any]]:
    for _, content in moment.pages(entity, modified_from=modified_from):
        yield from (raw for raw in content if isinstance(raw, dict))


def month_start(first: date) -> datetime:
    return datetime.combine(first, time(0), timezone.utc) - MODIFIED_SLACK
