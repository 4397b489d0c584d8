"""An upgrade across the schema version: a state the previous release wrote
(tests/fixtures/redis-state-v1.json, over what a real worker wrote to the books) is migrated
by a new worker as it starts, once, and the worker carries on: the posted invoice is not
posted again, the dead letter, the pause and the cursor are kept. A state newer than the
release is refused in one line, exit code 2, by the worker and by beat."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMPANY_KEYS, ROOT, wait_until, write_integrations

from sandbox.moment import seed_customers
from worker.store.keys import Keys
from worker.store.schema import SCHEMA_VERSION

pytestmark = pytest.mark.slow
FIXTURE = Path(__file__).parent / "fixtures" / "redis-state-v1.json"
ACME = COMPANY_KEYS["acme"]
KEYS = Keys("msb1test")
LINES = [{"itemText": "Konsulenttimer", "quantity": "10", "amountExclVat": "1000.00", "vatCode": "3",
          "productType": "HOURS"}]


def load_state(r, **values: object) -> None:
    """The fixture's keys into Redis, placeholders filled in."""
    text = FIXTURE.read_text().replace("<p>", "msb1test")
    for name, value in values.items():
        text = text.replace(f"<{name}>", str(value))
    for key, item in json.loads(text)["keys"].items():
        r.delete(key)
        if item["type"] == "hash":
            r.hset(key, mapping=item["value"])
        elif item["type"] == "list":
            r.rpush(key, *item["value"])
        else:
            r.set(key, item["value"], ex=item.get("ttl"))


def send(name, *args):
    from worker.broker import app
    app.send_task(name, args=list(args))


def test_a_previous_releases_state_is_migrated_and_the_worker_carries_on(sandbox, start_worker, r, tmp_path):
    write_integrations(tmp_path / "integrations.toml", sandbox, data_types=("customers", "invoices"),
                       acme={"extra": ['revenue_accounts = { hours = 3000, products = 3100, expenses = 3200 }']})
    customers = seed_customers(sandbox.moment, "acme", 3)
    c = customers[0]
    invoice = sandbox.moment.create("acme", "invoices", {
        "invoiceNumber": 1001, "status": "FINALIZED", "invoiceDate": "2026-11-20", "dueDate": "2026-12-04",
        "currencyCode": "NOK", "customer": {"id": c["id"], "customerNumber": c["customerNumber"]}, "lines": LINES})
    # the books as the previous release left them: its worker wrote the customers and the voucher
    old = start_worker()
    for rec in customers:
        send("sync.customer", "acme", rec["id"])
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: len(sandbox.sb1.documents(ACME, "journalentries")) == 1
               and len(sandbox.sb1.customers(ACME)) == 3, 60, message="the first release's syncs")
    wait_until(lambda: r.hexists(KEYS.state("acme", "invoices"), invoice["id"]), 10, message="the invoice's state")
    old.stop()
    [voucher] = sandbox.sb1.documents(ACME, "journalentries")
    r.delete(KEYS.schema(), KEYS.numbers("acme", "customers"))     # that release wrote neither
    load_state(r, invoice=invoice["id"], voucher=voucher["ID"])

    new = start_worker()
    assert r.get(KEYS.schema()) == str(SCHEMA_VERSION)
    log = new.log()
    assert "Redis state migrated to schema version 2 (1 posted invoice(s) rewritten, 1 number lock(s) in clear " \
           "deleted)" in log, log[-3000:]
    state = json.loads(r.hget(KEYS.state("acme", "invoices"), invoice["id"]))
    assert state["posted"] is True and "fingerprint" not in state and state["sb1_id"] == voucher["ID"]
    assert not r.exists("msb1test:number-lock:acme:customers:100777")

    # it carries on: the same records again write nothing new
    for rec in customers:
        send("sync.customer", "acme", rec["id"])
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: r.hget(KEYS.stats("acme"), "invoices:already-posted") == "1"
               and int(r.hget(KEYS.stats("acme"), "customers:unchanged") or 0) >= 3, 60,
               message="the syncs after the upgrade", describe=lambda: f"{r.hgetall(KEYS.stats('acme'))}")
    assert len(sandbox.sb1.documents(ACME, "journalentries")) == 1
    assert sorted(str(x["CustomerNumber"]) for x in sandbox.sb1.customers(ACME)) == \
        sorted(str(x["customerNumber"]) for x in customers)
    # what the operator had is still there, in the form this release reads
    from worker.store.records import DeadLetters, Pauses
    [letter] = DeadLetters(r, KEYS).list("acme")
    assert letter.what == "customer 100999" and letter.failures == 2
    assert Pauses(r, KEYS).is_paused("fjord")
    assert r.get(KEYS.cursor("acme", "customers")) == "2026-11-25T12:00:00.000000+00:00"
    new.stop()
    # a second start finds nothing to do
    again = start_worker()
    assert again.log().count("Redis state migrated") == 1


def test_a_newer_state_is_refused_in_one_line(worker_env, r):
    r.set(KEYS.schema(), SCHEMA_VERSION + 1)
    r.hset(KEYS.paused(), "acme", "1")
    worker = subprocess.run([sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "threads"],
                            cwd=ROOT, env=worker_env, capture_output=True, text=True, timeout=60)
    [line] = [x for x in worker.stderr.splitlines() if "schema" in x]
    assert worker.returncode == 2 and "Traceback" not in worker.stderr, worker.stderr[-3000:]
    assert line.startswith("moment-sb1: the worker cannot start: Redis holds state of schema version "
                           f"{SCHEMA_VERSION + 1}, written by a newer release"), line
    beat = subprocess.run([sys.executable, "-m", "worker.cli", "beat", "--no-restart"], cwd=ROOT, env=worker_env,
                          capture_output=True, text=True, timeout=60)
    assert beat.returncode == 2 and beat.stderr.strip().splitlines()[-1].startswith(
        "moment-sb1: beat cannot start: Redis holds state of schema version"), beat.stderr[-3000:]
    assert r.get(KEYS.schema()) == str(SCHEMA_VERSION + 1) and r.hget(KEYS.paused(), "acme") == "1"   # untouched
