"""A backfill reads a page once for all its records: calls per record at the floor, and
every guarantee of a record's own sync kept (one record per number, nothing written twice)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import COMPANY_KEYS, ROOT, publish_task, wait_until, write_integrations

from sandbox.moment import seed_customers, seed_invoices, seed_projects

ACME = COMPANY_KEYS["acme"]
pytestmark = pytest.mark.slow


def backfill(worker_env, *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "worker.cli", "backfill", "acme", *extra], cwd=ROOT,
                          env=worker_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def stats(r) -> dict[str, int]:
    raw = r.hgetall("msb1test:stats:acme")
    return {k.split(":", 1)[1]: int(v) for k, v in raw.items() if k.startswith("customers:") and ":last_" not in k}


def finished(r) -> int:
    s = stats(r)
    return sum(s.get(k, 0) for k in ("created", "updated", "unchanged", "failed", "stale"))


def sb1_calls(sandbox) -> int:
    return sum(n for (method, route), n in sandbox.sb1.requests.items() if route != "connect/token")


def moment_calls(sandbox) -> int:
    return sum(sandbox.moment.requests.values())


def test_a_backfill_spends_one_write_per_new_record_and_none_on_equal_ones(sandbox, worker_env, start_worker, r):
    start_worker()
    seed_customers(sandbox.moment, "acme", 450)
    sandbox.sb1.reset_counters()
    sandbox.moment.requests.clear()
    # five creates refused with a 429 (nothing written): their next try still needs no look-up
    sandbox.sb1_faults.script("/api/biz/customers", 429, times=5, method="POST", headers={"Retry-After": "0"})
    backfill(worker_env)
    wait_until(lambda: finished(r) == 450, 90, message="450 customers synced", describe=lambda: str(stats(r)))
    assert stats(r).get("created") == 450
    numbers = [c["CustomerNumber"] for c in sandbox.sb1.customers(ACME)]
    assert sorted(numbers) == list(range(100001, 100451))          # each once
    assert sandbox.sb1.count_writes(ACME, "customers", "POST") == 450
    # the floor: one write per record, the books read once per page (its numbers' range);
    # Moment's list pages only
    assert sandbox.sb1_faults.injected[429] == 5
    assert sandbox.sb1.requests[("GET", "customers")] == 3, sandbox.sb1.requests
    assert (sb1_calls(sandbox) - 5) / 450 <= 1.01, sandbox.sb1.requests
    assert moment_calls(sandbox) / 450 <= 0.01, sandbox.moment.requests

    # the same records once more, as the books hold them and as our state says: nothing written
    sandbox.sb1.reset_counters()
    backfill(worker_env)
    wait_until(lambda: finished(r) == 900, 90, message="450 more syncs", describe=lambda: str(stats(r)))
    assert sandbox.sb1.count_writes(ACME) == 0 and stats(r).get("unchanged") == 450

    # the books hold them (made before the integration kept track): found equal, not written
    for key in r.scan_iter("msb1test:*"):
        if key.split(":")[1] in ("state", "owner", "numbers", "handled"):
            r.delete(key)
    sandbox.sb1.reset_counters()
    backfill(worker_env)
    wait_until(lambda: finished(r) == 1350, 90, message="450 syncs against the books", describe=lambda: str(stats(r)))
    assert sandbox.sb1.count_writes(ACME) == 0 and stats(r).get("unchanged") == 900
    assert sb1_calls(sandbox) <= 15, sandbox.sb1.requests     # the page reads only
    assert len(sandbox.sb1.customers(ACME)) == 450


def test_two_records_with_one_number_on_different_pages_make_one_customer(sandbox, worker_env, start_worker, r):
    """Both pages were read before either record was written: the copy's "the books have none"
    must not make a second customer with the number."""
    [first, *_] = seed_customers(sandbox.moment, "acme", 5)
    twin = sandbox.moment.create("acme", "customers", {**{k: v for k, v in first.items() if k != "id"},
                                                       "name": "Tvilling AS"})
    assert twin["customerNumber"] == first["customerNumber"]
    # the worker starts after the whole backfill is queued, so every page is read first
    backfill(worker_env, "--page-size", "3")
    start_worker()
    wait_until(lambda: finished(r) == 6, 60, message="six syncs", describe=lambda: str(stats(r)))
    numbers = [c["CustomerNumber"] for c in sandbox.sb1.customers(ACME)]
    assert sorted(numbers) == list(range(100001, 100006))           # one customer per number
    assert stats(r).get("failed") == 1
    [letter] = r.hgetall("msb1test:dead:acme").values()
    assert "share customer number 100001" in letter


def test_a_live_change_during_a_backfill_is_not_undone_by_the_page_copy(sandbox, worker_env, start_worker, r):
    [rec] = seed_customers(sandbox.moment, "acme", 1)
    backfill(worker_env)                    # page read: the old name is in the copy
    sandbox.moment.update("acme", "customers", rec["id"], {"name": "Nytt Navn AS"})
    publish_task("acme", rec["id"])         # the webhook's live sync
    start_worker()
    wait_until(lambda: finished(r) == 2, 60, message="both syncs", describe=lambda: str(stats(r)))
    [c] = sandbox.sb1.customers(ACME)
    assert c["Info"]["Name"] == "Nytt Navn AS"


def test_an_invoice_backfill_posts_each_voucher_once_with_one_call_each(sandbox, worker_env, tmp_path,
                                                                        start_worker, r):
    write_integrations(tmp_path / "integrations.toml", sandbox, data_types=("customers", "projects", "invoices"),
                       acme={"extra": ['revenue_accounts = { hours = 3000, products = 3100, expenses = 3200 }',
                                       # the vouchers' calls only (their PDFs: tests/test_documents_e2e.py)
                                       "attach_invoices = false"]})
    start_worker()
    customers = seed_customers(sandbox.moment, "acme", 40)
    projects = seed_projects(sandbox.moment, "acme", customers, 20)
    seed_invoices(sandbox.moment, "acme", projects, customers, 120)
    backfill(worker_env, "--data-type", "customers")
    backfill(worker_env, "--data-type", "projects")
    wait_until(lambda: len(sandbox.sb1.documents(ACME, "projects")) == 20, 60, message="the projects")
    sandbox.sb1.reset_counters()
    sandbox.moment.requests.clear()
    backfill(worker_env, "--data-type", "invoices")
    wait_until(lambda: len(sandbox.sb1.documents(ACME, "journalentries")) == 120, 90, message="120 vouchers")
    # one post each, the page reads, and the company's VAT types and revenue accounts (about ten
    # calls however many invoices, each process caching them)
    assert sandbox.sb1.count_writes(ACME) == 120
    assert sb1_calls(sandbox) - 120 <= 15, sandbox.sb1.requests
    assert moment_calls(sandbox) / 120 <= 0.02, sandbox.moment.requests
    # once more: nothing posted twice, and nothing read one by one
    sandbox.sb1.reset_counters()
    backfill(worker_env, "--data-type", "invoices")
    wait_until(lambda: int(r.hget("msb1test:stats:acme", "invoices:already-posted") or 0) == 120, 60,
               message="120 already posted")
    assert len(sandbox.sb1.documents(ACME, "journalentries")) == 120
    assert sandbox.sb1.count_writes(ACME) == 0 and sb1_calls(sandbox) <= 10, sandbox.sb1.requests
