"""The change feed end to end: coalescing of bursts, the safety-net poll and its cursor,
and celery beat started twice. Real worker, real beat processes, real Redis and sandbox."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests
from conftest import COMPANY_KEYS, ROOT, wait_until

from sandbox.moment import seed_customers

ACME = COMPANY_KEYS["acme"]
pytestmark = pytest.mark.slow


def stat(r, name, integration="acme"):
    return int(r.hget(f"msb1test:stats:{integration}", f"customers:{name}") or 0)


def send_task(name, *args):
    from worker.broker import app
    app.send_task(name, args=list(args))


def customer_writes(sandbox, sb1_id):
    return [w for w in sandbox.writes_log if w[1] == sb1_id]


@pytest.fixture
def write_log(sandbox):
    """Every customer write the sandbox SpareBank 1 accepts: (time, ID, WebUrl)."""
    sandbox.writes_log = []
    sandbox.sb1.write_listeners.append(
        lambda key, method, route, doc: route == "customers" and sandbox.writes_log.append(
            (time.time(), doc["ID"], doc.get("WebUrl"))))
    return sandbox.writes_log


def test_burst_of_webhooks_gives_few_writes_and_the_latest_state(sandbox, write_log, worker,
                                                              receiver, r):
    sandbox.sb1_faults.latency = sandbox.moment_faults.latency = 0.02
    [rec] = seed_customers(sandbox.moment, "acme", 1)
    session = requests.Session()
    hook = {"event": "UPDATE", "customer": {"id": rec["id"], "customerNumber": rec["customerNumber"]}}
    assert session.post(receiver, json=hook, timeout=5).status_code == 202
    wait_until(lambda: stat(r, "created") == 1, 20, message="created")
    [(_, sb1_id, _)] = write_log
    started = time.monotonic()
    answers = []
    for i in range(20):                      # 20 changes, each with its webhook, within a second
        sandbox.moment.update("acme", "customers", rec["id"], {"website": f"https://v{i}.example.no"})
        answers.append(session.post(receiver, json=hook, timeout=5).json()["status"])
        time.sleep(0.045)
    assert time.monotonic() - started < 1.5          # a burst, even on a busy machine
    assert set(answers) <= {"queued", "coalesced"} and answers.count("queued") <= 2 + 6
    wait_until(lambda: sandbox.sb1.customers(ACME)[0]["WebUrl"] == "https://v19.example.no", 20,
               message="the latest state in the books")
    time.sleep(2.5)                          # nothing more may arrive afterwards
    updates = customer_writes(sandbox, sb1_id)[1:]
    # the record's bucket: 2 syncs at once, then one per MSB1_COALESCE_WINDOW (0.25 s) while the
    # burst lasts (under 1.5 s): far fewer writes than the 20 changes
    assert 1 <= len(updates) <= 2 + 6, updates
    assert updates[-1][2] == "https://v19.example.no"
    assert sandbox.sb1.customers(ACME)[0]["WebUrl"] == "https://v19.example.no"


def test_duplicate_tasks_in_any_order_end_with_the_latest_state(sandbox, write_log, start_worker, r):
    start_worker(concurrency=8)
    [rec] = seed_customers(sandbox.moment, "acme", 1)
    for i in range(15):                      # raw tasks, no coalescing: 15 concurrent syncs
        sandbox.moment.update("acme", "customers", rec["id"], {"website": f"https://w{i}.example.no"})
        send_task("sync.customer", "acme", rec["id"])
    wait_until(lambda: sum(stat(r, k) for k in ("created", "updated", "unchanged", "stale")) == 15, 30,
               message="15 syncs")
    [c] = sandbox.sb1.customers(ACME)
    assert c["WebUrl"] == "https://w14.example.no"
    urls = [w[2] for w in write_log]
    assert urls == sorted(urls, key=lambda u: int(u.split("//w")[1].split(".")[0]))   # never backwards


def test_an_older_read_never_overwrites_a_newer_transfer(sandbox, write_log, worker, r):
    [rec] = seed_customers(sandbox.moment, "acme", 1)
    send_task("sync.customer", "acme", rec["id"])
    wait_until(lambda: stat(r, "created") == 1, 20, message="created")
    key = "msb1test:state:acme:customers"
    state = json.loads(r.hget(key, rec["id"]))
    state["modified"] = "2099-01-01T00:00:00+00:00"      # the books hold a newer version than Moment shows
    state["fingerprint"] = "x"
    r.hset(key, rec["id"], json.dumps(state))
    sandbox.moment.update("acme", "customers", rec["id"], {"website": "https://old.example.no"})
    send_task("sync.customer", "acme", rec["id"])
    wait_until(lambda: stat(r, "stale") == 1, 20, message="a stale read detected")
    assert len(write_log) == 1


def run_poll():
    send_task("poll.integration", "acme", "customers")


def test_poll_queues_exactly_the_changed_records_and_its_cursor_survives_a_restart(sandbox, start_worker, r):
    records = seed_customers(sandbox.moment, "acme", 6)
    env = {"MSB1_POLL_INTERVAL": "2", "MSB1_POLL_OVERLAP": "0"}
    w = start_worker(**env)
    for rec in records:
        send_task("sync.customer", "acme", rec["id"])
    wait_until(lambda: stat(r, "created") == 6, 20, message="6 created")
    run_poll()                                 # first poll: everything is in the books already
    wait_until(lambda: r.get("msb1test:cursor:acme:customers"), 10, message="a cursor")
    assert stat(r, "updated") == stat(r, "unchanged") == 0
    time.sleep(1.2)                            # past the poll guard (half the interval)
    for rec in records[1:3]:
        sandbox.moment.update("acme", "customers", rec["id"], {"email": "ny@example.no"})
    run_poll()
    wait_until(lambda: stat(r, "updated") == 2, 20, message="the 2 changed customers")
    time.sleep(0.5)
    assert stat(r, "unchanged") == 0           # nothing else was queued
    cursor = r.get("msb1test:cursor:acme:customers")
    w.kill()                                   # the worker dies; Redis keeps the cursor
    sandbox.moment.update("acme", "customers", records[4]["id"], {"name": "Etter Omstart AS"})
    time.sleep(1.2)
    start_worker(**env)
    assert r.get("msb1test:cursor:acme:customers") == cursor
    run_poll()                                 # overlap 0: only the cursor can find this change
    wait_until(lambda: stat(r, "updated") == 3, 20, message="the change made while it was down")
    assert stat(r, "unchanged") == 0
    assert r.get("msb1test:cursor:acme:customers") > cursor
    names = {c["CustomerNumber"]: c["Info"]["Name"] for c in sandbox.sb1.customers(ACME)}
    assert names[int(records[4]["customerNumber"])] == "Etter Omstart AS"


def test_a_lost_message_is_found_again_by_a_later_poll(sandbox, start_worker, r):
    """kombu takes a message off the Redis list before it records it as unacknowledged, so
    a worker killed in between loses it. The poll's cursor waits for such a change."""
    start_worker(MSB1_POLL_INTERVAL="2", MSB1_POLL_OVERLAP="0")
    cursor_key = "msb1test:cursor:acme:customers"
    run_poll()
    first = wait_until(lambda: r.get(cursor_key), 10, message="a first cursor")
    time.sleep(1.2)                            # past the poll guard (half the interval)
    [lost] = seed_customers(sandbox.moment, "acme", 1)
    # queued as the producer does (the mark, then the message), and the message is lost
    r.set(f"msb1test:pending:acme:customers:{lost['id']}", f"{time.time():.6f}", ex=600)
    run_poll()                                 # the mark is fresh: the poll trusts it
    held = wait_until(lambda: r.get(cursor_key) != first and r.get(cursor_key), 10,
                      message="the second poll")
    assert stat(r, "created") == 0
    assert held <= lost["lastModifiedDate"]  # not past the open change
    time.sleep(2.2)                            # the mark is now older than a poll interval
    run_poll()                                 # overlap 0: only the held cursor finds it
    wait_until(lambda: stat(r, "created") == 1, 20, message="the lost customer")
    assert [c["CustomerNumber"] for c in sandbox.sb1.customers(ACME)] == [int(lost["customerNumber"])]
    time.sleep(1.2)
    run_poll()                                 # finished now: the cursor moves on
    wait_until(lambda: r.get(cursor_key) > lost["lastModifiedDate"], 10,
               message="the cursor past the finished change")
    assert stat(r, "created") == 1 and stat(r, "unchanged") == 0


def test_a_poll_during_a_retry_wait_does_not_start_a_second_sync(sandbox, start_worker, r):
    start_worker(MSB1_POLL_INTERVAL="2", MSB1_POLL_OVERLAP="60", MSB1_RETRY_BASE_DELAY="4",
                 MSB1_RETRY_MAX_DELAY="4")
    [rec] = seed_customers(sandbox.moment, "acme", 1)
    sandbox.sb1_faults.script("/api/biz/customers", 503, times=1, method="POST")
    send_task("sync.customer", "acme", rec["id"])
    wait_until(lambda: stat(r, "retried") == 1, 20, message="the first try to fail")
    run_poll()                                 # the retry is due in 2-4 s: it counts as queued
    wait_until(lambda: stat(r, "created") == 1, 20, message="the retry")
    time.sleep(4.5)                            # past the latest the retry could have been due
    assert stat(r, "unchanged") == 0 and stat(r, "retried") == 1
    assert len(sandbox.sb1.customers(ACME)) == 1


def test_two_beats_do_not_double_the_work(sandbox, start_worker, worker_env, r, tmp_path):
    from datetime import datetime, timezone
    before = datetime.now(timezone.utc)
    records = seed_customers(sandbox.moment, "acme", 3)
    # the first poll starts here, however long the worker and the beats take to start (without
    # a cursor it would look back only MSB1_POLL_OVERLAP from its own start)
    r.set("msb1test:cursor:acme:customers", before.isoformat(timespec="microseconds"))
    env = dict(worker_env, MSB1_POLL_INTERVAL="1", MSB1_POLL_OVERLAP="5")
    start_worker(MSB1_POLL_INTERVAL="1", MSB1_POLL_OVERLAP="5")
    beats, logs = [], []
    for n in range(2):
        logs.append(tmp_path / f"beat{n}.log")
        beats.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.app", "beat", "--loglevel", "INFO",
             "--schedule", str(tmp_path / f"beat{n}.db")],
            cwd=ROOT, env=env, stdout=open(logs[-1], "wb"), stderr=subprocess.STDOUT))
    try:
        wait_until(lambda: stat(r, "created") == 3, 30, message="the poll finds the 3 new customers")
        sandbox.moment.update("acme", "customers", records[0]["id"], {"website": "https://en-gang.example.no"})
        wait_until(lambda: stat(r, "updated") == 1, 30, message="the change found by the poll")
        time.sleep(4)
        # beat's health signal: the last poll ran within two intervals
        health = subprocess.run([sys.executable, "-m", "worker.cli", "health", "beat"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert health.returncode == 0 and health.stdout.startswith("beat ok: last poll"), health.stderr
        # counted while both run: once one stops, the other may rightly take over
        sends = [log.read_text().count("Sending due task poll-moment") for log in logs]
    finally:
        for b in beats:
            b.terminate()
            b.wait(10)
    assert min(sends) == 0 and max(sends) >= 3, sends       # one beat works, the other waits
    assert stat(r, "created") == 3 and stat(r, "updated") == 1 and stat(r, "unchanged") == 0


def queued(r):
    return [(json.loads(m)["headers"]["task"], json.loads(m)["headers"]["argsrepr"]) for m in r.lrange("moment-sb1", 0, -1)]


def test_producer_api_and_cli_enqueue_ids_only(r, worker_env):
    from worker.intake.producer import UnknownDataType, enqueue
    assert enqueue("acme", "customers", 1000001) is not None
    assert enqueue("acme", "customers", 1000001) is None          # already queued: folded
    with pytest.raises(UnknownDataType, match="unknown data type 'expenses'"):
        enqueue("acme", "expenses", 1)
    out = subprocess.run([sys.executable, "-m", "worker.cli", "enqueue", "acme", "customers", "1000001", "1000002",
                          "1000003"], cwd=ROOT, env=worker_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "queued 2 customers sync(s) for acme (1 already queued)"
    assert sorted(queued(r)) == [("sync.customer", f"['acme', {n}]") for n in (1000001, 1000002, 1000003)]
    refused = subprocess.run([sys.executable, "-m", "worker.cli", "enqueue", "acme", "projects", "5"], cwd=ROOT,
                             env=worker_env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "acme does not transfer projects" in refused.stderr


def test_status_shows_queue_dead_letters_and_cursor(r, worker_env):
    from worker.intake.producer import enqueue
    enqueue("acme", "customers", 1000001)
    r.hset("msb1test:dead:acme", "customers:5", json.dumps({
        "integration_id": "acme", "data_type": "customers", "record_id": 5, "what": "customer 99",
        "error": "customer number 99 is outside the allowed range", "kind": "RecordInvalid"}))
    r.set("msb1test:cursor:acme:customers", "2026-11-25T12:00:00.000000+00:00")
    out = subprocess.run([sys.executable, "-m", "worker.cli", "status", "--json"], cwd=ROOT, env=worker_env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["queued"] == 1
    assert status["integrations"]["acme"]["dead_letters"] == 1
    assert status["integrations"]["acme"]["poll_cursor"] == {"customers": "2026-11-25T12:00:00.000000+00:00"}
    assert status["integrations"]["fjord"]["dead_letters"] == 0


def test_a_malformed_record_in_moments_list_does_not_stop_the_poll(sandbox, start_worker, r):
    """One broken record among good ones: the good ones are queued, the broken one is
    skipped (no id) or queued (an id, but no readable time), and the poll goes on."""
    w = start_worker(MSB1_POLL_INTERVAL="2", MSB1_POLL_OVERLAP="0")
    good = seed_customers(sandbox.moment, "acme", 3)
    sandbox.moment.insert_raw("acme", "customers", {"id": "abc", "name": "Ødelagt AS", "lastModifiedDate": "i går"})
    sandbox.moment.insert_raw("acme", "customers", {"id": True, "customerNumber": "100099"})
    odd = sandbox.moment.insert_raw("acme", "customers", {"id": 987654, "name": "Uten Tid AS",
                                                          "customerNumber": "100098", "lastModifiedDate": "gestern"})
    from datetime import datetime, timedelta, timezone
    cursor_key = "msb1test:cursor:acme:customers"
    before = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat(timespec="microseconds")
    r.set(cursor_key, before)
    run_poll()
    wait_until(lambda: stat(r, "created") == 3, 20, message="the three good customers")
    wait_until(lambda: r.hexists("msb1test:dead:acme", f"customers:{odd}"), 20,
               message="the record with an unreadable time, fetched and refused")
    assert w.log().count("has no usable id; skipped") == 2 and "Ødelagt" not in w.log()
    assert r.get(cursor_key) == before                              # not past what it could not read
    time.sleep(1.2)
    sandbox.moment.update("acme", "customers", good[0]["id"], {"email": "ny@example.no"})
    run_poll()                                                       # the next poll runs, too
    wait_until(lambda: stat(r, "updated") == 1, 20, message="a change after the broken records")


def test_a_page_moment_cannot_serve_is_retried_not_the_end(sandbox, start_worker, r):
    w = start_worker(MSB1_POLL_INTERVAL="2", MSB1_POLL_OVERLAP="0")
    from datetime import datetime, timedelta, timezone
    r.set("msb1test:cursor:acme:customers",
          (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat(timespec="microseconds"))
    seed_customers(sandbox.moment, "acme", 2)
    # a 200 whose body is no page at all, then a 502: neither ends the list as if it were empty
    sandbox.moment_faults.script("/api/1.0/companies/acme/customers", 200, times=1, method="GET")
    sandbox.moment_faults.script("/api/1.0/companies/acme/customers", 502, times=1, method="GET")
    run_poll()
    wait_until(lambda: stat(r, "created") == 2, 20, message="both customers after the retried page",
               describe=lambda: w.log()[-2000:])
    assert "page 1 cannot be read" in w.log()


def test_backfill_retries_a_failing_page_and_resumes_where_it_stopped(sandbox, worker_env, start_worker, r):
    start_worker()
    seed_customers(sandbox.moment, "acme", 10)
    # page 3 of the list fails, more often than a page is tried
    sandbox.moment_faults.script("/api/1.0/companies/acme/customers", 503, times=99, query_contains="page=3&")

    def backfill():
        return subprocess.run([sys.executable, "-m", "worker.cli", "backfill", "acme", "--page-size", "3"],
                              cwd=ROOT, env=worker_env, capture_output=True, text=True, timeout=60)
    first = backfill()
    assert first.returncode == 1 and "Traceback" not in first.stderr
    assert first.stderr.count("page 3: Moment GET /api/1.0/companies/acme/customers: HTTP 503; trying again") == 3
    assert first.stderr.rstrip().endswith("Error: stopped at page 3: Moment GET /api/1.0/companies/acme/customers: "
                                          "HTTP 503 (after 4 tries). Run the same command again to resume there.")
    assert first.stdout.startswith("queued 6 customers sync(s) for acme from 2 page(s)")
    sandbox.moment_faults.reset()                          # Moment is well again
    second = backfill()
    assert second.returncode == 0, second.stderr
    assert "resuming where the last run stopped: page 2 again, then on" in second.stderr
    wait_until(lambda: len(sandbox.sb1.customers(ACME)) == 10, 30, message="all ten in the books")
    numbers = [c["CustomerNumber"] for c in sandbox.sb1.customers(ACME)]
    assert sorted(numbers) == list(range(100001, 100011))      # each once
    third = backfill()                                     # a finished backfill starts afresh
    assert "resuming" not in third.stderr and third.returncode == 0


def test_beat_health_fails_when_the_poll_has_not_run_lately(r, worker_env):
    def health(*extra):
        return subprocess.run([sys.executable, "-m", "worker.cli", "health", "beat", *extra], cwd=ROOT,
                              env=worker_env, capture_output=True, text=True, timeout=60)
    never = health()
    assert never.returncode == 1 and "beat has not polled yet" in never.stderr
    import re
    r.set("msb1test:last-poll", f"{time.time() - 100:.3f}")
    stale = health("--max-age", "60")
    assert stale.returncode == 1 and re.search(r"beat's last poll was 10\ds ago \(more than 60s\)", stale.stderr)
    assert health("--max-age", "200").returncode == 0
