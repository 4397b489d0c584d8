"""The learned rate limit's Lua scripts (clients/ratelimit.py) against a real Redis: a burst
of 429s cuts the rate once, Retry-After is honoured, the rate climbs back while no 429
comes, and it stays between its floor and its ceiling."""
from __future__ import annotations

import threading
import time

import pytest

from clients.ratelimit import Bucket, RateLimiter, floor
from errors import TransientError
from worker.store.keys import Keys


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(r, **kwargs) -> RateLimiter:
    return RateLimiter(r, Keys("msb1test").rate_limits(), **kwargs)


def test_sixteen_threads_seeing_one_burst_of_429s_cut_the_rate_once(r):
    lim, bucket = limiter(r), (Bucket("test:burst", 50.0),)
    start = threading.Barrier(16)

    def report():
        start.wait()
        lim.penalize(bucket, 1.0)
    threads = [threading.Thread(target=report) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    [rate] = lim.learned(bucket)
    assert 35.0 <= rate < 36.0, rate                    # 0.7 × 50 once (and a moment's climb), not 0.7^16
    assert 0 < r.pttl("msb1test:rate:test:burst:cut") <= 1000       # guarded for the Retry-After period
    time.sleep(1.05)
    [climbed] = lim.learned(bucket)
    [rate] = lim.penalize(bucket, 1.0)                  # the next period's 429 cuts again
    assert 37.0 <= climbed < 40.0 and rate == pytest.approx(climbed * 0.7, abs=0.2), (climbed, rate)


def test_without_retry_after_the_cut_is_guarded_for_a_second(r):
    clock = Clock()
    lim, bucket = limiter(r, clock=clock), (Bucket("test:plain", 20.0),)
    assert lim.penalize(bucket) == [14.0]
    assert lim.penalize(bucket) == [14.0]
    assert 900 < r.pttl("msb1test:rate:test:plain:cut") <= 1000
    assert lim.acquire(bucket, "test") == 0             # no Retry-After: no wait beyond the rate


def test_retry_after_is_honoured_and_past_the_longest_wait_is_a_passing_error(r):
    lim, bucket = limiter(r), (Bucket("test:after", 100.0),)
    lim.penalize(bucket, 1.5)
    t0 = time.monotonic()
    waited = lim.acquire(bucket, "test")
    assert 1.3 < waited <= 1.5 and time.monotonic() - t0 >= 1.3, waited
    second = lim.acquire(bucket, "test")                # then spaced at 90 % of the cut rate
    assert 0.012 < second < 0.02, second
    short = limiter(r, max_wait=1.0)
    short.penalize(bucket, 5.0)
    with pytest.raises(TransientError, match="our own rate limit has 5s of calls waiting"):
        short.acquire(bucket, "SpareBank 1 Regnskap")


def test_the_rate_climbs_back_additively_up_to_its_ceiling(r):
    clock = Clock()
    lim, bucket = limiter(r, clock=clock), (Bucket("test:climb", 20.0),)
    assert lim.learned(bucket) == [20.0]                # no 429 yet: the ceiling
    assert lim.penalize(bucket) == [14.0]
    clock.now += 2                                      # + 5 % of the ceiling per second
    assert lim.learned(bucket) == [pytest.approx(16.0)]
    clock.now += 2
    assert lim.learned(bucket) == [pytest.approx(18.0)]
    r.delete("msb1test:rate:test:climb:cut")            # the guard's period is over
    assert lim.penalize(bucket) == [pytest.approx(12.6)]    # cut from where it had climbed to
    clock.now += 3600
    assert lim.learned(bucket) == [20.0]                # never above the ceiling
    r.delete("msb1test:rate:test:climb:cut")
    assert lim.penalize(bucket) == [pytest.approx(14.0)]    # nor in the scripts


@pytest.mark.parametrize("ceiling, lowest", [(50.0, 10.0), (3.0, 1.0), (0.5, 0.5)])
def test_never_below_the_floor(r, ceiling, lowest):
    clock = Clock()
    lim, bucket = limiter(r, clock=clock), (Bucket("test:floor", ceiling),)
    assert floor(ceiling) == lowest
    for _ in range(30):
        r.delete("msb1test:rate:test:floor:cut")
        clock.now += 0.01
        [rate] = lim.penalize(bucket)
    assert rate == pytest.approx(lowest, abs=0.01)
    assert lim.learned(bucket) == [pytest.approx(lowest, abs=0.01)]


def test_a_cut_rate_spaces_the_calls_further_apart(r):
    lim, bucket = limiter(r), (Bucket("test:spacing", 20.0),)

    def calls_in(seconds: float) -> int:
        n, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            lim.acquire(bucket, "test")
            n += 1
        return n
    calls_in(0.3)                                       # use up the burst
    before = calls_in(1.0)
    r.hset("msb1test:rate:test:spacing", mapping={"base": 8.0, "cut_at": time.time()})
    after = calls_in(1.0)
    # never over 90 % of 20, then of ~8 (a busy machine makes fewer calls, never more)
    assert before <= 19 and after <= 9, (before, after)
    assert before >= 13, (before, after)


def test_a_429_holds_the_company_not_the_host(r):
    from clients.ratelimit import Limited
    lim = limiter(r)
    company, host = Bucket("test:company", 20.0), Bucket("test:host", 200.0)
    Limited(lim, (company, host), "SpareBank 1 Regnskap").rate_limited(2.0)
    assert lim.learned((company, host)) == [pytest.approx(14.0, abs=0.1), 200.0]
    assert lim.acquire((host,), "test") == 0              # the other companies at that bank go on


def test_the_sandbox_limits_each_company_through_its_faults_endpoint(sandbox):
    import requests
    from conftest import API_KEYS
    faults = f"{sandbox.moment_url}/_sandbox/faults"
    assert requests.post(faults, json={"company_limit": 5}, timeout=5).json()["company_limit"] == 5

    def statuses(company: str, n: int) -> list[requests.Response]:
        return [requests.get(f"{sandbox.moment_url}/api/1.0/companies/{company}/customers",
                             auth=("apikey", API_KEYS[company]), timeout=5) for _ in range(n)]
    acme = statuses("acme", 8)
    assert [a.status_code for a in acme[:5]] == [200] * 5 and 429 in [a.status_code for a in acme[5:]]
    assert all(a.headers["Retry-After"] == "1" for a in acme if a.status_code == 429)
    assert [f.status_code for f in statuses("fjord", 5)] == [200] * 5        # per company
    assert sandbox.moment_faults.limited["acme"] >= 1 and sandbox.moment_faults.limited["fjord"] == 0
    time.sleep(1.0)                                       # 5 calls a second come back
    assert [a.status_code for a in statuses("acme", 4)] == [200] * 4
    requests.post(faults, json={"company_limit": 0}, timeout=5)            # changed mid-run: off
    assert [a.status_code for a in statuses("acme", 12)] == [200] * 12
