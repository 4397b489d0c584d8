"""A worker process kept on one CPU (``MSB1_WORKER_CPU``, ``moment-sb1 worker --cpu``): every
thread of it, those Celery starts after the pinning included, runs on that CPU only; a CPU
the process may not use stops it at start with one line saying which it may use."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import COMPANY_KEYS, ROOT, wait_until
from sandbox.moment import seed_customers
from sandbox.stack import thread_statuses

pytestmark = pytest.mark.slow
ALLOWED = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def cpus_of_each_thread(pid: int) -> dict[int, str]:
    """Thread id → the CPUs it may run on, as the kernel lists them ("1", "0-1")."""
    return {tid: fields["Cpus_allowed_list"].strip() for tid, fields in thread_statuses(pid).items()}


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs a process allowed on two CPUs or more")
def test_every_thread_of_a_pinned_worker_runs_on_its_cpu(sandbox, start_worker):
    from worker.producer import enqueue
    cpu = ALLOWED[-1]
    worker = start_worker(concurrency=8, MSB1_WORKER_CPU=cpu)
    records = seed_customers(sandbox.moment, "acme", 8)
    for rec in records:                     # the pool starts its threads as work comes
        enqueue("acme", "customers", rec["id"])
    wait_until(lambda: len(sandbox.sb1.customers(COMPANY_KEYS["acme"])) == 8, 30, message="8 customers")
    threads = cpus_of_each_thread(worker.proc.pid)
    assert len(threads) > 8, threads        # the main thread, Celery's own, and the pool's
    assert set(threads.values()) == {str(cpu)}, threads
    assert f"moment-sb1 worker ready for 2 integration(s): acme, fjord; on CPU {cpu} only" in worker.log()


@pytest.mark.parametrize("cpu", [max(ALLOWED, default=0) + 1, 4095])     # one past the last, and far past
def test_a_cpu_the_process_may_not_use_stops_the_worker_with_one_line(worker_env, cpu):
    out = subprocess.run([sys.executable, "-m", "worker.cli", "worker", "--cpu", str(cpu), "--concurrency", "1",
                          "--without-mingle", "--without-gossip"],
                         cwd=ROOT, env=worker_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    allowed = ", ".join(map(str, ALLOWED))
    assert f"the worker cannot start: MSB1_WORKER_CPU={cpu}: this process may run on CPU {allowed} only" \
        in out.stderr, out.stderr
