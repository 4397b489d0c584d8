"""The comparison itself, pure: Moment's records of a month against what the books hold.

No I/O here (``worker.reconcile.books`` reads, ``worker.reconcile.run`` repairs and tells):
every function takes what was read and returns ``Finding``s, so the rules are table-tested.

Names and values: a finding names its record by a valid number ("invoice 1001", "customer
100001") or by its Moment id, and shows a value only when it is a number, an amount, a code
or a date (``safe_value``); any other text by its shape ("text, 12 characters"). The
company's email (``worker.notices.reconcile``) is the only text with the values themselves.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Callable, Iterable

from errors import IntegrationError
from schemas.base import covers
from schemas.datatypes import DataType
from schemas.moment import MomentInvoice
from schemas.text import shape
from schemas.vouchers import ORE, VatRate, platform_vat, voucher_body

# what a finding says happened, and whether it needs a person
MISSING, DIFFERING, BY_HAND, TWICE, ROUNDING = "missing", "differing", "made-by-hand", "twice", "rounding"
REPAIRED, POSTED = "repaired", "posted"         # set by the run once the sync is queued
NEEDS_PERSON = {DIFFERING, BY_HAND, TWICE}
KINDS = ("invoices", "revenue", "vat", "customers", "projects")
_SAFE = re.compile(r"^-?[0-9]{1,20}(\.[0-9]{1,4})?$|^[0-9]{4}-[0-9]{2}-[0-9]{2}$|^[A-Z]{3}$")


def safe_value(value: Any) -> Any:
    """A value as our own words may show it: numbers, amounts, dates, currency codes as they
    are; None as None; anything else by its shape (it may be a name or an email address)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, Decimal, float)):
        return str(value)
    text = str(value)
    return text if _SAFE.match(text) else shape(text)


@dataclass
class Finding:
    kind: str                   # one of KINDS
    record: str                 # "invoice 1001", "customer 100001", "account 3000, VAT code 3"
    field: str                  # "voucher", "receivable", "CustomerNumber", "revenue", "output VAT", ...
    moment: Any                 # Moment's value (safe_value)
    books: Any                  # the books' value (safe_value)
    status: str                 # MISSING, DIFFERING, BY_HAND, TWICE, ROUNDING; REPAIRED/POSTED after the run
    moment_id: int | None = None
    note: str = ""
    person: dict = field(default_factory=dict, repr=False)  # the company's email only: never stored

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("person")
        return out


@dataclass
class Checked:
    """How many records of a kind were compared, and how many were equal."""
    checked: int = 0
    equal: int = 0


# --- invoices ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BookRow:
    """One row of the books' month: the sum of a voucher's lines per account, VAT code and
    invoice number (``worker.reconcile.books.STATISTICS_SELECT``)."""
    entry: int
    invoice_number: str | None
    account: int | None
    vat_code: str | None
    vat_percent: Decimal | None
    amount: Decimal
    currency: str | None = None
    amount_currency: Decimal | None = None


@dataclass
class Expected:
    """One invoice as its voucher should be booked (``schemas.vouchers.voucher_body``)."""
    gross: Decimal                                  # the receivable, in the invoice's currency
    currency: str                                   # NOK or the invoice's currency
    revenue: dict[tuple[int, str], Decimal]         # Moment's net per (revenue account, VAT code)
    revenue_booked: dict[tuple[int, str], Decimal]  # what the platform books there (its VAT rounding)
    vat: dict[str, Decimal]                         # Moment's VAT per code
    vat_booked: dict[str, Decimal]                  # what the platform books per code


def expected(invoice: MomentInvoice, revenue_accounts: dict[str, int], percents: dict[str, Decimal]) -> Expected:
    """What the books should hold for ``invoice``, worked out the way the product posts it."""
    codes = sorted({ln.vat_code for ln in invoice.lines})
    vat = {code: VatRate(i + 1, percents.get(code, Decimal(0))) for i, code in enumerate(codes)}
    accounts = {t: revenue_accounts.get(t, 0) for t in {ln.product_type for ln in invoice.lines}}
    voucher = voucher_body(invoice, receivable_id=0, revenue_ids=accounts, vat=vat, project_id=None, guid="")
    revenue: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    booked: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    vat_moment: dict[str, Decimal] = defaultdict(Decimal)
    vat_booked: dict[str, Decimal] = defaultdict(Decimal)
    id_to_code = {rate.id: code for code, rate in vat.items()}
    for line in voucher.body["DraftLines"][1:]:
        gross, code = -Decimal(str(line["Amount"])), id_to_code.get(line.get("VatTypeID"), "")
        percent = vat[code].percent if code in vat else Decimal(0)
        on_vat = platform_vat(gross, percent) if percent else Decimal(0)
        booked[(line["AccountID"], code)] += gross - on_vat
        vat_booked[code] += on_vat
    for check in voucher.vat:
        vat_moment[check.code] = check.moment
    for line in invoice.lines:
        revenue[(accounts[line.product_type], line.vat_code)] += line.amount_excl_vat.quantize(ORE)
    return Expected(voucher.gross, (invoice.currency_code or "NOK").upper(), dict(revenue), dict(booked),
                    {c: v for c, v in vat_moment.items() if v or vat_booked.get(c)},
                    {c: v for c, v in vat_booked.items() if v or vat_moment.get(c)})


def invoice_name(number: Any) -> str:
    return f"invoice {number}"


def compare_invoices(invoices: Iterable[MomentInvoice], rows: Iterable[BookRow], *, revenue_accounts: dict[str, int],
                     percents: dict[str, Decimal], noted: Callable[[int], str | None] = lambda _: None,
                     ) -> tuple[list[Finding], dict[str, Checked]]:
    """Every invoice has exactly one voucher whose receivable is Moment's gross; per month the
    revenue per (account, VAT code) and the output VAT per code of the vouchers in order equal
    Moment's (an øre the platform's rounding made, as ``check_vat`` noted it, is ROUNDING).

    The month's totals leave out the invoices already reported (missing, twice, differing),
    so one changed voucher is one finding, not three. Invoices in another currency than NOK
    are compared in their currency per invoice (the amount in NOK depends on the day's rate)
    and left out of the month's totals in NOK."""
    rows = list(rows)
    entries: dict[str, set[int]] = defaultdict(set)
    receivable: dict[int, Decimal] = defaultdict(Decimal)
    receivable_currency: dict[int, Decimal | None] = {}
    by_entry: dict[int, list[BookRow]] = defaultdict(list)
    for row in rows:
        by_entry[row.entry].append(row)
        if row.invoice_number not in (None, ""):
            entries[str(row.invoice_number)].add(row.entry)
            receivable[row.entry] += row.amount
            if row.amount_currency is not None:
                receivable_currency[row.entry] = (receivable_currency.get(row.entry) or Decimal(0)) + row.amount_currency
    revenue_numbers = set(revenue_accounts.values())
    findings: list[Finding] = []
    counts = {k: Checked() for k in ("invoices", "revenue", "vat")}
    month_moment: dict[tuple[int, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    month_vat: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    in_order: list[int] = []
    notes: list[int] = []
    for invoice in invoices:
        counts["invoices"].checked += 1
        name, number = invoice_name(invoice.invoice_number), str(invoice.invoice_number)
        try:
            want = expected(invoice, revenue_accounts, percents)
        except IntegrationError:          # the product refuses it too: its dead letter says why
            want = None
        found = sorted(entries.get(number, ()))
        gross = want.gross if want else None
        if not found:
            findings.append(Finding("invoices", name, "voucher", safe_value(gross), None, MISSING, invoice.id))
            continue
        if len(found) > 1:
            findings.append(Finding("invoices", name, "vouchers", 1, len(found), TWICE, invoice.id,
                                    note="journal entries " + ", ".join(map(str, found))))
            continue
        entry = found[0]
        foreign = want is not None and want.currency != "NOK"
        books = receivable_currency.get(entry) if foreign else receivable[entry]
        if want is None or books is None or books != gross:
            findings.append(Finding("invoices", name, "receivable" + (f" ({want.currency})" if foreign else ""),
                                    safe_value(gross), safe_value(books), DIFFERING, invoice.id,
                                    note=f"journal entry {entry}"))
            continue
        counts["invoices"].equal += 1
        if foreign:
            continue
        in_order.append(entry)
        if noted(invoice.id):
            notes.append(invoice.invoice_number)
        for key, net in want.revenue.items():
            month_moment[key][0] += net
        for key, net in want.revenue_booked.items():
            month_moment[key][1] += net
        for code, amount in want.vat.items():
            month_vat[code][0] += amount
        for code, amount in want.vat_booked.items():
            month_vat[code][1] += amount
    books_revenue: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    books_vat: dict[str, Decimal] = defaultdict(Decimal)
    for entry in in_order:
        for row in by_entry[entry]:
            if row.invoice_number not in (None, ""):
                continue
            if row.account in revenue_numbers:
                books_revenue[(row.account, row.vat_code or "")] += -row.amount
            elif row.vat_code and row.vat_percent:
                books_vat[row.vat_code] += -row.amount
    noted_text = ("noted when posted: " + ", ".join(invoice_name(n) for n in sorted(notes))) if notes else ""
    for key in sorted(set(month_moment) | set(books_revenue), key=lambda k: (k[0], k[1])):
        moment, platform = month_moment[key] if key in month_moment else (Decimal(0), Decimal(0))
        findings += _total("revenue", f"account {key[0]}, VAT code {key[1] or '-'}", "revenue", moment, platform,
                           books_revenue.get(key, Decimal(0)), counts["revenue"], noted_text)
    for code in sorted(set(month_vat) | set(books_vat)):
        moment, platform = month_vat[code] if code in month_vat else (Decimal(0), Decimal(0))
        findings += _total("vat", f"VAT code {code}", "output VAT", moment, platform, books_vat.get(code, Decimal(0)),
                           counts["vat"], noted_text)
    return findings, counts


def _total(kind: str, record: str, field_name: str, moment: Decimal, platform: Decimal, books: Decimal,
           count: Checked, noted: str) -> list[Finding]:
    count.checked += 1
    if books == moment:
        count.equal += 1
        return []
    if books == platform:       # the platform's rounding per line, posted and noted as such
        count.equal += 1
        return [Finding(kind, record, field_name, str(moment), str(books), ROUNDING, note=noted)]
    return [Finding(kind, record, field_name, str(moment), str(books), DIFFERING,
                    note=f"the platform would book {platform}" if platform != moment else "")]


# --- customers and projects --------------------------------------------------------------

@dataclass(frozen=True)
class Wanted:
    """One Moment record as the books should hold it."""
    moment_id: int
    number: str                 # the number as the platform holds it (checked)
    body: Callable[[dict | None], dict]   # existing -> the body the product would write
    person: dict                # number and name as Moment has them: the company's email only


def differing_fields(theirs: Any, ours: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(field path, ours, theirs) where the body ``ours`` says something the record
    ``theirs`` does not (``schemas.base.covers``, field by field)."""
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            theirs = {}
        out: list[tuple[str, Any, Any]] = []
        for key, value in ours.items():
            if key in ("_createguid", "ID", "Deleted"):
                if key == "Deleted" and value and theirs:
                    out.append((path.rstrip(".") or key, None, "(set)"))
                continue
            out += differing_fields(theirs.get(key), value, f"{path}{key}.")
        return out
    if covers(theirs, ours):
        return []
    return [(path.rstrip("."), ours, theirs)]


def compare_records(dt: DataType, wanted: Iterable[Wanted], books: Iterable[dict], *,
                    known_ids: dict[int, int]) -> tuple[list[Finding], Checked]:
    """Every Moment record is in the books under its number with the fields the product
    writes; a books record no Moment record owns is BY_HAND. ``known_ids``: Moment id ->
    the books' ID the product wrote (the state), so a number changed by hand in the books is
    one finding on that record (its number field), not a missing one and one made by hand."""
    noun, key_field = dt.noun, dt.key_field
    rows = [row for row in books if isinstance(row, dict)]
    by_number = {str(row.get(key_field)): row for row in rows}
    by_id = {row.get("ID"): row for row in rows}
    claimed: set[Any] = set()
    findings: list[Finding] = []
    count = Checked()
    wanted = list(wanted)
    numbers = {w.number for w in wanted}
    for want in wanted:
        count.checked += 1
        name = f"{noun} {want.number}"
        row = by_number.get(want.number)
        if row is None:
            row = by_id.get(known_ids.get(want.moment_id))
            if row is not None and str(row.get(key_field)) in numbers:
                row = None                          # that record is another Moment record's now
        if row is None:
            findings.append(Finding(dt.name, name, key_field, want.number, None, MISSING, want.moment_id,
                                    person=want.person))
            continue
        claimed.add(row.get("ID"))
        diffs = differing_fields(row, want.body(row))
        if not diffs:
            count.equal += 1
            continue
        for path, ours, theirs in diffs:
            findings.append(Finding(dt.name, name, path, safe_value(ours), safe_value(theirs), DIFFERING,
                                    want.moment_id, person={**want.person, "field": path, "books": theirs,
                                                            "moment": ours}))
    for row in rows:
        if row.get("ID") not in claimed and str(row.get(key_field)) not in numbers:
            findings.append(Finding(dt.name, f"{noun} {safe_value(row.get(key_field))}", key_field, None,
                                    safe_value(row.get(key_field)), BY_HAND,
                                    person={"number": row.get(key_field), "name": _name(row)}))
    return findings, count


def _name(row: dict) -> str | None:
    info = row.get("Info") if isinstance(row.get("Info"), dict) else {}
    return info.get("Name") or row.get("Name")


def month_range(month: str) -> tuple[date, date]:
    """'2026-11' -> (2026-11-01, 2026-11-30)."""
    match = re.fullmatch(r"([0-9]{4})-([0-9]{2})", month or "")
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"a month is written YYYY-MM (2026-11), not {shape(month)}")
    year, mon = int(match.group(1)), int(match.group(2))
    first = date(year, mon, 1)
    after = date(year + (mon == 12), mon % 12 + 1, 1)
    return first, date.fromordinal(after.toordinal() - 1)
