"""The audit log: every action of the command line (pause, resume, replay, purge, backfill)
writes who, when, what and why; `moment-sb1 audit` prints it (all, one integration, JSON);
records are named by a valid number or their Moment id, never by a person's data."""
from __future__ import annotations

import getpass
import json
import subprocess
import sys
import time

import redis as redis_lib
from conftest import REDIS_URL, ROOT

from sandbox.moment import seed_customers
from worker.store.audit import KEEP, AuditLog
from worker.store.keys import Keys
from worker.store.records import DeadLetter, DeadLetters


def cli(env, *args, input: str | None = None) -> str:
    out = subprocess.run([sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True, text=True,
                         timeout=60, cwd=ROOT, input=input)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def letter(record_id: int, what: str, integration: str = "acme") -> DeadLetter:
    return DeadLetter(integration, "customers", record_id, what, "the organization number (11 digits) must be "
                      "nine digits", "RecordInvalid")


def test_every_cli_action_is_audited_and_audit_prints_it(sandbox, worker_env, r):
    keys = Keys("msb1test")
    dead = DeadLetters(r, keys)
    dead.record(letter(11, "customer 100011"))
    dead.record(letter(12, "customer with Moment id 12"))
    dead.record(letter(13, "customer 100013", integration="fjord"))
    seed_customers(sandbox.moment, "acme", 3)

    cli(worker_env, "pause", "acme", "--by", "kari", "--reason", "bank maintenance tonight")
    cli(worker_env, "pause", "acme", "--by", "kari")                       # already paused: audited as such
    cli(worker_env, "resume", "acme", "--reason", "maintenance over")      # --by: the OS user
    cli(worker_env, "replay", "--integration", "acme", "--id", "11", "--by", "kari", "--reason", "org number fixed")
    cli(worker_env, "replay", "--by", "ola")                               # both companies: one entry each
    cli(worker_env, "purge", "--integration", "fjord", "-y", "--by", "ola", "--reason", "customer deleted in Moment")
    cli(worker_env, "backfill", "acme", "--by", "ola", "--reason", "onboarding")

    entries = json.loads(cli(worker_env, "audit", "--json"))
    got = [(e["who"], e["via"], e["action"], e["integration"], e["what"], e["outcome"], e["why"]) for e in entries]
    me = getpass.getuser()
    assert got == [
        ("ola", "cli", "backfill", "acme", "customers", "queued 3 customers", "onboarding"),
        ("ola", "cli", "purge", "fjord", "customer 100013", "deleted", "customer deleted in Moment"),
        ("ola", "cli", "replay", "fjord", "customer 100013", "queued", ""),
        ("ola", "cli", "replay", "acme", "2 dead letters (2 customers)", "queued", ""),
        ("kari", "cli", "replay", "acme", "customer 100011", "queued", "org number fixed"),
        (me, "cli", "resume", "acme", "", "resumed; polled now", "maintenance over"),
        ("kari", "cli", "pause", "acme", "", "already paused", ""),
        ("kari", "cli", "pause", "acme", "", "paused", "bank maintenance tonight"),
    ]
    assert all(time.time() - 60 < e["at"] <= time.time() for e in entries)

    text = cli(worker_env, "audit", "--integration", "fjord")
    lines = text.splitlines()
    assert len(lines) == 2 and "ola (cli)  purge fjord customer 100013: deleted  why: customer deleted in Moment" \
        in lines[0] and lines[0].endswith("customer deleted in Moment")
    assert "UTC" in lines[0] and "acme" not in text
    assert len(cli(worker_env, "audit", "--integration", "fjord", "--limit", "1").splitlines()) == 1
    r.delete("msb1test:audit")
    assert cli(worker_env, "audit", "--integration", "fjord") == "no actions recorded for fjord\n"


def test_the_log_keeps_one_line_per_field_and_its_newest_entries(r):
    log = AuditLog(redis_lib.Redis.from_url(REDIS_URL, decode_responses=True), Keys("msb1test"))
    log.write("kari\nadmin", "pause", "acme", why="line one\nline two\x1b[31m " + "x" * 400)
    [e] = log.read()
    assert e.who == "kari admin" and "\n" not in e.why and "\x1b" not in e.why and len(e.why) == 300
    pipe = r.pipeline()
    for i in range(KEEP + 5):
        pipe.lpush("msb1test:audit", json.dumps({"who": "x", "action": "resume", "integration": f"c{i}"}))
    pipe.execute()
    log.write("kari", "resume", "acme")
    assert r.llen("msb1test:audit") == KEEP
    assert [e.integration for e in log.read(limit=2)] == ["acme", f"c{KEEP + 4}"]
    assert [e.who for e in log.read("acme")] == ["kari"]          # the first entry of acme: trimmed away
    try:
        log.write("kari", "delete everything", "acme")
    except ValueError as err:
        assert "unknown audit action" in str(err)
    else:
        raise AssertionError("an unknown action was written")
