"""Invoices end to end: finalized invoices posted once, checked in the books as the
platform holds them (the sandbox splits VAT out of gross lines as the platform does)."""
from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from decimal import Decimal

import pytest
from conftest import COMPANY_KEYS, wait_until, write_integrations

from sandbox.moment import seed_customers

ACME = COMPANY_KEYS["acme"]
KID = "0000123456782"
pytestmark = pytest.mark.slow

LINES = [  # 25 % (two lines on hours, one on products), 15 %, 12 % (two lines) and 0 %
    {"itemText": "Konsulenttimer november", "quantity": "75", "amountExclVat": "7500.00", "vatCode": "3",
     "productType": "HOURS"},
    {"itemText": "Prosjektledelse", "quantity": "10", "amountExclVat": "1250.50", "vatCode": "3",
     "productType": "HOURS"},
    {"itemText": "Lisens", "quantity": "1", "amountExclVat": "999.99", "vatCode": "3", "productType": "PRODUCTS"},
    {"itemText": "Servering prosjektmøte", "quantity": "1", "amountExclVat": "1234.57", "vatCode": "31",
     "productType": "PRODUCTS"},
    {"itemText": "Persontransport", "quantity": "1", "amountExclVat": "480.00", "vatCode": "33",
     "productType": "EXPENSES"},
    {"itemText": "Taxi", "quantity": "1", "amountExclVat": "19.99", "vatCode": "33", "productType": "EXPENSES"},
    {"itemText": "Reise Oslo–Bergen", "quantity": "1", "amountExclVat": "999.99", "vatCode": "5",
     "productType": "EXPENSES"},
]
# What the books hold for LINES, worked out by hand: Moment's VAT per code is 25 % of
# 9 750,49 = 2 437,62; 15 % of 1 234,57 = 185,19; 12 % of 499,99 = 60,00.
GROSS = Decimal("15167.85")
BOOKS = {1500: GROSS, 3000: Decimal("-8750.50"), 3100: Decimal("-2234.56"), 3200: Decimal("-1499.98"),
         2700: Decimal("-2437.62"), 2701: Decimal("-185.19"), 2702: Decimal("-60.00")}
REVENUE = 'revenue_accounts = { hours = 3000, products = 3100, expenses = 3200 }'


@pytest.fixture(autouse=True)
def invoices_selected(worker_env, sandbox, tmp_path):
    write_integrations(tmp_path / "integrations.toml", sandbox, data_types=("customers", "projects", "invoices"),
                       acme={"extra": [REVENUE]}, fjord={"data_types": ("customers",)})


def send(name, *args):
    from worker.broker import app
    app.send_task(name, args=list(args))


def stat(r, name, integration="acme"):
    return int(r.hget(f"msb1test:stats:{integration}", f"invoices:{name}") or 0)


def new_invoice(sandbox, company="acme", *, number=1001, kid=KID, lines=LINES, status="FINALIZED", project=True):
    [customer] = seed_customers(sandbox.moment, company, 1)
    body = {"invoiceNumber": number, "status": status, "invoiceDate": "2026-11-20", "dueDate": "2026-12-04",
            "paymentId": kid, "description": "Kontorbygg Lysaker", "currencyCode": "NOK",
            "customer": {"id": customer["id"], "customerNumber": customer["customerNumber"]}, "lines": lines}
    if project:
        p = sandbox.moment.create(company, "projects", {
            "name": "Kontorbygg Lysaker", "projectNumber": "1042", "projectState": "ACTIVE",
            "customer": {"id": customer["id"], "customerNumber": customer["customerNumber"]}})
        body["project"] = {"id": p["id"], "projectNumber": "1042"}
    return customer, sandbox.moment.create(company, "invoices", body)


def vouchers(sandbox, key=ACME):
    return sandbox.sb1.documents(key, "journalentries")


def books(sandbox, voucher, key=ACME):
    """The voucher as the platform holds it: amount per account number (the receivable on
    1500, with the customer's own account as sub-account)."""
    numbers = {a["ID"]: a["AccountNumber"] for a in sandbox.sb1.documents(key, "accounts")}
    held: dict[int, Decimal] = defaultdict(Decimal)
    for ln in voucher["Lines"]:
        held[numbers[ln["AccountID"]]] += Decimal(str(ln["Amount"]))
    return dict(held)


def receivable_line(voucher):
    [line] = [ln for ln in voucher["Lines"] if ln.get("SubAccountID")]
    return line


def test_invoice_booked_as_the_platform_books_it(sandbox, worker, r):
    customer, invoice = new_invoice(sandbox)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "posted") == 1, 30, message="the voucher")
    [voucher] = vouchers(sandbox)
    # the books: revenue holds the net, each VAT code's account Moment's VAT, the receivable the gross
    assert books(sandbox, voucher) == BOOKS
    accounts = {a["ID"]: a for a in sandbox.sb1.documents(ACME, "accounts")}
    [c] = sandbox.sb1.customers(ACME)
    [p] = sandbox.sb1.documents(ACME, "projects")
    debit = receivable_line(voucher)
    assert accounts[debit["SubAccountID"]]["CustomerID"] == c["ID"]
    assert (debit["InvoiceNumber"], debit["PaymentID"], str(debit["DueDate"])[:10]) == ("1001", KID, "2026-12-04")
    assert debit["Description"] == "Faktura 1001 – Kontorbygg Lysaker"
    assert all(ln["Dimensions"]["ProjectID"] == p["ID"] for ln in voucher["Lines"])
    assert all(str(ln["FinancialDate"])[:10] == "2026-11-20" for ln in voucher["Lines"])
    # what we sent: gross credits with their VAT types, one per (account, VAT code); no VAT lines of ours
    vat = {v["ID"]: v["VatCode"] for v in sandbox.sb1.documents(ACME, "vattypes")}
    sent = [(accounts[ln["AccountID"]]["AccountNumber"], vat.get(ln.get("VatTypeID")), Decimal(str(ln["Amount"])))
            for ln in voucher["DraftLines"][1:]]
    assert sorted(sent) == [(3000, "3", Decimal("-10938.12")), (3100, "3", Decimal("-1249.99")),
                            (3100, "31", Decimal("-1419.76")), (3200, "33", Decimal("-559.99")),
                            (3200, "5", Decimal("-999.99"))]
    assert r.hget("msb1test:state:acme:invoices", str(invoice["id"]))


def test_credit_note_books_the_reverse(sandbox, worker, r):
    credit_lines = [{**ln, "amountExclVat": f"-{ln['amountExclVat']}"} for ln in LINES]
    _, invoice = new_invoice(sandbox, number=1003, lines=credit_lines)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "posted") == 1, 30, message="the credit note")
    [voucher] = vouchers(sandbox)
    assert books(sandbox, voucher) == {k: -v for k, v in BOOKS.items()}
    assert receivable_line(voucher)["Description"] == "Kreditnota 1003 – Kontorbygg Lysaker"


def test_without_kid_the_voucher_is_found_by_its_invoice_number(sandbox, worker, r):
    _, invoice = new_invoice(sandbox, number=1002, kid="", project=False)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "posted") == 1, 30, message="the voucher")
    [voucher] = vouchers(sandbox)
    debit = receivable_line(voucher)
    assert debit["InvoiceNumber"] == "1002" and not debit.get("PaymentID")
    assert all(not ln.get("Dimensions") for ln in voucher["Lines"])
    # forget what the worker remembers: the books alone stop a second voucher
    r.delete("msb1test:state:acme:invoices")
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "already-posted") == 1, 30, message="the second run")
    assert len(vouchers(sandbox)) == 1


def test_same_invoice_task_twice_gives_one_voucher(sandbox, start_worker, r):
    start_worker(concurrency=8)
    _, invoice = new_invoice(sandbox)
    for _ in range(3):
        send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "posted") + stat(r, "already-posted") == 3, 30, message="three runs")
    assert stat(r, "posted") == 1
    assert len(vouchers(sandbox)) == 1


def test_worker_killed_right_after_the_post_gives_one_voucher(sandbox, start_worker, r):
    w = start_worker()
    killed = []

    def kill_worker(key, method, route, doc):      # the voucher is stored; the answer never arrives
        if route == "journalentries" and not killed:
            killed.append(doc["ID"])
            os.killpg(w.proc.pid, signal.SIGKILL)
    sandbox.sb1.write_listeners.append(kill_worker)
    _, invoice = new_invoice(sandbox)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: killed, 30, message="the post")
    w.proc.wait(10)
    start_worker()                                  # the unacked task comes back after the visibility timeout
    wait_until(lambda: stat(r, "already-posted") == 1, 40, message="the redelivered task")
    assert len(vouchers(sandbox)) == 1 and stat(r, "posted") == 0


def test_answer_lost_after_the_post_gives_one_voucher(sandbox, worker, r):
    sandbox.sb1_faults.script("journalentries", 503, times=1, method="POST", after=True)
    _, invoice = new_invoice(sandbox)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "already-posted") == 1, 30, message="the retry")
    assert len(vouchers(sandbox)) == 1 and stat(r, "retried") == 1


def test_unknown_vat_code_one_email_nothing_posted(sandbox, smtp, worker, r):
    lines = [LINES[0], {**LINES[1], "vatCode": "99"}]
    _, invoice = new_invoice(sandbox, lines=lines)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: len(smtp.messages) == 1, 30, message="the email")
    time.sleep(0.5)
    body = smtp.messages[0].get_content()
    assert "nothing was posted: SpareBank 1 Regnskap has no VAT code 99" in body
    assert "Set these up in SpareBank 1 Regnskap with the same numbers and codes as in Moment" in body
    assert vouchers(sandbox) == [] and sandbox.sb1.count_writes(ACME) == 0
    assert smtp.messages[0]["Subject"].endswith("Invoice 1001 was not transferred")


def test_missing_account_is_named(sandbox, smtp, worker, r):
    [acc] = [a for a in sandbox.sb1.documents(ACME, "accounts") if a["AccountNumber"] == 3200]
    sandbox.sb1.delete(ACME, "accounts", acc["ID"])
    _, invoice = new_invoice(sandbox, project=False)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: len(smtp.messages) == 1, 30, message="the email")
    assert "has no account 3200 (revenue for expenses)" in smtp.messages[0].get_content()
    assert vouchers(sandbox) == []


def test_vat_far_from_moments_is_refused_with_both_amounts(sandbox, smtp, worker, r):
    """Moment says 200,00 kr VAT on 1 000,00 at 25 %; the platform would book 240,00."""
    lines = [{**LINES[0], "amountExclVat": "1000.00", "vatAmount": "200.00"}]
    _, invoice = new_invoice(sandbox, lines=lines, project=False)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: len(smtp.messages) == 1, 30, message="the email")
    time.sleep(0.5)
    body = smtp.messages[0].get_content()
    assert ("invoice 1001 was not posted: its VAT does not match what SpareBank 1 Regnskap computes "
            "(VAT code 3: Moment 200,00 kr, SpareBank 1 Regnskap would book 240,00 kr)") in body
    assert len(smtp.messages) == 1 and vouchers(sandbox) == []
    assert r.hexists("msb1test:dead:acme", f"invoices:{invoice['id']}")


def test_an_ore_of_rounding_is_posted_and_reported(sandbox, worker, r):
    """Moment rounds VAT per line (2 × 0,01 kr); the platform rounds the grouped line (0,01 kr)."""
    lines = [{**LINES[0], "amountExclVat": "0.02", "vatAmount": "0.01"},
             {**LINES[1], "amountExclVat": "0.02", "vatAmount": "0.01"}]
    _, invoice = new_invoice(sandbox, lines=lines, project=False)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "posted") == 1, 30, message="the voucher")
    [voucher] = vouchers(sandbox)
    assert books(sandbox, voucher) == {1500: Decimal("0.06"), 3000: Decimal("-0.05"), 2700: Decimal("-0.01")}
    import json
    state = json.loads(r.hget("msb1test:state:acme:invoices", str(invoice["id"])))
    assert state["note"] == "VAT code 3: Moment 0,02 kr, booked 0,01 kr (-0.01, rounding per line)"
    assert "VAT rounding differs from Moment's: VAT code 3" in worker.log()


@pytest.mark.parametrize("change,error", [
    ({"paymentId": "0000123456783"}, "KID 0000123456783 has a wrong check digit"),
    ({"lines": [{**LINES[0], "amountExclVat": "99999999999999.99"}]}, "larger than SpareBank 1 Regnskap can hold"),
])
def test_a_bad_kid_or_an_impossible_amount_is_one_email_and_nothing_posted(sandbox, smtp, worker, r, change, error):
    _, invoice = new_invoice(sandbox, project=False)
    sandbox.moment.update("acme", "invoices", invoice["id"], change)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: len(smtp.messages) == 1, 30, message="the email")
    time.sleep(0.5)
    assert error in smtp.messages[0].get_content() and len(smtp.messages) == 1
    assert vouchers(sandbox) == [] and sandbox.sb1.count_writes(ACME) == 0


def test_draft_invoice_and_unselected_integration_post_nothing(sandbox, worker, r):
    _, draft = new_invoice(sandbox, status="DRAFT", project=False)
    _, other = new_invoice(sandbox, company="fjord", project=False)
    send("sync.invoice", "acme", draft["id"])
    send("sync.invoice", "fjord", other["id"])
    wait_until(lambda: stat(r, "not-finalized") == 1 and stat(r, "ignored", "fjord") == 1, 30,
               message="both handled")
    assert vouchers(sandbox) == [] and vouchers(sandbox, COMPANY_KEYS["fjord"]) == []


def test_moment_webhooks_bring_customer_project_and_invoice_to_the_books(sandbox, worker, receiver, r):
    """Nothing queued by hand: the sandbox Moment sends its webhooks to the receiver."""
    from sandbox.moment import seed_invoices, seed_projects
    sandbox.webhooks.urls["acme"] = receiver
    customers = seed_customers(sandbox.moment, "acme", 2)
    projects = seed_projects(sandbox.moment, "acme", customers, 2)
    invoices = seed_invoices(sandbox.moment, "acme", projects, customers, 3)
    wait_until(lambda: len(vouchers(sandbox)) == 3, 30, message="three vouchers")
    wait_until(lambda: len(sandbox.sb1.documents(ACME, "projects")) == 2, 10, message="two projects")
    assert len(sandbox.sb1.customers(ACME)) == 2
    assert sorted(receivable_line(v)["InvoiceNumber"] for v in vouchers(sandbox)) == [
        str(i["invoiceNumber"]) for i in invoices]
    assert all(status == 202 for _, status in sandbox.webhooks.sent)
    for v in vouchers(sandbox):
        assert sum(books(sandbox, v).values()) == 0


def test_dry_run_shows_the_voucher_and_writes_nothing(sandbox, worker_env, r):
    import subprocess
    import sys

    from conftest import ROOT
    _, invoice = new_invoice(sandbox)
    out = subprocess.run([sys.executable, "-m", "worker.cli", "dry-run", "acme", "invoices", str(invoice["id"])],
                         cwd=ROOT, env=worker_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("invoice 1001: would be posted\n")
    assert "POST customers\n" in out.stdout and "POST projects\n" in out.stdout
    assert "POST journalentries?action=book-journal-entries" in out.stdout
    assert '"Amount": 15167.85' in out.stdout and '"Amount": -10938.12' in out.stdout
    assert sandbox.sb1.count_writes() == 0 and r.keys("msb1test:state:*") == []
