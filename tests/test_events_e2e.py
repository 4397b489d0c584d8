"""Moment stays master in the books (issue 26, item 4), with real parts: the sandbox's event
plans sending signed webhooks after every write, the receiver (a subprocess), a Celery
worker, ``moment-sb1 events subscribe`` as a command, the SMTP sink."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests
from conftest import COMPANY_KEYS, ROOT, wait_until, write_integrations
from conftest import publish_task as enqueue

from sandbox.moment import seed_customers
from worker.config.integrations import load_integrations
from worker.intake.events import sign, signing_key

ACME = COMPANY_KEYS["acme"]
FJORD = COMPANY_KEYS["fjord"]


@pytest.fixture
def norwegian(sandbox, worker_env, tmp_path):
    """acme without a language setting (Norwegian), fjord in English."""
    write_integrations(tmp_path / "integrations.toml", sandbox, acme={"language": None})


@pytest.fixture
def events_url(receiver):
    return receiver.split("/webhooks/")[0] + "/sb1/events"


def cli(env: dict, events_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "MSB1_EVENTS_URL": events_url}, timeout=60)


def key_of(worker_env, name: str = "acme") -> str:
    return signing_key(load_integrations(worker_env["MSB1_INTEGRATIONS_FILE"])[name])


def post_event(events_url: str, body: dict, key: str | None, integration: str = "acme", t: int | None = None,
               header: str | None = None) -> requests.Response:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if header is not None or key is not None:
        headers["Softrig-Signature"] = header if header is not None else sign(key, raw, t)
    return requests.post(f"{events_url}/{integration}", data=raw, headers=headers, timeout=5)


def event(entity_id: int, event_type: str = "Update", company: str = ACME) -> dict:
    return {"EventType": event_type, "EntityName": "Customer", "EntityID": entity_id, "Entity": None,
            "CompanyKey": company, "MessageID": "m-1", "TimeStamp": "2026-12-06T12:00:00Z"}


def queued(r) -> int:
    return r.llen("moment-sb1") + len(r.keys("msb1test:event-pending:*"))


def in_books(sandbox, sb1_id: int) -> dict | None:
    return next((c for c in sandbox.sb1.customers(ACME) if c["ID"] == sb1_id), None)


def transferred(r, record_id: int) -> int:
    raw = r.hget("msb1test:state:acme:customers", str(record_id))
    return json.loads(raw)["sb1_id"] if raw else 0


def test_a_bad_or_old_signature_is_refused_and_nothing_is_queued(sandbox, worker_env, events_url, r):
    r.hset("msb1test:owner:acme:customers", "5001", "77")      # a record "we" wrote
    key = key_of(worker_env)
    good = post_event(events_url, event(5001), key)
    assert good.status_code == 202 and good.json()["status"] == "queued"
    r.flushdb()
    r.hset("msb1test:owner:acme:customers", "5001", "77")
    refused = {
        "wrong key": post_event(events_url, event(5001), "f" * 64),
        "fjord's key": post_event(events_url, event(5001), key_of(worker_env, "fjord")),
        "old": post_event(events_url, event(5001), key, t=int(time.time()) - 301),
        "future": post_event(events_url, event(5001), key, t=int(time.time()) + 301),
        "no header": post_event(events_url, event(5001), None),
        "garbled": post_event(events_url, event(5001), None, header="v1=abc"),
        "unknown integration": post_event(events_url, event(5001), key, integration="nosuch"),
    }
    assert {name: resp.status_code for name, resp in refused.items()} == {name: 401 for name in refused}
    # a body changed after signing: the signature no longer matches
    raw = json.dumps(event(5001)).encode()
    header = sign(key, raw)
    tampered = requests.post(f"{events_url}/acme", data=raw.replace(b"5001", b"5002"), timeout=5,
                             headers={"Content-Type": "application/json", "Softrig-Signature": header})
    assert tampered.status_code == 401
    # signed, but for another company, or not an event
    assert post_event(events_url, event(5001, company=FJORD), key).status_code == 400
    assert post_event(events_url, {"EntityName": "Customer"}, key).status_code == 400
    assert queued(r) == 0, "nothing may be queued on a refused event"


def test_an_event_for_a_record_the_integration_did_not_write_is_ignored(sandbox, worker_env, events_url, r):
    key = key_of(worker_env)
    resp = post_event(events_url, event(424242), key)
    assert resp.status_code == 202 and resp.json() == {"status": "ignored",
                                                       "reason": "a record the integration did not write"}
    other = post_event(events_url, {**event(1), "EntityName": "SupplierInvoice"}, key)
    assert other.status_code == 202 and other.json()["status"] == "ignored"
    assert queued(r) == 0


@pytest.mark.slow
def test_a_number_changed_in_the_books_is_written_back_once_and_told_once(
        sandbox, smtp, norwegian, worker_env, events_url, start_worker, r):
    start_worker()
    first = cli(worker_env, events_url, "events", "subscribe", "acme")
    again = cli(worker_env, events_url, "events", "subscribe", "--all")
    assert first.returncode == 0 and "created" in first.stdout, first.stdout + first.stderr
    assert again.returncode == 0 and "brought up to date" in again.stdout, again.stdout + again.stderr
    plans = sandbox.sb1.event_plans.plans[ACME.lower()]
    assert len(plans) == 1, "subscribing twice must leave one plan"
    [plan] = plans.values()
    assert plan["ModelFilter"] == "Customer,Project" and plan["OperationFilter"] == "CUD"
    assert [s["Endpoint"] for s in plan["Subscribers"]] == [f"{events_url}/acme"]
    status = cli(worker_env, events_url, "status", "--integration", "acme")
    assert f"event plan {plan['ID']} since" in status.stdout, status.stdout + status.stderr

    [rec] = seed_customers(sandbox.moment, "acme", 1)
    enqueue("acme", rec["id"])
    wait_until(lambda: transferred(r, rec["id"]), 20, message="the customer in the books")
    sb1_id = transferred(r, rec["id"])
    sandbox.sb1.event_plans.drain()
    wait_until(lambda: not r.keys("msb1test:event-pending:*") and r.llen("moment-sb1") == 0, 10,
               message="our own create's event checked")
    assert len(smtp.messages) == 0, "our own write is no change made in the books"

    writes = sandbox.sb1.count_writes(ACME, "customers")
    # a person changes the number in the books
    sandbox.sb1.update(ACME, "customers", sb1_id, {"CustomerNumber": 199999}, user="a person")
    wait_until(lambda: str(in_books(sandbox, sb1_id)["CustomerNumber"]) == rec["customerNumber"], 20,
               message="Moment's number written back")
    wait_until(lambda: len(smtp.messages) == 1, 20, message="the email")
    # the write-back's own event comes back, is checked, and finds the books equal
    sandbox.sb1.event_plans.drain()
    wait_until(lambda: not r.keys("msb1test:event-pending:*") and r.llen("moment-sb1") == 0, 10,
               message="the write-back's event checked")
    time.sleep(1.5)
    assert sandbox.sb1.count_writes(ACME, "customers") == writes + 2, "the person's write and one write-back"
    assert len(smtp.messages) == 1
    # the same person tries again a minute later: written back again, but no second email in one burst
    sandbox.sb1.update(ACME, "customers", sb1_id, {"CustomerNumber": 177777}, user="a person")
    wait_until(lambda: sandbox.sb1.count_writes(ACME, "customers") == writes + 4, 20, message="the second write-back")
    sandbox.sb1.event_plans.drain()
    wait_until(lambda: not r.keys("msb1test:event-pending:*") and r.llen("moment-sb1") == 0, 10,
               message="the write-back's event checked")
    time.sleep(1.5)
    assert str(in_books(sandbox, sb1_id)["CustomerNumber"]) == rec["customerNumber"]
    assert sandbox.sb1.count_writes(ACME, "customers") == writes + 4, "no write-back loops"
    assert len(smtp.messages) == 1, "one email per record and burst of changes"
    [msg] = smtp.messages
    assert msg["To"] == "regnskap@acme.example"
    assert msg["Subject"] == f"Moment → SpareBank 1 Regnskap: Kunde {rec['customerNumber']} ble endret i " \
                             "SpareBank 1 Regnskap"
    body = msg.get_content()
    assert f"Noen endret «kundenummer» for kunde {rec['name']} (kundenummer {rec['customerNumber']})" in body
    assert "Gjør endringer i kunder i Moment" in body
    statuses = {d["status"] for d in sandbox.sb1.event_plans.deliveries}
    assert statuses == {202}, sandbox.sb1.event_plans.deliveries

    # a customer made by hand in the books: its event is ignored, nothing written
    before = sandbox.sb1.count_writes(ACME, "customers")
    sandbox.sb1.create(ACME, "customers", {"CustomerNumber": 188888, "Info": {"Name": "Laget for hånd AS"}})
    sandbox.sb1.event_plans.drain()
    time.sleep(1)
    assert sandbox.sb1.count_writes(ACME, "customers") == before + 1 and len(smtp.messages) == 1

    # deleted in the books: reported once, not re-created (docs/architecture.md says why), no dead letter
    r.delete(f"msb1test:event-told:acme:customers:{rec['id']}")
    before = sandbox.sb1.count_writes(ACME, "customers")
    sandbox.sb1.delete(ACME, "customers", sb1_id)
    wait_until(lambda: len(smtp.messages) == 2, 20, message="the delete's email")
    assert smtp.messages[1]["Subject"] == (f"Moment → SpareBank 1 Regnskap: Kunde {rec['customerNumber']} ble "
                                           "slettet i SpareBank 1 Regnskap")
    assert "men kunden finnes fortsatt i Moment" in smtp.messages[1].get_content()
    time.sleep(1)
    assert sandbox.sb1.count_writes(ACME, "customers") == before + 1 and r.hlen("msb1test:dead:acme") == 0
    # saved again in Moment: created anew
    sandbox.moment.update("acme", "customers", rec["id"], {"name": rec["name"] + " ny"})
    enqueue("acme", rec["id"])
    wait_until(lambda: transferred(r, rec["id"]) not in (0, sb1_id), 20, message="created anew")
    assert str(in_books(sandbox, transferred(r, rec["id"]))["CustomerNumber"]) == rec["customerNumber"]
    assert len(smtp.messages) == 2


def test_a_company_without_event_plans_is_told_the_reconciliation_repairs(sandbox, worker_env, events_url, r):
    sandbox.sb1.event_plans.refuse(FJORD)
    out = cli(worker_env, events_url, "events", "subscribe", "fjord")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "fjord: event plans are not allowed for this company: the nightly reconciliation" in out.stdout
    status = cli(worker_env, events_url, "status", "--integration", "fjord")
    assert "event plans are not allowed for this company" in status.stdout
    no_url = subprocess.run([sys.executable, "-m", "worker.cli", "events", "subscribe", "--all"], cwd=ROOT,
                            capture_output=True, text=True, env=worker_env, timeout=60)
    assert no_url.returncode == 1 and "MSB1_EVENTS_URL is not set" in no_url.stderr


def test_a_record_is_written_back_at_most_three_times_an_hour(sandbox, worker_env, r):
    """Books that differ again after every write-back (a field the platform keeps its own way)
    would loop: the fourth write-back within the hour is held, with a warning."""
    from tasks.events import WRITE_BACKS_PER_HOUR, _write_back
    from worker.config.settings import Settings
    from worker.runtime import Runtime
    from worker.sync.context import SyncContext
    rt = Runtime(Settings.from_env(worker_env))
    ctx = SyncContext(rt, rt.integration("acme"), "customers", 4711)
    rt.state.save("acme", "customers", 4711, fingerprint="f", sb1_id=9)
    done = [_write_back(rt, ctx) for _ in range(WRITE_BACKS_PER_HOUR + 2)]
    assert done == [True] * WRITE_BACKS_PER_HOUR + [False, False]
    assert "fingerprint" not in rt.state.get("acme", "customers", 4711)
    assert 3500 < r.ttl("msb1test:event-written-back:acme:customers:4711") <= 3600
