"""Customers end to end: a real Celery worker (subprocess) on a private Redis, the sandbox
APIs over real sockets, an SMTP sink and a Sentry stand-in."""
from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from conftest import API_KEYS, COMPANY_KEYS, ROOT, broker_state, wait_until
from conftest import publish_task as enqueue

from sandbox.moment import seed_customers

ACME = COMPANY_KEYS["acme"]
pytestmark = pytest.mark.slow




def cli(env, *args) -> str:
    out = subprocess.run([sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


def stat(r, integration, name):
    return int(r.hget(f"msb1test:stats:{integration}", f"customers:{name}") or 0)


def by_number(sandbox, key=ACME):
    found = {}
    for c in sandbox.sb1.customers(key):
        found.setdefault(c["CustomerNumber"], []).append(c)
    return found


def test_customers_arrive_with_all_fields(sandbox, worker, r):
    records = seed_customers(sandbox.moment, "acme", 3)
    for rec in records:
        enqueue("acme", rec["id"])
    wait_until(lambda: len(sandbox.sb1.customers(ACME)) == 3, 20, message="3 customers in the books")
    wait_until(lambda: stat(r, "acme", "created") == 3, 5, message="3 created")
    books = by_number(sandbox)
    nok = next(c["ID"] for c in sandbox.sb1.table(ACME, "currencycodes") if c["Code"] == "NOK")
    for rec in records:
        [c] = books[int(rec["customerNumber"])]
        info = c["Info"]
        assert info["Name"] == rec["name"]
        assert c["OrgNumber"] == rec["organizationNumber"]
        assert c["WebUrl"] == rec["website"]
        assert info["DefaultEmail"]["EmailAddress"] == rec["email"]
        assert info["DefaultPhone"]["Number"] == rec["phone"]
        faxes = [p for p in info["Phones"] if p["Type"] == 150103]
        assert [f["Number"] for f in faxes] == [rec["fax"]]
        addr = info["InvoiceAddress"]
        assert (addr["AddressLine1"], addr["PostalCode"], addr["City"], addr["CountryCode"]) == (
            rec["address"]["addressLine1"], rec["address"]["postalCode"], rec["address"]["city"], "NO")
        if rec["currencyCode"] == "NOK":
            assert c["CurrencyCodeID"] == nok
    # the other company's books are untouched
    assert sandbox.sb1.customers(COMPANY_KEYS["fjord"]) == []


def test_repeated_updates_leave_one_of_each_child(sandbox, worker, r):
    [rec] = seed_customers(sandbox.moment, "acme", 1)
    for i in range(10):
        sandbox.moment.update("acme", "customers", rec["id"], {
            "email": f"post{i}@example.no", "phone": f"+47 900 00 00{i}", "fax": f"+47 800 00 00{i}",
            "address": {**rec["address"], "addressLine1": f"Storgata {i}"}})
        enqueue("acme", rec["id"])
        wait_until(lambda: stat(r, "acme", "created") + stat(r, "acme", "updated") == i + 1, 20,
                   message=f"sync {i + 1}")
    [c] = sandbox.sb1.customers(ACME)
    info = c["Info"]
    assert len(info["Emails"]) == 1 and info["DefaultEmail"]["EmailAddress"] == "post9@example.no"
    phones = sorted((p["Type"], p["Number"]) for p in info["Phones"])
    assert phones == [(150101, "+47 900 00 009"), (150103, "+47 800 00 009")]
    assert len(info["Addresses"]) == 1 and info["InvoiceAddress"]["AddressLine1"] == "Storgata 9"


def test_unchanged_customer_is_not_written_again(sandbox, worker, r):
    [rec] = seed_customers(sandbox.moment, "acme", 1)
    enqueue("acme", rec["id"])
    wait_until(lambda: stat(r, "acme", "created") == 1, 20, message="created")
    writes = sandbox.sb1.count_writes(ACME)
    requests_before = sum(sandbox.sb1.requests.values())
    for _ in range(3):
        enqueue("acme", rec["id"])
    wait_until(lambda: stat(r, "acme", "unchanged") == 3, 20, message="3 unchanged")
    assert sandbox.sb1.count_writes(ACME) == writes == 1
    assert sum(sandbox.sb1.requests.values()) == requests_before   # not even a read
    # a real change is written
    sandbox.moment.update("acme", "customers", rec["id"], {"website": "https://ny.example.no"})
    enqueue("acme", rec["id"])
    wait_until(lambda: stat(r, "acme", "updated") == 1, 20, message="updated")
    assert sandbox.sb1.customers(ACME)[0]["WebUrl"] == "https://ny.example.no"


@pytest.mark.parametrize("bad_number,shown,reason,shape", [
    ("99999", "99999", "is outside the allowed range", "5 digits"),
    ("10001A", "'10001A'", "is not a number", "6 characters: letters and digits")])
def test_invalid_customer_number_one_email_dead_letter_no_retry(sandbox, smtp, sentry, start_worker, r,
                                                              worker_env, bad_number, shown, reason, shape):
    w = start_worker(MSB1_SENTRY_DSN=sentry.dsn)
    good, bad = seed_customers(sandbox.moment, "acme", 2)
    sandbox.moment.update("acme", "customers", bad["id"], {"customerNumber": bad_number})
    enqueue("acme", bad["id"])
    enqueue("acme", good["id"])
    wait_until(lambda: len(smtp.messages) == 1, 20, message="the failure email")
    wait_until(lambda: stat(r, "acme", "created") == 1, 20, message="the good customer")
    enqueue("acme", bad["id"])            # the same failure again: no second email
    wait_until(lambda: stat(r, "acme", "failed") == 2, 20, message="second failure")
    time.sleep(0.5)
    assert len(smtp.messages) == 1
    assert stat(r, "acme", "retried") == 0
    assert sandbox.sb1.count_writes(ACME) == 1
    [msg] = smtp.messages
    assert msg["To"] == "regnskap@acme.example"
    assert msg["Subject"] == f"Moment → SpareBank 1 Regnskap: Customer {bad_number} was not transferred"
    body = msg.get_content()
    assert f"customer {bad['name']} (customer number {bad_number})" in body
    assert f"customer number {shown} {reason}" in body and "between 100000 and 199999" in body
    assert "Change the customer number in Moment" in body
    assert API_KEYS["acme"] not in body
    # the dead letter is replayable and holds no personal data: the record by its Moment id (its
    # number is not a valid one), the refused number by its shape
    import json
    [raw] = r.hgetall("msb1test:dead:acme").values()
    letter = json.loads(raw)
    assert letter["record_id"] == bad["id"] and letter["data_type"] == "customers"
    assert letter["what"] == f"customer with Moment id {bad['id']}" and letter["failures"] == 2
    assert letter["error"].startswith(f"the customer number ({shape}) {reason}")
    assert bad["name"] not in raw and not re.search(rf"\b{bad_number}\b", raw)
    # Sentry got one event, tagged, without the name, email or keys
    wait_until(lambda: len(sentry.events()) == 1, 10, message="one Sentry event")
    raw_events = b"".join(sentry.envelopes).decode()
    for secret in (bad["name"], bad["email"], API_KEYS["acme"], "Bearer"):
        assert secret not in raw_events
    [event] = sentry.events()
    assert event["tags"]["integration"] == "acme" and event["tags"]["data_type"] == "customers"
    # nor does the worker's log: records are named by type and number only
    log = w.log()
    assert "customer 100001: created" in log and f"customer with Moment id {bad['id']}: not transferred" in log
    assert not re.search(rf"\b{bad_number}\b", log)
    for private in (bad["name"], bad["email"], good["name"], good["email"], good["phone"], API_KEYS["acme"]):
        assert private not in log
    # fixed in Moment, replayed: transferred, dead letter gone
    sandbox.moment.update("acme", "customers", bad["id"], {"customerNumber": "100999"})
    listing = cli(worker_env, "dead-letters")
    assert f"acme customers {bad['id']} (customer with Moment id {bad['id']}) failed 2x" in listing
    assert not re.search(rf"\b{bad_number}\b", listing)
    assert "queued 1 replay(s)" in cli(worker_env, "replay", "--integration", "acme")
    wait_until(lambda: stat(r, "acme", "created") == 2, 20, message="the fixed customer")
    wait_until(lambda: not r.hgetall("msb1test:dead:acme"), 5, message="dead letter cleared")
    assert 100999 in by_number(sandbox)


def test_429_with_retry_after_then_success(sandbox, worker, r):
    [rec] = seed_customers(sandbox.moment, "acme", 1)
    sandbox.sb1_faults.script("/api/biz/customers", 429, times=1, headers={"Retry-After": "1"}, method="POST")
    started = time.monotonic()
    enqueue("acme", rec["id"])
    wait_until(lambda: stat(r, "acme", "created") == 1, 20, message="created after 429")
    assert time.monotonic() - started >= 1.0          # Retry-After honoured
    assert stat(r, "acme", "retried") == 1
    assert len(sandbox.sb1.customers(ACME)) == 1


def test_three_5xx_then_success(sandbox, worker, r):
    [rec] = seed_customers(sandbox.moment, "acme", 1)
    sandbox.sb1_faults.script("/api/biz/customers", 503, times=3)
    enqueue("acme", rec["id"])
    wait_until(lambda: stat(r, "acme", "created") == 1, 30, message="created after three 503s")
    assert stat(r, "acme", "retried") == 3
    assert len(sandbox.sb1.customers(ACME)) == 1


def test_retries_exhausted_one_email_and_dead_letter(sandbox, smtp, worker, r):
    [rec] = seed_customers(sandbox.moment, "acme", 1)
    sandbox.sb1_faults.script("/api/biz/customers", 502, times=100)
    enqueue("acme", rec["id"])
    wait_until(lambda: len(smtp.messages) == 1, 30, message="the failure email")
    assert stat(r, "acme", "retried") == 3            # MSB1_RETRY_MAX_ATTEMPTS=4
    body = smtp.messages[0].get_content()
    assert "HTTP 502" in body and "gave up after 4 tries" in body
    assert r.hlen("msb1test:dead:acme") == 1
    time.sleep(1)
    assert len(smtp.messages) == 1


def test_many_tasks_share_one_token(sandbox, start_worker, r):
    records = seed_customers(sandbox.moment, "acme", 40) + seed_customers(sandbox.moment, "fjord", 10, start_number=150001)
    start_worker(concurrency=16)
    start_worker(concurrency=16)          # two worker processes share the token through Redis
    for rec in records[:40]:
        enqueue("acme", rec["id"])
    for rec in records[40:]:
        enqueue("fjord", rec["id"])
    wait_until(lambda: stat(r, "acme", "created") == 40 and stat(r, "fjord", "created") == 10, 30,
               message="50 customers")
    assert sandbox.sb1.token_requests == 1


def test_refused_token_is_refreshed_once(sandbox, worker, r):
    first, second = seed_customers(sandbox.moment, "acme", 2)
    enqueue("acme", first["id"])
    wait_until(lambda: stat(r, "acme", "created") == 1, 20, message="first")
    sandbox.sb1.revoke_tokens()
    enqueue("acme", second["id"])
    wait_until(lambda: stat(r, "acme", "created") == 2, 20, message="second after a 401")
    assert sandbox.sb1.token_requests == 2
    assert stat(r, "acme", "retried") == 0


def test_ignored_filter_never_updates_the_wrong_customer(sandbox, worker, r):
    records = seed_customers(sandbox.moment, "acme", 6)
    for rec in records[:5]:
        enqueue("acme", rec["id"])
    wait_until(lambda: stat(r, "acme", "created") == 5, 20, message="5 customers")
    before = {c["CustomerNumber"]: c for c in sandbox.sb1.customers(ACME)}
    r.delete("msb1test:state:acme:customers")      # forget what we know: find by number again
    sandbox.sb1.ignore_filters = True              # the platform now answers every filter with everything
    sandbox.moment.update("acme", "customers", records[2]["id"], {"name": "Endret Navn AS"})
    enqueue("acme", records[2]["id"])              # exists in the books → update exactly that one
    enqueue("acme", records[5]["id"])              # not in the books → create, touch nobody else
    wait_until(lambda: stat(r, "acme", "created") == 6 and stat(r, "acme", "updated") == 1, 20,
               message="one update, one create")
    after = {c["CustomerNumber"]: c for c in sandbox.sb1.customers(ACME)}
    assert len(sandbox.sb1.customers(ACME)) == 6
    changed = [n for n in before if after[n]["Info"]["Name"] != before[n]["Info"]["Name"]]
    assert changed == [int(records[2]["customerNumber"])]
    assert after[int(records[2]["customerNumber"])]["Info"]["Name"] == "Endret Navn AS"


def test_worker_killed_mid_run_every_customer_exactly_once(sandbox, start_worker, r):
    records = seed_customers(sandbox.moment, "acme", 200)
    sandbox.sb1_faults.latency = 0.02
    sandbox.moment_faults.latency = 0.02
    w = start_worker(concurrency=8)
    for rec in records:
        enqueue("acme", rec["id"])
    wait_until(lambda: len(sandbox.sb1.customers(ACME)) >= 40, 60, message="40 customers")
    w.kill()                                   # SIGKILL: no warm shutdown, nothing acked
    assert len(sandbox.sb1.customers(ACME)) < 200
    second = start_worker(concurrency=8)
    # what the dead worker held comes back after the visibility timeout; a message it had
    # taken off the list but not yet recorded as unacknowledged is lost (kombu), and the
    # safety-net poll finds that record again
    wait_until(lambda: r.llen("moment-sb1") == 0 and r.hlen("unacked") == 0, 120,
               message="the queue to drain", describe=lambda: broker_state(r, second))
    from worker.broker import app
    app.send_task("poll.integration", args=["acme", "customers"])
    wait_until(lambda: len(sandbox.sb1.customers(ACME)) >= 200, 60, message="200 customers",
               describe=lambda: f"{len(sandbox.sb1.customers(ACME))} in the books; "
                                + broker_state(r, second))
    time.sleep(2)                              # let redelivered tasks finish
    counts = {n: len(cs) for n, cs in by_number(sandbox).items()}
    assert len(counts) == 200 and set(counts.values()) == {1}
    assert r.hlen("msb1test:state:acme:customers") == 200


def test_a_worker_killed_holding_the_restore_lock_holds_up_recovery_only_briefly(
        sandbox, start_worker, worker_env, r):
    """Workers look for a dead worker's messages under one Redis lock (kombu's default
    expiry is 300 s). A worker killed while holding it must not hold up recovery for long."""
    from celery import Celery

    from worker.broker import celery_config
    from worker.config.settings import Settings
    settings = Settings.from_env(worker_env)
    records = seed_customers(sandbox.moment, "acme", 12)
    sandbox.sb1_faults.latency = 1.0               # tasks are mid-flight when the worker dies
    w = start_worker(concurrency=4)
    for rec in records:
        enqueue("acme", rec["id"])
    with Celery(config_source=celery_config(settings)).connection_for_read() as conn:
        channel = conn.default_channel
        wait_until(lambda: r.hlen(channel.unacked_key) == 4 and r.keys("msb1test:sb1-token:*"), 20,
                   message="4 tasks in flight, past the token")
        w.kill()
        # the lock exactly as the dead worker's kombu took it, expiry from the worker's config
        r.set(channel.unacked_mutex_key, "held-by-the-killed-worker", nx=True,
              ex=channel.unacked_mutex_expire)
        assert channel.unacked_mutex_expire == settings.restore_lock_timeout
    sandbox.sb1_faults.latency = 0
    start = time.monotonic()
    start_worker(concurrency=4)
    wait_until(lambda: len(sandbox.sb1.customers(ACME)) >= 12, 60, message="12 customers")
    # the lock expires, then the in-flight messages become visible again: not 300 s
    assert time.monotonic() - start < settings.restore_lock_timeout + settings.visibility_timeout + 15
    time.sleep(1)
    counts = {n: len(cs) for n, cs in by_number(sandbox).items()}
    assert len(counts) == 12 and set(counts.values()) == {1}


def test_failure_email_is_sent_later_when_the_mail_server_was_down(sandbox, smtp, worker, r):
    from sandbox.mail import Mailbox
    smtp.stop()                                        # the mail server is down
    [bad] = seed_customers(sandbox.moment, "acme", 1, start_number=5)
    enqueue("acme", bad["id"])
    key = "msb1test:dead:acme"
    wait_until(lambda: r.hlen(key) == 1, 20, message="the dead letter")
    import json
    assert json.loads(next(iter(r.hgetall(key).values())))["notified"] is False
    box = Mailbox(port=smtp.port)                      # back up
    try:
        from worker.broker import app
        app.send_task("poll.changes")                  # what beat runs every MSB1_POLL_INTERVAL
        wait_until(lambda: len(box.messages) == 1, 30, message="the late email")
        wait_until(lambda: json.loads(next(iter(r.hgetall(key).values())))["notified"], 10,
                   message="marked as emailed")
        assert "customer number 5 is outside the allowed range" in box.messages[0].get_content()
    finally:
        box.stop()


def test_eight_attempts_configured_eight_made_then_a_dead_letter(sandbox, smtp, start_worker, r):
    """Past Celery's own default of 3 retries: the settings decide, and the chain ends in
    a dead letter that shows as a failed task, with its queued mark cleared."""
    w = start_worker(MSB1_RETRY_MAX_ATTEMPTS=8, MSB1_RETRY_BASE_DELAY=0.05, MSB1_RETRY_MAX_DELAY=0.2)
    [rec] = seed_customers(sandbox.moment, "acme", 1)
    sandbox.moment_faults.script(f"/customers/{rec['id']}", 503, times=9)     # one more than allowed
    from worker.intake.producer import enqueue as produce
    assert produce("acme", "customers", rec["id"])
    wait_until(lambda: len(smtp.messages) == 1, 30, message="the failure email")
    time.sleep(1)
    assert sandbox.moment_faults.injected[503] == 8                # eight tries, not four, not nine
    assert (stat(r, "acme", "retried"), stat(r, "acme", "failed")) == (7, 1)
    assert "gave up after 8 tries" in smtp.messages[0].get_content() and len(smtp.messages) == 1
    assert r.hexists("msb1test:dead:acme", f"customers:{rec['id']}")
    assert "raised expected: DeadLettered" in w.log()                # failed in Celery's (and Flower's) eyes
    assert not r.exists(f"msb1test:pending:acme:customers:{rec['id']}")
    # the next change is not swallowed by a stale "queued" mark: it is queued and written
    sandbox.moment_faults.reset()
    sandbox.moment.update("acme", "customers", rec["id"], {"email": "ny@example.no"})
    assert produce("acme", "customers", rec["id"])
    wait_until(lambda: stat(r, "acme", "created") == 1, 20, message="the customer after the fix")
    assert not r.hexists("msb1test:dead:acme", f"customers:{rec['id']}")
