"""One outage, one notice: many companies against one host that fails are two operator
emails and two Sentry events in all, naming the companies (real worker, Redis, sandbox,
SMTP, Sentry stand-in); and the fleet outage's steps are each done once however many
processes race (real Redis)."""
from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from conftest import publish_task as enqueue
from conftest import wait_until

from worker.config.settings import Settings
from worker.notices.outages import Outages
from worker.store.keys import Keys

OPS = "drift@integrator.example"
FAST = {"MSB1_OPERATOR_EMAIL": OPS, "MSB1_CIRCUIT_THRESHOLD": "2", "MSB1_CIRCUIT_WINDOW": "30",
        "MSB1_CIRCUIT_PROBE_INTERVAL": "1"}
FIRST, LATER = 42, 8            # companies out at the first email; companies the outage stops after it


def fleet(sandbox, path, count: int) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """``count`` companies on the sandbox, one customer each: their ids, the worker's
    environment for their Moment keys, and each one's customer."""
    ids = [f"co{i:02d}" for i in range(count)]
    lines, env, records = [], {}, {}
    for n, cid in enumerate(ids):
        key = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{cid}.example"))
        [record] = sandbox.add_company(cid, f"{cid}-moment-key", key, seed_customers=1, start_number=100001 + n)
        records[cid] = record["id"]
        env[f"{cid.upper()}_MOMENT_KEY"] = f"{cid}-moment-key"
        lines += ["[[integration]]", f'id = "{cid}"', f'moment_company = "{cid}"',
                  f'moment_api_key = {{ env = "{cid.upper()}_MOMENT_KEY" }}',
                  f'moment_base_url = "{sandbox.moment_url}"', f'sb1_base_url = "{sandbox.sb1_url}"',
                  f'company_key = "{key}"', f'notify_email = "regnskap@{cid}.example"',
                  'data_types = ["customers"]', f'webhook_secret = "{cid}-webhook-secret-0123456789"',
                  'language = "en"', ""]
    path.write_text("\n".join(lines))
    return ids, env, records


def to(smtp, address):
    return [m for m in smtp.messages if m["To"] == address]


def listed(body: str, head: str) -> list[str]:
    """The integrations an email names after ``head`` ("Integrations affected (3): a, b, c")."""
    [line] = [ln for ln in body.splitlines() if ln.startswith(head)]
    return line.split(": ", 1)[1].split(", ")


def created(r, cid: str) -> int:
    return int(r.hget(f"msb1test:stats:{cid}", "customers:created") or 0)


@pytest.mark.slow
def test_a_platform_outage_is_two_operator_emails_and_two_sentry_events_in_all(sandbox, smtp, sentry, worker_env,
                                                                                tmp_path, start_worker, r):
    ids, env, records = fleet(sandbox, tmp_path / "fleet.toml", FIRST + LATER)
    start_worker(**FAST, **env, MSB1_INTEGRATIONS_FILE=str(tmp_path / "fleet.toml"), MSB1_SENTRY_DSN=sentry.dsn)
    sandbox.sb1_faults.configure(error_rate=1.0)        # SpareBank 1's API host answers 503 to everything
    for cid in ids[:FIRST]:
        enqueue(cid, records[cid])
    wait_until(lambda: to(smtp, OPS), 30, message="the operator's first email")
    wait_until(lambda: all(r.exists(f"msb1test:circuit:{cid}:sb1") for cid in ids[:FIRST]), 30,
               message="every company's circuit open")
    for cid in ids[FIRST:]:                             # the outage stops more companies after the first email
        enqueue(cid, records[cid])
    wait_until(lambda: all(r.exists(f"msb1test:circuit:{cid}:sb1") for cid in ids[FIRST:]), 30,
               message="the later companies' circuits open")
    time.sleep(3)                                       # several probes of every circuit, all failing
    [opened] = to(smtp, OPS)
    assert opened["Subject"].startswith("moment-sb1: SpareBank 1 Regnskap does not answer (")
    first = listed(opened.get_content(), "Integrations affected")
    assert set(first) <= set(ids[:FIRST]) and first

    sandbox.sb1_faults.reset()
    wait_until(lambda: all(created(r, cid) == 1 for cid in ids), 60, message="every company's customer")
    wait_until(lambda: len(to(smtp, OPS)) == 2, 20, message="the operator's closing email")
    time.sleep(2)
    assert len(to(smtp, OPS)) == 2                      # two in all, not one per company
    closed = to(smtp, OPS)[1]
    assert closed["Subject"] == f"moment-sb1: SpareBank 1 Regnskap is back for {FIRST + LATER} integrations"
    body = closed.get_content()
    assert sorted(listed(body, "Integrations affected")) == ids
    assert set(ids[FIRST:]) <= set(listed(body, "Stopped after the first email"))
    assert smtp.messages == to(smtp, OPS)               # a short outage is no company's business

    def outage_events():
        return [e for e in sentry.events() if (e.get("fingerprint") or [None])[0] == "outage"]
    wait_until(lambda: len(outage_events()) == 2, 10, message="the two Sentry events")
    time.sleep(1)
    assert len(sentry.events()) == 2
    began, ended = sorted(outage_events(), key=lambda e: e["fingerprint"][-1] != "open")
    assert began["contexts"]["outage"]["integrations"] == sorted(first)
    assert ended["contexts"]["outage"]["integrations"] == ids and ended["tags"]["circuit"] == "closed"
    assert json.dumps(ended).count("regnskap@") == 0


def outages(r, sent: list, probe_interval: float = 2) -> Outages:
    settings = Settings(operator_email=OPS, smtp_sender="integration@moment-sb1.example",
                        circuit_probe_interval=probe_interval)
    keys = Keys("msb1test")
    return Outages(r, keys, settings, send_email=sent.append,
                   circuit_open=lambda company, service: bool(r.exists(keys.circuit("circuit", company, service))))


def race(work: list) -> None:
    """Run each call in a thread of its own, all at once."""
    start = threading.Barrier(len(work))

    def run(call):
        start.wait()
        call()
    threads = [threading.Thread(target=run, args=(call,)) for call in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


def test_fifty_circuits_racing_open_probe_and_close_make_one_opening_and_one_closing_notice(r):
    sent: list = []
    out = [outages(r, sent, probe_interval=2) for _ in range(8)]      # as many worker processes
    ids = [f"co{i:02d}" for i in range(50)]
    for cid in ids:
        r.hset(f"msb1test:circuit:{cid}:sb1", "since", "1")
    race([lambda cid=cid, n=n: out[n % 8].joined(cid, "sb1", "outage", "api.example:443", "HTTP 503")
          for n, cid in enumerate(ids)])
    race([lambda n=n: out[n % 8].still_out("sb1", "outage", "api.example:443") for n in range(50)])
    assert sent == []                                   # the outage is collecting companies (1 s)
    time.sleep(1.1)
    race([lambda n=n: out[n % 8].still_out("sb1", "outage", "api.example:443") for n in range(50)])
    assert [m["Subject"] for m in sent] == ["moment-sb1: SpareBank 1 Regnskap does not answer (50 integrations)"]
    out[0].joined("late", "sb1", "outage", "api.example:443", "HTTP 503")
    r.hset("msb1test:circuit:late:sb1", "since", "1")
    for cid in ids:
        r.delete(f"msb1test:circuit:{cid}:sb1")
    race([lambda cid=cid, n=n: out[n % 8].left(cid, "sb1", "outage", "api.example:443")
          for n, cid in enumerate([*ids, *ids])])      # every close twice (a redelivered probe)
    assert len(sent) == 1                               # one company is still out
    out[3].left("late", "sb1", "outage", "api.example:443")
    assert [m["Subject"] for m in sent][1:] == ["moment-sb1: SpareBank 1 Regnskap is back for 51 integrations"]
    assert "Stopped after the first email (1): late" in sent[1].get_content()
    assert r.keys("msb1test:outage*") == []


def test_an_outage_over_before_its_first_notice_is_one_email(r):
    sent: list = []
    out = outages(r, sent, probe_interval=60)
    for cid in ("a", "b"):
        out.joined(cid, "moment", "outage", "moment.example", "HTTP 502")
    out.still_out("moment", "outage", "moment.example")
    out.left("a", "moment", "outage", "moment.example")
    out.left("b", "moment", "outage", "moment.example")
    [mail] = sent
    assert mail["Subject"] == "moment-sb1: Moment did not answer for a while, over now (2 integrations)"
    assert "Integrations affected (2): a, b" in mail.get_content()


def test_a_circuit_removed_by_hand_leaves_its_outage(r):
    sent: list = []
    out = outages(r, sent, probe_interval=0.1)
    r.hset("msb1test:circuit:a:sb1", "since", "1")
    out.joined("a", "sb1", "outage", "h", "HTTP 503")
    out.joined("gone", "sb1", "outage", "h", "HTTP 503")      # its circuit key was deleted meanwhile
    time.sleep(1.05)
    out.still_out("sb1", "outage", "h")
    assert len(sent) == 1
    r.delete("msb1test:circuit:a:sb1")
    out.left("a", "sb1", "outage", "h")
    assert len(sent) == 2 and r.keys("msb1test:outage*") == []
