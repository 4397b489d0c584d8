"""A worker process kept on one CPU (``MSB1_WORKER_CPU``, ``moment-sb1 worker --cpu``): every
thread of it, those Celery starts after the pinning included, runs on that CPU only; a CPU
the process may not use stops it at start with one line saying which it may use. By default
(auto) each worker process takes a CPU no other has, and one that finds none runs on any."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import COMPANY_KEYS, ROOT, wait_until
from sandbox.moment import seed_customers
from sandbox.stack import cpus_allowed, thread_statuses
from worker.cpu import machine_id

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
    assert f"moment-sb1 worker ready for 2 integration(s): acme, fjord; on CPU {cpu} only (MSB1_WORKER_CPU)" \
        in worker.log()


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs a process allowed on two CPUs or more")
def test_by_default_each_worker_takes_a_cpu_no_other_has_and_the_one_too_many_runs_on_any(
        sandbox, start_worker, r):
    from worker.producer import enqueue
    machine = machine_id()
    for other in ALLOWED[:-2]:      # on a bigger machine, other workers hold all but two CPUs
        r.set(f"msb1test:cpu:{machine}:{other}", "another-worker", ex=300)
    free = ALLOWED[-2:]
    first, second = start_worker(concurrency=8), start_worker(concurrency=8)
    records = seed_customers(sandbox.moment, "acme", 16)
    for rec in records:                     # the pool starts its threads as work comes
        enqueue("acme", "customers", rec["id"])
    wait_until(lambda: len(sandbox.sb1.customers(COMPANY_KEYS["acme"])) == 16, 30, message="16 customers")
    placed = {}
    for w in (first, second):
        cpus = set(cpus_of_each_thread(w.proc.pid).values())
        assert len(cpus) == 1, cpus         # every thread of it on one CPU
        placed[w.proc.pid] = int(cpus.pop())
        assert r.get(f"msb1test:cpu:{machine}:{placed[w.proc.pid]}").split(":")[1] == str(w.proc.pid)
    assert sorted(placed.values()) == free, placed
    assert w.log().count("acme, fjord; on CPU ") == 2 and w.log().count(" only (auto)") == 2

    third = start_worker(concurrency=2)     # every CPU is taken: it runs wherever the system puts it
    assert cpus_allowed(third.proc.pid) == cpus_allowed(os.getpid())
    assert (f"acme, fjord; on any CPU (auto: all {len(ALLOWED)} CPUs taken by other workers; trying again)"
            in third.log())

    freed = placed[first.proc.pid]
    first.stop()                            # a worker that stops gives its CPU back
    assert r.get(f"msb1test:cpu:{machine}:{placed[second.proc.pid]}") is not None
    # and the third takes it at its next try (every 15 s), with every thread it has
    wait_until(lambda: set(cpus_of_each_thread(third.proc.pid).values()) == {str(freed)}, 25,
               message=f"the third worker on CPU {freed}")
    assert r.get(f"msb1test:cpu:{machine}:{freed}").split(":")[1] == str(third.proc.pid)
    assert f"CPU {freed} came free; every thread of this worker runs on it now" in third.log()


@pytest.mark.parametrize("cpu", [max(ALLOWED, default=0) + 1, 4095])     # one past the last, and far past
def test_a_cpu_the_process_may_not_use_stops_the_worker_with_one_line(worker_env, cpu):
    out = subprocess.run([sys.executable, "-m", "worker.cli", "worker", "--cpu", str(cpu), "--concurrency", "1",
                          "--without-mingle", "--without-gossip"],
                         cwd=ROOT, env=worker_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    allowed = ", ".join(map(str, ALLOWED))
    assert f"the worker cannot start: MSB1_WORKER_CPU={cpu}: this process may run on CPU {allowed} only" \
        in out.stderr, out.stderr


def test_a_cpu_option_that_is_no_cpu_is_refused_before_the_worker_starts(worker_env):
    out = subprocess.run([sys.executable, "-m", "worker.cli", "worker", "--cpu", "one"],
                         cwd=ROOT, env=worker_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "'one' is not auto, off or a CPU's number (0, 1, ...)" in out.stderr, out.stderr


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs a process allowed on two CPUs or more")
def test_a_worker_run_with_a_pool_of_processes_claims_no_cpu(worker_env, tmp_path, r):
    """Celery's prefork children would all inherit the one CPU of their parent."""
    log_path = tmp_path / "prefork.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "prefork",
                                 "--concurrency", "2", "--without-mingle", "--without-gossip", "--loglevel", "INFO"],
                                cwd=ROOT, env=worker_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: b" ready." in log_path.read_bytes() or proc.poll() is not None, 60, 0.1, "the worker")
        assert "acme, fjord; on any CPU (auto: a pool of processes)" in log_path.read_text()
        assert cpus_allowed(proc.pid) == cpus_allowed(os.getpid())
        assert r.keys("msb1test:cpu:*") == []
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
