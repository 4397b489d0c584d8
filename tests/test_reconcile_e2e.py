"""Reconciliation end to end: a month of invoices (four VAT rates, a credit note, an øre
rounding) synced by a real worker into the sandbox; then by hand in the books a voucher
deleted, a voucher's amount changed, a customer's number changed and a customer added.
``moment-sb1 reconcile acme --month 2026-11 --json`` finds exactly these four, repairs the
customer, posts the missing voucher once, leaves the changed voucher alone, emails the
company once; its calls to the books are counted at the sandbox."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from conftest import COMPANY_KEYS, ROOT, wait_until, write_integrations

from sandbox.moment import seed_customers
from worker.reconcile.run import nightly_months

ACME = COMPANY_KEYS["acme"]
REVENUE = 'revenue_accounts = { hours = 3000, products = 3100, expenses = 3200 }'
pytestmark = pytest.mark.slow


def line(text, amount, code, kind="HOURS"):
    return {"itemText": text, "quantity": "1", "amountExclVat": amount, "vatCode": code, "productType": kind}


INVOICES = [  # (lines, customer index)
    ([line("Konsulenttimer", "7500.00", "3"), line("Lisens", "999.99", "3", "PRODUCTS")], 0),
    ([line("Servering", "1234.57", "31", "PRODUCTS")], 1),
    ([line("Persontransport", "480.00", "33", "EXPENSES"), line("Reise", "999.99", "5", "EXPENSES")], 2),
    ([line("Kreditert timer", "-1500.00", "3")], 0),                                   # a credit note
    ([line("Småtimer", "0.05", "3"), line("Småvarer", "0.05", "3", "PRODUCTS")], 3),     # an øre rounding
    ([line("Rådgivning", "2000.00", "3"), line("Mat", "100.00", "31", "PRODUCTS")], 1),
]


@pytest.fixture(autouse=True)
def all_types(worker_env, sandbox, tmp_path):
    write_integrations(tmp_path / "integrations.toml", sandbox, data_types=("customers", "projects", "invoices"),
                       acme={"extra": [REVENUE], "language": None}, fjord={"data_types": ("customers",)})


def send(name, *args):
    from worker.broker import app
    app.send_task(name, args=list(args))


def reconcile_cli(env, *args):
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "reconcile", "acme", "--month", "2026-11", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    return proc


def table(sandbox, route):
    return sandbox.sb1.company(ACME).tables[route]


def seed_month(sandbox):
    customers = seed_customers(sandbox.moment, "acme", 4)
    invoices = []
    for i, (lines, who) in enumerate(INVOICES):
        c = customers[who]
        ref = {"id": c["id"], "customerNumber": c["customerNumber"]}
        body = {"invoiceNumber": 5001 + i, "status": "FINALIZED", "invoiceDate": f"2026-11-{10 + i}",
                "dueDate": "2026-12-20", "currencyCode": "NOK", "customer": ref, "lines": lines}
        if i == 0:
            p = sandbox.moment.create("acme", "projects", {"name": "Kontorbygg", "projectNumber": "1042",
                                                           "projectState": "ACTIVE", "customer": ref})
            body["project"] = {"id": p["id"], "projectNumber": "1042"}
        invoices.append(sandbox.moment.create("acme", "invoices", body))
    # a draft and an invoice of another month are not this month's
    sandbox.moment.create("acme", "invoices", {**body, "invoiceNumber": 5100, "status": "DRAFT"})
    return customers, invoices


def entries_of(sandbox, number):
    return {ln["JournalEntryID"] for ln in table(sandbox, "journalentrylines").values()
            if str(ln.get("InvoiceNumber")) == str(number)}


def test_reconcile_finds_exactly_what_was_changed_by_hand(sandbox, worker, start_worker, worker_env, smtp, r):
    customers, invoices = seed_month(sandbox)
    for c in customers:
        send("sync.customer", "acme", c["id"])
    for inv in invoices:
        send("sync.invoice", "acme", inv["id"])
    wait_until(lambda: len(table(sandbox, "journalentries")) == len(invoices), 60, message="every voucher posted")

    clean = reconcile_cli(worker_env, "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    report = json.loads(clean.stdout)
    assert report["differences"] == []
    assert report["kinds"]["invoices"] == {"checked": 6, "equal": 6, "repaired": 0, "differing": 0, "rounding": 0}
    assert report["kinds"]["customers"]["equal"] == 4 and report["kinds"]["projects"]["equal"] == 1
    # the øre the platform's rounding made on invoice 5005 (Moment: 25 % of 0,10 = 0,03; the platform books 0,01 + 0,01)
    assert {(d["record"], d["moment"], d["books"]) for d in report["rounding"] if d["kind"] == "vat"} == {
        ("VAT code 3", "2250.03", "2250.02")}
    assert smtp.messages == []

    # by hand in the books; the worker stopped, so the sandbox counts the reconciliation's calls alone
    worker.stop()
    store = sandbox.sb1
    with store.lock:
        [deleted] = entries_of(sandbox, 5002)
        table(sandbox, "journalentries").pop(deleted)
        for ln in [ln for ln in table(sandbox, "journalentrylines").values() if ln["JournalEntryID"] == deleted]:
            table(sandbox, "journalentrylines").pop(ln["ID"])
        [changed] = [ln for ln in table(sandbox, "journalentrylines").values()
                     if str(ln.get("InvoiceNumber")) == "5006"]
        gross = Decimal(str(changed["Amount"]))
        table(sandbox, "journalentrylines")[changed["ID"]] = {**changed, "Amount": gross + 100}
        renumbered = next(c for c in table(sandbox, "customers").values() if c["CustomerNumber"] == 100003)
        table(sandbox, "customers")[renumbered["ID"]] = {**renumbered, "CustomerNumber": 199003}
    store.insert(ACME, "customers", {"CustomerNumber": 200500, "Info": {"Name": "Håndlaget Kunde AS"}})
    store.reset_counters()

    found = reconcile_cli(worker_env, "--json")
    assert found.returncode == 1, found.stdout + found.stderr
    report = json.loads(found.stdout)
    calls = sum(store.requests.values())
    got = {(d["kind"], d["record"], d["field"], d["status"], d["moment"], d["books"]) for d in report["differences"]}
    assert got == {
        ("invoices", "invoice 5002", "voucher", "posted", str(Decimal("1234.57") + Decimal("185.19")), None),
        ("invoices", "invoice 5006", "receivable", "differing", str(gross), str(gross + 100)),
        ("customers", "customer 100003", "CustomerNumber", "repaired", "100003", "199003"),
        ("customers", "customer 200500", "CustomerNumber", "made-by-hand", None, "200500"),
    }, json.dumps(report["differences"], indent=1)
    # the reads: statistics, customers, projects, currencies; and before posting a voucher again,
    # one look that the voucher its state names is gone indeed
    assert report["books_calls"] == 4 and calls == 5, store.requests
    assert store.requests[("GET", "journalentries")] == 1

    start_worker()

    # repaired: the voucher posted once more, the customer's number back; the changed voucher left alone
    wait_until(lambda: len(entries_of(sandbox, 5002)) == 1, 30, message="the missing voucher posted")
    wait_until(lambda: table(sandbox, "customers")[renumbered["ID"]]["CustomerNumber"] == 100003, 30,
               message="the customer's number written back")
    assert Decimal(str(table(sandbox, "journalentrylines")[changed["ID"]]["Amount"])) == gross + 100

    # one email, in Norwegian, naming what needs a person
    wait_until(lambda: len(smtp.messages) >= 1, 10, message="the email")
    [mail] = smtp.messages
    body = mail.get_content() if hasattr(mail, "get_content") else str(mail)
    assert "avstemmingen for november 2026 fant 2 avvik" in mail["Subject"]
    assert "Faktura 5006" in body and "Håndlaget Kunde AS" in body and "kundenummer 200500" in body

    again = reconcile_cli(worker_env, "--json", "--no-email")
    report = json.loads(again.stdout)
    assert {(d["record"], d["status"]) for d in report["differences"]} == {
        ("invoice 5006", "differing"), ("customer 200500", "made-by-hand")}
    assert len(entries_of(sandbox, 5002)) == 1

    # beat's nightly run (today's month, and the month before until the 10th) runs on the worker
    runs = r.llen("msb1test:reconcile:acme")
    send("reconcile.nightly")
    months = nightly_months(datetime.now(timezone.utc).date())
    wait_until(lambda: r.llen("msb1test:reconcile:acme") >= runs + len(months), 60, message="the nightly run")
    newest = [json.loads(x) for x in r.lrange("msb1test:reconcile:acme", 0, len(months) - 1)]
    assert sorted(run["month"] for run in newest) == sorted(months)


def test_one_reconciliation_of_a_month_at_a_time(sandbox, worker_env, r):
    """The nightly run redelivered, or a command beside it: the second says so and does nothing."""
    r.set("msb1test:reconcile-lock:acme:2026-11", "someone", ex=60)
    busy = reconcile_cli(worker_env, "--json")
    assert busy.returncode == 1 and "a reconciliation of acme for 2026-11 is running now" in busy.stderr
    assert "Traceback" not in busy.stderr and busy.stdout == ""
