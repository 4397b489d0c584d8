"""Invoices end to end: finalized invoices posted once as balanced vouchers."""
from __future__ import annotations

import os
import signal
import time
from decimal import Decimal

import pytest

from conftest import COMPANY_KEYS, wait_until, write_integrations
from sandbox.moment import seed_customers

ACME = COMPANY_KEYS["acme"]
KID = "0000123456782"
pytestmark = pytest.mark.slow

LINES = [  # 25 %, 15 % and 0 % VAT
    {"itemText": "Konsulenttimer november", "quantity": "7.5", "amountExclVat": "7500.00", "vatCode": "3",
     "productType": "HOURS"},
    {"itemText": "Servering prosjektmøte", "quantity": "1", "amountExclVat": "1234.57", "vatCode": "31",
     "productType": "PRODUCTS"},
    {"itemText": "Reise Oslo–Bergen", "quantity": "1", "amountExclVat": "999.99", "vatCode": "5",
     "productType": "EXPENSES"},
]


@pytest.fixture(autouse=True)
def invoices_selected(worker_env, sandbox, tmp_path):
    write_integrations(tmp_path / "integrations.toml", sandbox, data_types=("customers", "projects", "invoices"),
                       fjord={"data_types": ("customers",)})


def send(name, *args):
    from worker.app import app
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


def test_invoice_posted_as_one_balanced_voucher(sandbox, worker, r):
    customer, invoice = new_invoice(sandbox)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "posted") == 1, 30, message="the voucher")
    [voucher] = vouchers(sandbox)
    lines = voucher["DraftLines"]
    amounts = [Decimal(str(ln["Amount"])) for ln in lines]
    assert sum(amounts) == 0                                   # balances to the øre
    accounts = {a["ID"]: a for a in sandbox.sb1.documents(ACME, "accounts")}
    vat = {v["ID"]: v["VatCode"] for v in sandbox.sb1.documents(ACME, "vattypes")}
    [c] = sandbox.sb1.customers(ACME)
    [p] = sandbox.sb1.documents(ACME, "projects")
    debit = lines[0]
    assert accounts[debit["AccountID"]]["CustomerID"] == c["ID"]
    assert Decimal(str(debit["Amount"])) == Decimal("11794.75")  # 9734.56 + 1875.00 + 185.19 VAT
    assert (debit["InvoiceNumber"], debit["PaymentID"], str(debit["DueDate"])[:10]) == ("1001", KID, "2026-12-04")
    credits = [(accounts[ln["AccountID"]]["AccountNumber"], Decimal(str(ln["Amount"])), vat.get(ln.get("VatTypeID")),
                ln["Description"]) for ln in lines[1:]]
    assert credits == [
        (3000, Decimal("-7500.00"), "3", "Konsulenttimer november"),
        (3000, Decimal("-1234.57"), "31", "Servering prosjektmøte"),
        (3000, Decimal("-999.99"), "5", "Reise Oslo–Bergen"),
        (2700, Decimal("-1875.00"), None, "Utgående mva kode 3 (25.0%)"),
        (2700, Decimal("-185.19"), None, "Utgående mva kode 31 (15.0%)"),
    ]
    assert all(ln["Dimensions"]["ProjectID"] == p["ID"] for ln in lines)
    assert all(str(ln["FinancialDate"])[:10] == "2026-11-20" for ln in lines)
    assert voucher["Description"] == f"{KID} Faktura 1001: Kontorbygg Lysaker"   # voucher number: the KID


def test_without_kid_the_invoice_number_is_the_voucher_number(sandbox, worker, r):
    _, invoice = new_invoice(sandbox, number=1002, kid="", project=False)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "posted") == 1, 30, message="the voucher")
    [voucher] = vouchers(sandbox)
    assert voucher["Description"] == "1002 Faktura 1002: Kontorbygg Lysaker"
    assert "PaymentID" not in voucher["DraftLines"][0] or not voucher["DraftLines"][0]["PaymentID"]
    assert all(not ln.get("Dimensions") for ln in voucher["DraftLines"])


def test_credit_note(sandbox, worker, r):
    credit_lines = [{**LINES[0], "amountExclVat": "-2000.00"}, {**LINES[1], "amountExclVat": "-100.01"}]
    _, invoice = new_invoice(sandbox, number=1003, lines=credit_lines)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "posted") == 1, 30, message="the credit note")
    [voucher] = vouchers(sandbox)
    amounts = [Decimal(str(ln["Amount"])) for ln in voucher["DraftLines"]]
    assert sum(amounts) == 0
    assert amounts[0] == Decimal("-2615.01")     # -(2000 + 100.01 + 500.00 + 15.00)
    assert amounts[1:] == [Decimal("2000.00"), Decimal("100.01"), Decimal("500.00"), Decimal("15.00")]


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
    [acc] = [a for a in sandbox.sb1.documents(ACME, "accounts") if a["AccountNumber"] == 2700]
    sandbox.sb1.delete(ACME, "accounts", acc["ID"])
    _, invoice = new_invoice(sandbox, project=False)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: len(smtp.messages) == 1, 30, message="the email")
    assert "has no account 2700 (output VAT)" in smtp.messages[0].get_content()
    assert vouchers(sandbox) == []


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
    assert sorted(v["DraftLines"][0]["InvoiceNumber"] for v in vouchers(sandbox)) == [
        str(i["invoiceNumber"]) for i in invoices]
    assert all(status == 202 for _, status in sandbox.webhooks.sent)
    for v in vouchers(sandbox):
        assert sum(Decimal(str(ln["Amount"])) for ln in v["DraftLines"]) == 0


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
    assert '"Amount": 11794.75' in out.stdout
    assert sandbox.sb1.count_writes() == 0 and r.keys("msb1test:state:*") == []
