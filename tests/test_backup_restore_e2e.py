"""Backup and restore as docs/operations.md ("Backup and restore") says: a copy of Redis'
AOF directory, taken while a worker runs, started as a fresh Redis after the first one is
lost; the worker carries on with nothing synced twice: the records the copy knows are
unchanged, the ones written after the copy are found in the books by their number (no
second customer), and the poll goes on from the copy's cursor."""
from __future__ import annotations

import shutil
import time

import pytest
from conftest import COMPANY_KEYS, RedisServer, wait_until

from sandbox.moment import seed_customers
from worker.store.keys import Keys

pytestmark = pytest.mark.slow
ACME = COMPANY_KEYS["acme"]
KEYS = Keys("msb1test")


def send(url, name, *args):
    from worker.broker import app
    with app.connection_for_write(url) as conn:
        app.send_task(name, args=list(args), connection=conn)


def backup(server: RedisServer, to) -> None:
    """What the operator runs: copy appendonlydir when no rewrite of it is under way."""
    wait_until(lambda: server.client.info("persistence")["aof_rewrite_in_progress"] == 0, 30,
               message="no AOF rewrite in progress")
    shutil.copytree(server.dir / "appendonlydir", to / "appendonlydir")


def test_a_restored_aof_carries_on_with_nothing_synced_twice(sandbox, start_worker, make_redis, tmp_path):
    first = make_redis(aof=True, fsync="everysec")            # as docker-compose runs it
    w = start_worker(MSB1_REDIS_URL=first.url)
    before = seed_customers(sandbox.moment, "acme", 8)
    for rec in before:
        send(first.url, "sync.customer", "acme", rec["id"])
    wait_until(lambda: len(sandbox.sb1.customers(ACME)) == 8, 60, message="the first 8 customers")
    wait_until(lambda: first.client.hlen(KEYS.state("acme", "customers")) == 8, 10, message="their states")
    first.client.set(KEYS.cursor("acme", "customers"), "2026-11-25T12:00:00.000000+00:00")
    time.sleep(1.5)                                           # appendfsync everysec: on disk
    copy = tmp_path / "backup"
    copy.mkdir()
    backup(first, copy)

    # after the copy: two more customers written, then Redis is lost for good
    after = seed_customers(sandbox.moment, "acme", 2, start_number=100101)
    for rec in after:
        send(first.url, "sync.customer", "acme", rec["id"])
    wait_until(lambda: len(sandbox.sb1.customers(ACME)) == 10, 60, message="the 2 customers after the copy")
    w.kill()
    first.stop(kill=True)

    restored = make_redis(aof=True, directory=copy)
    assert restored.client.hlen(KEYS.state("acme", "customers")) == 8
    assert restored.client.get(KEYS.cursor("acme", "customers")) == "2026-11-25T12:00:00.000000+00:00"
    stats = KEYS.stats("acme")
    created = restored.client.hget(stats, "customers:created")
    assert created == "8"                                     # the copy's counters
    start_worker(MSB1_REDIS_URL=restored.url)
    for rec in before + after:                                # what a poll or a replay of them sends
        send(restored.url, "sync.customer", "acme", rec["id"])
    wait_until(lambda: restored.client.hlen(KEYS.state("acme", "customers")) == 10
               and int(restored.client.hget(stats, "customers:unchanged") or 0) == 10, 60,
               message="the syncs after the restore", describe=lambda: f"{restored.client.hgetall(stats)}")
    customers = sandbox.sb1.customers(ACME)
    numbers = sorted(str(c["CustomerNumber"]) for c in customers)
    assert numbers == sorted(str(r["customerNumber"]) for r in before + after), numbers
    # nothing written again: the 8 the copy knows and the 2 it does not are unchanged in the books
    assert restored.client.hget(stats, "customers:created") == created, restored.client.hgetall(stats)
    assert not restored.client.hget(stats, "customers:updated"), restored.client.hgetall(stats)
    assert restored.client.get(KEYS.schema()) is not None
