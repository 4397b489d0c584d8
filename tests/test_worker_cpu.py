"""Claims on a machine's CPUs in Redis (``worker/cpu.py``), against a real Redis: each CPU
goes to one worker process, a dead worker's claim frees itself, a claim Redis lost is taken
again, and one another worker took meanwhile is given up."""
from __future__ import annotations

import logging
import os
import time

import pytest
import redis

from sandbox.local import free_port
from worker.cpu import AUTO, OFF, CpuClaim, choose, parse


def claim(r, machine="m1", **kw) -> CpuClaim:
    return CpuClaim(r, "msb1test", machine=machine, **kw)


def test_each_cpu_goes_to_one_worker_and_the_rest_get_none(r):
    first, second, third = claim(r), claim(r), claim(r)
    assert first.take([0, 1]) == 0
    assert second.take([0, 1]) == 1
    assert third.take([0, 1]) is None
    assert r.get("msb1test:cpu:m1:0") == first.owner != second.owner


def test_another_machine_has_cpus_of_its_own(r):
    assert claim(r, "m1").take([0, 1]) == 0
    assert claim(r, "m2").take([0, 1]) == 0


def test_a_dead_workers_claim_frees_itself_after_its_time_and_not_before(r):
    dead = claim(r, ttl=1)
    assert dead.take([3]) == 3          # and never renewed: the process was killed
    assert claim(r).take([3]) is None   # still held
    time.sleep(1.2)                     # past the claim's time
    assert claim(r).take([3]) == 3


def test_give_back_frees_only_the_workers_own_claim(r):
    a, b = claim(r, ttl=1), claim(r)
    a.take([0])
    time.sleep(1.2)                     # a's claim expired (a stalled) and b took the CPU
    assert b.take([0]) == 0
    a.give_back()
    assert r.get("msb1test:cpu:m1:0") == b.owner
    b.give_back()
    assert r.get("msb1test:cpu:m1:0") is None


def test_a_claim_redis_lost_is_taken_again_one_another_worker_holds_is_not(r):
    a = claim(r, ttl=30)
    a.take([0])
    r.delete("msb1test:cpu:m1:0")       # Redis restarted: it keeps nothing
    assert a.renew() is True
    assert r.get("msb1test:cpu:m1:0") == a.owner and 0 < r.ttl("msb1test:cpu:m1:0") <= 30
    r.set("msb1test:cpu:m1:0", "someone-else")
    assert a.renew() is False
    assert r.get("msb1test:cpu:m1:0") == "someone-else"


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_keeping_a_claim_renews_it_reports_its_loss_once_and_takes_it_again_when_free(r):
    a = claim(r, ttl=1, renew_every=0.1)
    a.take([0])
    taken, lost = [], []
    a.keep([0], taken.append, lost.append)
    time.sleep(1.5)                     # past the claim's own time: renewed meanwhile
    assert r.get("msb1test:cpu:m1:0") == a.owner and not lost
    r.set("msb1test:cpu:m1:0", "someone-else", ex=1)    # Redis lost it, another worker took it
    assert wait_for(lambda: lost)
    time.sleep(0.3)
    assert lost == [0] and a.cpu is None and not taken
    assert wait_for(lambda: taken, 3)   # the other's claim expired: taken again
    assert taken == [0] and r.get("msb1test:cpu:m1:0") == a.owner
    a.give_back()
    assert r.get("msb1test:cpu:m1:0") is None


def test_a_worker_that_found_every_cpu_taken_takes_one_that_comes_free(r):
    holder, waiting = claim(r), claim(r, renew_every=0.1)
    holder.take([0, 1]), claim(r).take([0, 1])
    assert waiting.take([0, 1]) is None
    taken = []
    waiting.keep([0, 1], taken.append, lambda cpu: None)
    time.sleep(0.5)
    assert taken == []
    holder.give_back()                  # that worker stopped
    assert wait_for(lambda: taken)
    assert taken == [0] and r.get("msb1test:cpu:m1:0") == waiting.owner
    waiting.give_back()


def test_who_does_not_claim(r):
    assert choose(OFF, r, "msb1test", takes_bulk=True).cpu is None
    live_only = choose(AUTO, r, "msb1test", takes_bulk=False)
    assert (live_only.cpu, live_only.claim) == (None, None)
    assert live_only.describe() == "on any CPU (auto: takes live work only)"
    assert r.keys("msb1test:cpu:*") == []


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a process allowed on two CPUs or more")
def test_redis_not_reachable_as_a_worker_starts_leaves_it_unpinned_at_once():
    nobody = redis.Redis(port=free_port(), socket_connect_timeout=1, decode_responses=True)
    started = time.monotonic()
    placed = choose(AUTO, nobody, "msb1test", takes_bulk=True)
    try:
        assert time.monotonic() - started < 5
        assert placed.cpu is None
        assert placed.describe() == "on any CPU (auto: Redis not reachable; trying again)"
    finally:
        placed.claim.give_back()        # stop trying: nothing may pin the test process


def test_renewing_through_a_redis_outage_says_so_once_and_keeps_the_claim_after(make_redis, caplog):
    server = make_redis()
    r = redis.Redis.from_url(server.url, decode_responses=True, socket_connect_timeout=1, socket_timeout=1)
    a = claim(r, ttl=30, renew_every=0.1)
    a.take([0])
    lost = []
    with caplog.at_level(logging.WARNING, logger="worker.cpu"):
        a.keep([0], lambda cpu: None, lost.append)
        server.stop()                           # ten renewals or more fail meanwhile
        time.sleep(1.5)
        server.start()                          # nothing kept on disk: the claim is gone
        time.sleep(1.0)
    assert [rec.getMessage() for rec in caplog.records] == [
        "could not renew or take a claim on a CPU (Redis: ConnectionError); trying again"]
    assert r.get("msb1test:cpu:m1:0") == a.owner and not lost     # taken again
    a.give_back()


@pytest.mark.parametrize("value", ["-1", "1.5", "\u0663", "1\n2", "", "autox", "0x1"])
def test_what_is_no_cpu(value):
    with pytest.raises(ValueError):
        parse(value)


@pytest.mark.parametrize("value,choice", [("auto", "auto"), (" OFF\n", "off"), ("0", 0), ("12", 12)])
def test_what_is_a_cpu(value, choice):
    assert parse(value) == choice
