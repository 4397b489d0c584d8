"""No secret in clear at rest: after real syncs by real worker processes, Redis holds the
SpareBank 1 token only encrypted, and the record digests only keyed with the deployment's
secret; both are shared by every worker process with the same credentials."""
from __future__ import annotations

import hashlib
import json

import pytest
from conftest import COMPANY_KEYS, wait_until
from conftest import publish_task as enqueue

from sandbox.moment import seed_customers

ACME = COMPANY_KEYS["acme"]
pytestmark = pytest.mark.slow


def stat(r, name: str) -> int:
    return int(r.hget("msb1test:stats:acme", f"customers:{name}") or 0)


def everything_in(r) -> list[str]:
    """Every key and every value Redis holds, each as text, whatever its type."""
    out = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        out.append(key)
        if kind == "string":
            out.append(r.get(key))
        elif kind == "hash":
            out += [f"{k}={v}" for k, v in r.hgetall(key).items()]
        elif kind == "list":
            out += r.lrange(key, 0, -1)
        elif kind == "set":
            out += list(r.smembers(key))
        elif kind == "zset":
            out += [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            out += [json.dumps(fields) for _, fields in r.xrange(key)]
    return out


def plain_sha256(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def test_no_token_in_clear_in_redis_and_a_second_worker_reuses_the_cached_one(sandbox, start_worker, r):
    records = seed_customers(sandbox.moment, "acme", 2)
    first = start_worker()
    enqueue("acme", records[0]["id"])
    wait_until(lambda: stat(r, "created") == 1, 30, message="the first customer written")
    issued = list(sandbox.sb1.tokens)
    assert len(issued) == 1 and sandbox.sb1.token_requests == 1
    [token] = issued
    held = everything_in(r)
    assert any(key.startswith("msb1test:sb1-token:") for key in held)
    assert not [text for text in held if token in text], "the access token is in Redis in clear"
    assert token not in first.log()
    first.kill()
    start_worker()                  # another process, the same credentials
    enqueue("acme", records[1]["id"])
    wait_until(lambda: stat(r, "created") == 2, 30, message="the second customer written")
    assert sandbox.sb1.token_requests == 1, "the second worker fetched a token of its own"


def test_record_digests_are_keyed_and_equal_in_every_worker_process(sandbox, start_worker, r, worker_env):
    from schemas.datatypes import DATA_TYPES
    from schemas.sb1 import MAPPING_VERSION, field_digests, fingerprint
    from worker.config.settings import Settings
    from worker.runtime import Runtime

    [rec] = seed_customers(sandbox.moment, "acme", 1)
    first = start_worker()
    enqueue("acme", rec["id"])
    wait_until(lambda: stat(r, "created") == 1, 30, message="the customer written")
    state = json.loads(r.hget("msb1test:state:acme:customers", str(rec["id"])))

    dt = DATA_TYPES["customers"]
    record = dt.moment_schema.load(sandbox.moment.get("acme", "customers", rec["id"]))
    wanted = dt.wanted(record, dt.check(record))
    assert set(state["fields"]) == set(wanted) and wanted["org_number"]
    # nothing a guess could be checked against: no plain SHA-256 of a value, with or without its name
    for name, value in wanted.items():
        plain = {plain_sha256(value), hashlib.sha256(f"{name}\0{json.dumps(value, sort_keys=True, default=str)}"
                                                      .encode()).hexdigest()}
        assert not any(p.startswith(state["fields"][name]) for p in plain), name
    assert state["fingerprint"] != plain_sha256({"v": MAPPING_VERSION, **wanted})
    # this (third) process derives the same key from the same credentials
    key = Runtime(Settings.from_env(worker_env)).digest_key
    assert state["fields"] == field_digests(wanted, key) and state["fingerprint"] == fingerprint(wanted, key)

    first.kill()
    start_worker()                  # another worker process: its digests are the first one's
    writes = sandbox.sb1.count_writes(ACME)
    enqueue("acme", rec["id"])
    wait_until(lambda: stat(r, "unchanged") == 1, 30, message="the unchanged customer seen as unchanged")
    assert sandbox.sb1.count_writes(ACME) == writes
    sandbox.moment.update("acme", "customers", rec["id"], {"email": "ny.adresse@example.no"})
    enqueue("acme", rec["id"])
    wait_until(lambda: stat(r, "updated") == 1, 30, message="the changed customer written")
    [latest, *_] = [json.loads(e) for e in r.lrange(f"msb1test:history:acme:customers:{rec['id']}", 0, -1)]
    assert latest["changed"] == ["email"], latest
