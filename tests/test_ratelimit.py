"""The learned rate limit (clients/ratelimit.py) against a real Redis, on a simulated clock:
its climb, its floor, one cut for a burst of 429s, Retry-After honoured, a caller whose turn
was given before a cut taking a new one; and one caller (with the simulated clock) against a
simulated service that limits per second (a token bucket, or fixed one-second windows), whose
limit changes, or that answers 429 at random."""
from __future__ import annotations

import random
import threading
import time

import pytest

from clients.ratelimit import CLIMB, CUT, DOUBLE, Bucket, Limited, RateLimiter, climb, floor
from errors import TransientError
from worker.store.keys import Keys


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def limiter(r, clock: Clock | None = None, **kwargs) -> RateLimiter:
    if clock is not None:
        kwargs.update(clock=clock, sleep=clock.sleep)
    return RateLimiter(r, Keys("msb1test").rate_limits(), **kwargs)


class Service:
    """A service that limits each company to ``limit`` calls a second (``kind``: a token bucket
    holding one second's calls, or fixed one-second windows) and answers a share ``noise`` of
    the calls 429 at random, on the simulated clock."""

    def __init__(self, clock: Clock, limit: float, kind: str = "bucket", noise: float = 0.0):
        self.clock, self.limit, self.kind, self.noise = clock, limit, kind, noise
        self.tokens, self.at, self.window, self.used = limit, clock(), -1, 0
        self.rng, self.accepted, self.limited = random.Random(7), 0, 0

    def call(self) -> bool:
        now, over = self.clock(), False
        if self.limit and self.kind == "bucket":
            self.tokens, self.at = min(self.limit, self.tokens + (now - self.at) * self.limit), now
            over = self.tokens < 1
            self.tokens -= 0 if over else 1
        elif self.limit:
            if int(now) != self.window:
                self.window, self.used = int(now), 0
            over = self.used >= self.limit
            self.used += 0 if over else 1
        over = over or self.rng.random() < self.noise
        self.accepted, self.limited = self.accepted + (not over), self.limited + over
        return not over

    def run(self, lim: RateLimiter, bucket: tuple[Bucket, ...], seconds: float) -> tuple[float, float]:
        """One caller, as fast as the limit lets it (2 ms a call): accepted calls per second and
        the share answered 429 in these ``seconds``."""
        accepted, limited, start = self.accepted, self.limited, self.clock()
        while self.clock() < start + seconds:
            lim.acquire(bucket, "test")
            self.clock.now += 0.002
            if not self.call():
                lim.penalize(bucket, 1.0)
        accepted, limited = self.accepted - accepted, self.limited - limited
        return accepted / seconds, limited / max(1, accepted + limited)


def test_the_climb_back_and_beyond():
    assert climb(27.0, 30.0, 0, 200) == 27.0
    assert climb(27.0, 30.0, CLIMB / 2, 200) == pytest.approx(30 - 3 / 8)       # fast at first
    assert climb(27.0, 30.0, CLIMB, 200) == 30.0                               # flat near the limit
    assert climb(27.0, 30.0, CLIMB + 5, 200) < 30.2
    assert climb(27.0, 30.0, CLIMB + DOUBLE, 200) == pytest.approx(60.0)       # a limit that rose
    assert climb(27.0, 30.0, 3600, 200) == 200                                 # never above the ceiling


@pytest.mark.parametrize("ceiling, lowest", [(200.0, 4.0), (30.0, 1.0), (0.5, 0.5)])
def test_the_floor(ceiling, lowest):
    assert floor(ceiling) == lowest


@pytest.mark.parametrize("kind", ["bucket", "windows"])
def test_a_true_limit_is_found_from_a_high_ceiling_and_kept(r, kind):
    clock = Clock()
    lim, bucket = limiter(r, clock), (Bucket("test:true", 200.0),)
    service = Service(clock, 30, kind)
    _, start_429s = service.run(lim, bucket, 10)
    accepted, limited = service.run(lim, bucket, 120)
    assert start_429s < 0.1, start_429s                 # one cut from 200/s lands near 30
    assert accepted >= 0.88 * 30 and limited <= 0.01, (accepted, limited)
    assert 25 <= lim.learned(bucket)[0] <= 36


def test_a_limit_that_changes_is_followed(r):
    clock = Clock()
    lim, bucket = limiter(r, clock), (Bucket("test:change", 200.0),)
    service = Service(clock, 30)
    service.run(lim, bucket, 30)
    service.limit = 15
    service.run(lim, bucket, 5)
    low, low_429s = service.run(lim, bucket, 30)
    assert 0.7 * 15 <= low <= 15.5 and low_429s <= 0.02, (low, low_429s)
    service.limit = 45
    service.run(lim, bucket, 60)                        # a limit that rose is found again
    high, high_429s = service.run(lim, bucket, 60)
    assert high >= 0.8 * 45 and high_429s <= 0.02, (high, high_429s)


def test_random_429s_are_learned_as_noise_and_do_not_slow_the_calls(r):
    clock = Clock()
    lim, bucket = limiter(r, clock), (Bucket("test:noise", 100.0),)
    clean, _ = Service(clock, 0).run(lim, bucket, 20)
    r.delete("msb1test:rate:test:noise")
    service = Service(clock, 0, noise=0.05)
    service.run(lim, bucket, 10)
    noisy, limited = service.run(lim, bucket, 60)
    assert 0.03 < limited < 0.07
    assert noisy >= 0.75 * clean, (noisy, clean)        # the share of 429s did not fall: not cut
    assert 0.03 < float(r.hget("msb1test:rate:test:noise", "noise")) < 0.1


def test_sixteen_threads_seeing_one_burst_of_429s_cut_the_rate_once(r):
    clock = Clock()
    lim, bucket = limiter(r, clock), (Bucket("test:burst", 50.0),)
    for _ in range(90):                                 # two seconds of calls at 45/s
        lim.acquire(bucket, "test")
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
    assert rate == pytest.approx(CUT * 44, rel=0.03), rate      # once: 0.9 × the accepted rate, not 0.9^16
    clock.now += 1.5                                     # the next period's 429 is a test, not a cut
    assert lim.penalize(bucket, 1.0) == [pytest.approx(rate, rel=0.1)]


def test_retry_after_is_honoured_and_past_the_longest_wait_is_a_passing_error(r):
    lim, bucket = limiter(r), (Bucket("test:after", 100.0),)
    lim.penalize(bucket, 1.5)
    t0 = time.monotonic()
    waited = lim.acquire(bucket, "test")
    assert 1.3 < waited <= 1.5 and time.monotonic() - t0 >= 1.3, waited
    short = limiter(r, max_wait=1.0)
    r.delete("msb1test:rate:test:after")
    short.penalize(bucket, 5.0)
    with pytest.raises(TransientError, match="our own rate limit has 5s of calls waiting"):
        short.acquire(bucket, "SpareBank 1 Regnskap")


def test_a_caller_whose_turn_came_before_a_cut_takes_a_new_one(r):
    clock = Clock()
    bucket = (Bucket("test:turn", 10.0),)
    other = limiter(r, clock)                           # another worker
    for _ in range(10):
        other.acquire(bucket, "test")
    slept = []

    def sleep(seconds: float) -> None:                  # while this caller waits, a 429 comes
        slept.append(seconds)
        clock.now += seconds
        if len(slept) == 1:
            other.penalize(bucket, 2.0)
    lim = RateLimiter(r, Keys("msb1test").rate_limits(), clock=clock, sleep=sleep)
    lim.acquire(bucket, "test")
    assert len(slept) == 2 and slept[1] >= 1.5, slept   # its second turn is after the Retry-After


def test_a_429_holds_the_company_not_the_host(r):
    clock = Clock()
    lim = limiter(r, clock)
    company, host = Bucket("test:company", 20.0), Bucket("test:host", 200.0)
    Limited(lim, (company, host), "SpareBank 1 Regnskap").rate_limited(2.0)
    assert lim.learned((company, host)) == [pytest.approx(16.2, abs=0.1), 200.0]
    assert lim.acquire((host,), "test") == 0              # the other companies at that bank go on
    assert lim.acquire((company, host), "test") == pytest.approx(2.0)


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
