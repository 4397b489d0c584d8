"""The shared rate limit (clients/ratelimit.py) with real worker processes: 4 processes × 16
threads against the sandbox, which notes when each call arrived. Every one-second window
holds at most the limit + 10 %, and every record arrives. A 429 halves the rate for a while."""
from __future__ import annotations

import time

import pytest
from conftest import COMPANY_KEYS, wait_until

from sandbox.moment import seed_customers

pytestmark = pytest.mark.slow
LIMIT = 40.0


def busiest_second(times: list[float]) -> int:
    """The most calls in any one-second window (sliding, from each call)."""
    times = sorted(times)
    most, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    return most


def test_four_processes_share_one_limit_and_every_record_arrives(sandbox, start_worker, r):
    from worker.intake.producer import enqueue
    key = COMPANY_KEYS["acme"]
    seeded = seed_customers(sandbox.moment, "acme", 150)
    limits = {"MSB1_SB1_RATE_LIMIT": LIMIT, "MSB1_SB1_HOST_RATE_LIMIT": 0}
    for _ in range(4):
        start_worker(concurrency=16, **limits)
    sandbox.sb1.reset_counters()
    t0 = time.time()
    for rec in seeded:
        enqueue("acme", "customers", rec["id"])
    wait_until(lambda: len(sandbox.sb1.customers(key)) == 150, 120, 0.5, message="all 150 customers")
    elapsed = time.time() - t0
    times = list(sandbox.sb1.request_times[key])
    most = busiest_second(times)
    assert most <= LIMIT * 1.1, f"{most} calls in one second (limit {LIMIT:g})"
    assert len(times) / elapsed > LIMIT * 0.6, f"{len(times)} calls in {elapsed:.1f}s: the limit throttles too hard"
    numbers = [c["CustomerNumber"] for c in sandbox.sb1.customers(key)]
    assert len(set(numbers)) == 150
    print(f"{len(times)} calls in {elapsed:.1f}s, busiest second {most} (limit {LIMIT:g})")


def test_a_429_halves_the_rate_for_a_while(r):
    import redis as redis_lib
    from conftest import REDIS_URL

    from clients.ratelimit import Bucket, RateLimiter
    from worker.store.keys import Keys
    limiter = RateLimiter(redis_lib.Redis.from_url(REDIS_URL), Keys("msb1test").rate_limits(), max_wait=30)
    bucket = (Bucket("test:company", 20.0),)

    def calls_in(seconds: float) -> int:
        n, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            limiter.acquire(bucket, "test")
            n += 1
        return n
    calls_in(0.3)                                         # use up the burst
    before = calls_in(1.0)
    assert limiter.penalize(bucket) == 0.5
    after = calls_in(1.0)
    # never over 90 % of 20, then of 10 (a busy machine makes fewer calls, never more)
    assert before <= 21 and after <= 11, (before, after)
    assert before >= 13, (before, after)       # well above the halved rate: the halving shows
    assert r.ttl("msb1test:rate:test:company:penalty") > 50        # it comes back by itself


def test_a_wait_past_the_longest_is_a_passing_error_not_a_held_thread(r):
    import redis as redis_lib
    from conftest import REDIS_URL

    from clients.ratelimit import Bucket, RateLimiter
    from worker.store.keys import Keys
    from errors import TransientError
    limiter = RateLimiter(redis_lib.Redis.from_url(REDIS_URL), Keys("msb1test").rate_limits(), max_wait=0.3)
    bucket = (Bucket("test:slow", 2.0),)          # 1.9 calls/s with the headroom: 0.53 s apart
    assert limiter.acquire(bucket, "SpareBank 1 Regnskap") == 0
    turned_away = []
    for _ in range(3):                            # the next call would wait past the longest
        with pytest.raises(TransientError, match="our own rate limit has 1s of calls waiting") as err:
            limiter.acquire(bucket, "SpareBank 1 Regnskap")
        turned_away.append(err.value.retry_after)
    # a caller turned away takes no turn: the next one's wait does not grow
    assert all(0.4 < w < 0.6 for w in turned_away), turned_away
