"""The reconciliation's comparison, pure: table tests of what is equal, what is the platform's
rounding, what differs, and what the company's email says."""
from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest
from prometheus_client.core import GaugeMetricFamily

from schemas.datatypes import CUSTOMERS
from schemas.moment import MOMENT_INVOICE
from worker.notices.reconcile import email_text
from worker.ops.metrics import _reconcile_metrics
from worker.reconcile.compare import (
    BY_HAND,
    DIFFERING,
    MISSING,
    ROUNDING,
    TWICE,
    BookRow,
    Finding,
    Wanted,
    compare_invoices,
    compare_records,
    month_range,
    safe_value,
)
from worker.reconcile.run import Report, nightly_months

ACCOUNTS = {"HOURS": 3000, "PRODUCTS": 3100, "EXPENSES": 3200}
PERCENTS = {"3": Decimal(25), "31": Decimal(15), "5": Decimal(0)}


def invoice(number, *lines, currency="NOK", id_=None):
    return MOMENT_INVOICE.load({
        "id": id_ or number, "invoiceNumber": number, "status": "FINALIZED", "invoiceDate": "2026-11-10",
        "currencyCode": currency, "customer": {"id": 1, "customerNumber": "100001"},
        "lines": [{"amountExclVat": a, "vatCode": c, "productType": t} for a, c, t in lines]})


def booked(entry, number, *credits, receivable=None, currency=None):
    """The rows the platform books for a voucher: the receivable, and per credit (account,
    code, percent, gross) the net on the account and the VAT on 2700."""
    rows, total = [], Decimal(0)
    for account, code, percent, gross in credits:
        gross = Decimal(gross)
        vat = (gross * percent / (100 + percent)).quantize(Decimal("0.01")) if percent else Decimal(0)
        rows.append(BookRow(entry, None, account, code, Decimal(percent), -(gross - vat)))
        if vat:
            rows.append(BookRow(entry, None, 2700, code, Decimal(percent), -vat))
        total += gross
    rows.append(BookRow(entry, str(number), 1500, None, None, Decimal(receivable) if receivable else total,
                        currency, Decimal(receivable) if currency else None))
    return rows


def run(invoices, rows, **kw):
    findings, counts = compare_invoices(invoices, rows, revenue_accounts=ACCOUNTS, percents=PERCENTS, **kw)
    return [(f.kind, f.record, f.field, f.status, f.moment, f.books) for f in findings], counts


def test_invoices_in_order_are_equal():
    inv = invoice(1, ("1000.00", "3", "HOURS"), ("100.00", "31", "PRODUCTS"))
    found, counts = run([inv], booked(7, 1, (3000, "3", 25, "1250.00"), (3100, "31", 15, "115.00")))
    assert found == []
    assert (counts["invoices"].checked, counts["invoices"].equal) == (1, 1)
    assert counts["revenue"].equal == 2 and counts["vat"].equal == 2


@pytest.mark.parametrize("rows, expected", [
    ([], [("invoices", "invoice 1", "voucher", MISSING, "1250.00", None)]),
    (booked(7, 1, (3000, "3", 25, "1250.00")) + booked(8, 1, (3000, "3", 25, "1250.00")),
     [("invoices", "invoice 1", "vouchers", TWICE, 1, 2)]),
    (booked(7, 1, (3000, "3", 25, "1250.00"), receivable="1350.00"),
     [("invoices", "invoice 1", "receivable", DIFFERING, "1250.00", "1350.00")]),
])
def test_a_voucher_missing_twice_or_changed_is_one_finding(rows, expected):
    found, _ = run([invoice(1, ("1000.00", "3", "HOURS"))], rows)
    assert found == expected


def test_a_changed_revenue_line_shows_in_the_month():
    rows = booked(7, 1, (3000, "3", 25, "1250.00"))
    rows[0] = BookRow(7, None, 3000, "3", Decimal(25), Decimal("-900.00"))
    found, _ = run([invoice(1, ("1000.00", "3", "HOURS"))], rows)
    assert found == [("revenue", "account 3000, VAT code 3", "revenue", DIFFERING, "1000.00", "900.00")]


def test_the_platforms_rounding_is_shown_as_such():
    # Moment: 25 % of 0,10 = 0,03 (0,02 + 0,01 over two accounts); the platform: 0,01 + 0,01
    inv = invoice(5, ("0.05", "3", "HOURS"), ("0.05", "3", "PRODUCTS"))
    found, counts = run([inv], booked(9, 5, (3000, "3", 25, "0.07"), (3100, "3", 25, "0.06")),
                        noted=lambda i: "VAT code 3: ...")
    assert ("vat", "VAT code 3", "output VAT", ROUNDING, "0.03", "0.02") in found
    assert all(status == ROUNDING for _, _, _, status, _, _ in found)
    assert counts["invoices"].equal == 1


def test_a_credit_note_and_a_foreign_invoice():
    credit = invoice(2, ("-400.00", "3", "HOURS"))
    eur = invoice(3, ("100.00", "3", "HOURS"), currency="EUR")
    rows = booked(10, 2, (3000, "3", 25, "-500.00")) + booked(11, 3, (3000, "3", 25, "1437.50"), currency="EUR",
                                                              receivable="125.00")
    found, counts = run([credit, eur], rows)
    assert found == [] and counts["invoices"].equal == 2
    rows[-1] = BookRow(11, "3", 1500, None, None, Decimal("1437.50"), "EUR", Decimal("120.00"))
    found, _ = run([credit, eur], rows)
    assert found == [("invoices", "invoice 3", "receivable (EUR)", DIFFERING, "125.00", "120.00")]


def wanted(moment_id, number, name="Fjord AS"):
    def body(existing):
        return {"CustomerNumber": int(number), "Info": {"Name": name, "ID": (existing or {}).get("Info", {}).get("ID")}}
    return Wanted(moment_id, number, body, {"number": number, "name": name})


def books_customer(id_, number, name="Fjord AS"):
    return {"ID": id_, "CustomerNumber": number, "Info": {"ID": id_ + 1000, "Name": name}}


def test_customers_number_changed_missing_by_hand_and_field():
    rows = [books_customer(1, 100001), books_customer(2, 199002), books_customer(3, 200500, "Hånd AS"),
            books_customer(4, 100004, "Annet navn")]
    found, count = compare_records(CUSTOMERS, [wanted(11, "100001"), wanted(12, "100002"), wanted(13, "100003"),
                                               wanted(14, "100004")], rows, known_ids={12: 2})
    got = [(f.record, f.field, f.status, f.moment, f.books) for f in found]
    assert got == [("customer 100002", "CustomerNumber", DIFFERING, "100002", "199002"),
                   ("customer 100003", "CustomerNumber", MISSING, "100003", None),
                   ("customer 100004", "Info.Name", DIFFERING, "8 characters: letters and a space",
                    "10 characters: letters and a space"),
                   ("customer 200500", "CustomerNumber", BY_HAND, None, "200500")]
    assert (count.checked, count.equal) == (4, 1)
    # the values themselves only for the company's email
    assert found[2].person["books"] == "Annet navn" and "Annet navn" not in json.dumps(found[2].public())


@pytest.mark.parametrize("value, shown", [(Decimal("12.50"), "12.50"), (100001, "100001"), ("2026-11-01", "2026-11-01"),
                                          ("EUR", "EUR"), (None, None), ("Ola Nordmann", "12 characters: letters and a space")])
def test_safe_value(value, shown):
    assert safe_value(value) == shown


def test_months():
    assert month_range("2026-11") == (date(2026, 11, 1), date(2026, 11, 30))
    assert month_range("2026-12") == (date(2026, 12, 1), date(2026, 12, 31))
    with pytest.raises(ValueError, match="YYYY-MM"):
        month_range("11-2026")
    assert nightly_months(date(2026, 12, 10)) == ["2026-11", "2026-12"]
    assert nightly_months(date(2026, 12, 11)) == ["2026-12"]
    assert nightly_months(date(2027, 1, 3)) == ["2026-12", "2027-01"]


def test_email_in_norwegian_names_what_and_what_to_do():
    findings = [Finding("invoices", "invoice 5006", "receivable", "2615.00", "2715.00", DIFFERING, 1),
                Finding("customers", "customer 200500", "CustomerNumber", None, "200500", BY_HAND,
                        person={"number": 200500, "name": "Hånd AS"})]
    subject, body = email_text("nb", "2026-11", findings)
    assert subject.endswith("avstemmingen for november 2026 fant 2 avvik som trenger deg")
    assert "Faktura 5006: bilaget har kundefordring 2 715,00 kr, men fakturaen i Moment er på 2 615,00 kr" in body
    assert "Kunde Hånd AS (kundenummer 200500) finnes i SpareBank 1 Regnskap, men ikke i Moment." in body
    assert body.count("Hva du gjør") == 2


def test_metrics_from_the_last_run():
    report = Report("acme", "2026-11", "run1", 1_790_000_000.0, 1_790_000_010.0)
    report.counts = {"invoices": compare_invoices([], [], revenue_accounts=ACCOUNTS, percents=PERCENTS)[1]["invoices"]}
    report.findings = [Finding("invoices", "invoice 1", "voucher", "1.00", None, "posted", 1)]
    differences = GaugeMetricFamily("d", "d", labels=["integration", "kind"])
    runs: list[float] = []
    _reconcile_metrics("acme", json.dumps(report.as_dict()), differences, runs)
    assert [(s.labels["kind"], s.value) for s in differences.samples] == [("invoices", 1)]
    assert runs == [1_790_000_010.0]


def test_a_voucher_is_posted_again_only_when_it_is_surely_gone():
    """Posted after the books were read, still found by its ID, or not known now: never again."""
    from errors import NotFound, TransientError
    from worker.reconcile.run import _voucher_gone

    class Books:
        def __init__(self, answer):
            self.answer = answer

        def get(self, route, entity_id):
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

    class Runtime:
        def __init__(self, answer):
            self.books = Books(answer)

        def sb1(self, integration):
            return self.books

    gone, there, unsure = (Runtime(NotFound("x", status=404)), Runtime({"ID": 7}),
                           Runtime(TransientError("x", status=503)))
    posted_before = {"posted": True, "sb1_id": 7, "synced_at": 100.0}
    assert _voucher_gone(gone, None, posted_before, read_at=200.0)
    assert not _voucher_gone(there, None, posted_before, read_at=200.0)
    assert not _voucher_gone(unsure, None, posted_before, read_at=200.0)
    assert not _voucher_gone(gone, None, {**posted_before, "synced_at": 250.0}, read_at=200.0)
