"""Live before bulk, company by company (worker.store.lanes), with a real worker: a live change
overtakes a big backfill, a second company's backfill is not held up by the first's, and a
record in a backfill that also changes live is written once, promptly."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import COMPANY_KEYS, ROOT, wait_until

from sandbox.moment import seed_customers

pytestmark = pytest.mark.slow


def in_books(sandbox, company: str) -> dict[int, dict]:
    return {c["CustomerNumber"]: c for c in sandbox.sb1.customers(COMPANY_KEYS[company])}


def test_live_overtakes_bulk_and_companies_take_turns_in_bulk(sandbox, start_worker, worker_env, r):
    from worker.intake.producer import enqueue, enqueue_bulk
    sandbox.moment_faults.latency = sandbox.sb1_faults.latency = 0.02
    acme = seed_customers(sandbox.moment, "acme", 400)
    fjord = seed_customers(sandbox.moment, "fjord", 41, start_number=150001)
    enqueue_bulk("acme", "customers", [c["id"] for c in acme])           # 400 waiting in bulk
    assert r.llen("moment-sb1-bulk") == 200 and r.llen("msb1test:bulk:acme") == 200   # the queue is kept short
    start_worker(concurrency=4)
    wait_until(lambda: len(in_books(sandbox, "acme")) >= 20, 30, message="the backfill under way")
    # fjord's own backfill arrives behind acme's 380 waiting: it gets turns, not a place at the end
    enqueue_bulk("fjord", "customers", [c["id"] for c in fjord[:40]])
    # and a live change of fjord goes before all of it: it overtakes the 200 bulk syncs on the
    # queue (only those already running, 4 threads' worth, may finish meanwhile), however slow
    # the machine is
    acme_before = len(in_books(sandbox, "acme"))
    enqueue("fjord", "customers", fjord[40]["id"])
    wait_until(lambda: 150041 in in_books(sandbox, "fjord"), 10, 0.01, message="fjord's live change")
    acme_then = len(in_books(sandbox, "acme"))
    assert acme_then - acme_before <= 20, f"{acme_then - acme_before} bulk syncs went before the live change"
    assert acme_then < 300, "the backfill was nearly done: the test proves nothing"
    wait_until(lambda: len(in_books(sandbox, "fjord")) == 41, 60, message="fjord's backfill")
    acme_when_fjord_done = len(in_books(sandbox, "acme"))
    assert acme_when_fjord_done < 330, (f"fjord's 40 waited for acme's backfill: acme had {acme_when_fjord_done} "
                                        "of 400 when fjord was done")
    wait_until(lambda: len(in_books(sandbox, "acme")) == 400, 90, message="acme's backfill")
    out = subprocess.run([sys.executable, "-m", "worker.cli", "status", "--json"], cwd=ROOT, env=worker_env,
                         capture_output=True, text=True, timeout=60)
    import json
    lanes = json.loads(out.stdout)["integrations"]["acme"]["lanes"]
    assert lanes["bulk"]["waiting"] == 0 and lanes["bulk"]["running"] == 0
    assert lanes["bulk"]["per_second"] > 0


def test_a_backfilled_record_that_changes_live_is_written_once_promptly(sandbox, start_worker, r):
    from worker.intake.producer import enqueue, enqueue_bulk
    sandbox.sb1_faults.latency = 0.02
    acme = seed_customers(sandbox.moment, "acme", 300)
    last = acme[-1]
    enqueue_bulk("acme", "customers", [c["id"] for c in acme])
    start_worker(concurrency=4)
    wait_until(lambda: len(in_books(sandbox, "acme")) >= 10, 30, message="the backfill under way")
    sandbox.moment.update("acme", "customers", last["id"], {"name": "Endret AS"})
    before = len(in_books(sandbox, "acme"))
    enqueue("acme", "customers", last["id"])
    number = int(last["customerNumber"])
    wait_until(lambda: in_books(sandbox, "acme").get(number, {}).get("Info", {}).get("Name") == "Endret AS",
               10, 0.01, message="the live change")
    # promptly: ahead of the backfill's queued syncs (only those already running may finish first)
    assert len(in_books(sandbox, "acme")) - before <= 20
    wait_until(lambda: len(in_books(sandbox, "acme")) == 300, 90, message="the backfill")
    wait_until(lambda: int(r.hget("msb1test:stats:acme", "customers:unchanged") or 0) == 1, 10,
               message="the record's bulk sync, finding it in the books already")
    assert int(r.hget("msb1test:stats:acme", "customers:created") or 0) == 300
    assert int(r.hget("msb1test:stats:acme", "customers:updated") or 0) == 0     # written once: no second write
