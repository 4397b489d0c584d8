"""Redis high availability with real processes: a master, a replica and three sentinels; the
worker, beat and the webhook receiver reach Redis through the sentinels
(``MSB1_REDIS_URL=redis+sentinel://…``). The master is killed mid-run; the sentinels promote
the replica; everything carries on; every change reaches the books (the poll covers what
the failover lost) and nothing is written twice."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from conftest import COMPANY_KEYS, ROOT, Worker, free_port, wait_until

from sandbox.local import SentinelGroup
from sandbox.moment import seed_customers

pytestmark = pytest.mark.slow
ACME = COMPANY_KEYS["acme"]


@pytest.fixture
def group():
    g = SentinelGroup()
    yield g
    g.close()


def test_the_master_dies_mid_run_and_nothing_is_lost_or_doubled(sandbox, worker_env, group, tmp_path):
    env = dict(worker_env, MSB1_REDIS_URL=group.url, MSB1_POLL_INTERVAL="2", MSB1_POLL_OVERLAP="600",
               MSB1_KEY_PREFIX="msb1ha")
    sandbox.sb1_faults.latency = sandbox.moment_faults.latency = 0.02
    seeded = seed_customers(sandbox.moment, "acme", 60)
    workers = [Worker(env, tmp_path / f"worker{n}.log", 8).start() for n in range(2)]
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "worker.cli", "webhooks", "--host", "127.0.0.1", "--port",
                               str(port)], cwd=ROOT, env=env, stdout=open(tmp_path / "webhooks.log", "wb"),
                              stderr=subprocess.STDOUT, start_new_session=True),
             subprocess.Popen([sys.executable, "-m", "worker.cli", "beat"], cwd=ROOT, env=env,
                              stdout=open(tmp_path / "beat.log", "wb"), stderr=subprocess.STDOUT,
                              start_new_session=True)]
    hook = f"http://127.0.0.1:{port}/webhooks/acme/acme-webhook-secret-0123456789"

    def books() -> set[int]:
        return {c["CustomerNumber"] for c in sandbox.sb1.customers(ACME)}

    def send(record_id: int) -> None:
        """As Moment does: again until the receiver takes it (503 during the failover)."""
        def taken() -> bool:
            try:
                return requests.post(hook, json={"event": "UPDATE", "customer": {"id": record_id}},
                                     timeout=5).status_code == 202
            except requests.ConnectionError:
                return False
        wait_until(taken, 60, 0.2, message=f"the receiver to take the webhook of {record_id}")

    def supervised() -> None:                           # restart: unless-stopped, as compose does
        for n, w in enumerate(workers):
            if w.proc.poll() is not None:
                workers[n] = Worker(env, tmp_path / f"worker{n}.log", 8).start()

    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
                   if _listening(port) else False, 30, message="the receiver")
        for rec in seeded[:30]:
            send(rec["id"])
        wait_until(lambda: len(books()) >= 10, 30, message="some in the books before the failover")
        old_master = group.master.port
        group.kill_master()                             # SIGKILL; the replica becomes the master
        assert group.master_port() != old_master
        for rec in seeded[30:]:
            send(rec["id"])
        wait_until(lambda: (supervised(), len(books()) == 60)[1], 180, 0.5,
                   message="all 60 customers in the books after the failover",
                   describe=lambda: f"{len(books())} in the books")
        # the syncs whose end the failover cut off (and what did not reach the replica) have
        # no state on the new master: beat starts again and its poll syncs them once more,
        # which must find each in the books and write none twice
        def state() -> int:
            return group.replica.client.hlen("msb1ha:state:acme:customers")
        wait_until(lambda: (supervised(), state() == 60)[1], 60, 0.5,
                   message="the state of all 60 records on the new master",
                   describe=lambda: f"the state of {state()} records")
        time.sleep(3)                                   # a late duplicate would show now
        customers = sandbox.sb1.customers(ACME)
        assert len(customers) == 60 and len(books()) == 60          # each once
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok     # on the new master
        assert state() == 60
    finally:
        for w in workers:
            w.stop()
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)


def _listening(port: int) -> bool:
    from sandbox.local import listening
    return listening(port)
