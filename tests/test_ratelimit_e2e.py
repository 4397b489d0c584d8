"""The shared rate limit (clients/ratelimit.py) with real worker processes: 4 processes × 16
threads against the sandbox, which notes when each call arrived. Every one-second window
holds at most the limit + 10 %, and every record arrives. Against a sandbox that truly
limits a company (``company_limit``), the learned rate finds the limit, keeps to it, and
follows it when it changes; random 429s do not slow the calls."""
from __future__ import annotations

import threading
import time

import pytest
from conftest import CLIENT_ID, COMPANY_KEYS, wait_until

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


def test_a_wait_past_the_longest_is_a_passing_error_not_a_held_thread(r):
    import redis as redis_lib
    from conftest import REDIS_URL

    from clients.ratelimit import Bucket, RateLimiter
    from errors import TransientError
    from worker.store.keys import Keys
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


class Callers:
    """``threads`` threads calling SpareBank 1 through the shared limit (ceiling ``ceiling``
    calls/s) as a sync does: a 429 is a passing error, reported to the limit, and the thread
    goes on with its next call."""

    def __init__(self, sandbox, r, rsa_key, ceiling: float, threads: int = 16):
        from clients.ratelimit import Bucket, Limited, RateLimiter
        from clients.sb1 import Credentials, SB1Client, TokenProvider
        from worker.store.keys import Keys
        self.key, self.faults = COMPANY_KEYS["acme"], sandbox.sb1_faults
        self.limiter = RateLimiter(r, Keys("msb1test").rate_limits(), max_wait=30)
        self.bucket = (Bucket(Keys.sb1_company_bucket(self.key), ceiling),)
        tokens = TokenProvider(sandbox.token_url, Credentials.load(CLIENT_ID, key_file=str(rsa_key[0])),
                               redis_client=r, cache_key="msb1test:sb1-token")
        self.client = SB1Client(sandbox.sb1_url, self.key, tokens,
                                limits=Limited(self.limiter, self.bucket, SB1Client.service))
        self.client.query("currencycodes", top=1)                  # the token, before the clock runs
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._call) for _ in range(threads)]

    def _call(self) -> None:
        from errors import TransientError
        while not self.stop.is_set():
            try:
                self.client.query("currencycodes", top=1)
            except TransientError:
                pass

    def __enter__(self) -> Callers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def counts(self) -> tuple[int, int]:
        """Calls the sandbox accepted and answered 429, so far."""
        return self.faults.passed[self.key], self.faults.limited[self.key]

    def measure(self, seconds: float) -> tuple[float, float, float]:
        """Accepted calls per second in the next ``seconds``, the share answered 429, and the
        learned rate's mean (sampled every 0.1 s)."""
        (ok0, limited0), t0, learned = self.counts(), time.monotonic(), []
        last, self.trace = (ok0, limited0), []
        while time.monotonic() < t0 + seconds:
            learned += self.limiter.learned(self.bucket)
            time.sleep(0.1)
            if len(learned) % 10 == 0:          # each second: accepted/429s, the learned rate
                now = self.counts()
                self.trace.append(f"{now[0] - last[0]}/{now[1] - last[1]}@{learned[-1]:.0f}")
                last = now
        (ok, limited), elapsed = self.counts(), time.monotonic() - t0
        ok, limited = ok - ok0, limited - limited0
        return ok / elapsed, limited / max(1, ok + limited), sum(learned) / len(learned)


def test_the_learned_rate_finds_a_true_limit_and_keeps_to_it(sandbox, r, rsa_key):
    sandbox.sb1_faults.configure(company_limit=30)
    with Callers(sandbox, r, rsa_key, ceiling=200.0) as callers:
        accepted, limited, learned = callers.measure(20.0)
    print(f"true limit 30/s, ceiling 200/s: {accepted:.1f} accepted calls/s ({accepted / 30:.0%} of the limit), "
          f"{limited:.1%} answered 429, learned {learned:.1f}/s on average\n" + " ".join(callers.trace))
    assert accepted >= 0.8 * 30, f"{accepted:.1f} accepted calls/s against a limit of 30"
    assert limited <= 0.03, f"{limited:.1%} of the calls answered 429"
    assert accepted <= 32 and limited > 0, "the sandbox limits, and the limiter looked for its limit"
    assert 20 <= learned <= 45, learned


def test_the_learned_rate_follows_a_limit_that_changes(sandbox, r, rsa_key):
    faults = sandbox.sb1_faults
    faults.configure(company_limit=30)
    with Callers(sandbox, r, rsa_key, ceiling=200.0) as callers:
        time.sleep(4.0)
        first, _, learned_first = callers.measure(4.0)
        faults.configure(company_limit=15)
        time.sleep(4.0)                                         # found within a few seconds
        low, low_limited, learned_low = callers.measure(6.0)
        faults.configure(company_limit=0)                       # the limit rose: found by probing
        time.sleep(35.0)
        again, again_limited, learned_again = callers.measure(5.0)
    print(f"limit 30 -> 15 -> none: {first:.1f} accepted calls/s (learned {learned_first:.1f}/s), then {low:.1f} "
          f"({low_limited:.1%} 429s, learned {learned_low:.1f}/s), then {again:.1f} ({again_limited:.1%} 429s, "
          f"learned {learned_again:.1f}/s)\n" + " ".join(callers.trace))
    assert first >= 0.75 * 30, first
    assert 0.6 * 15 <= low <= 15 * 1.05 and low_limited <= 0.1, (low, low_limited)
    assert learned_low < 0.75 * learned_first, (learned_first, learned_low)        # followed down
    assert again >= 1.2 * low and again_limited == 0, (again, again_limited)       # and back up
    assert learned_again > 1.2 * learned_low, (learned_low, learned_again)


def test_random_429s_do_not_slow_the_calls(sandbox, r, rsa_key):
    with Callers(sandbox, r, rsa_key, ceiling=60.0) as callers:
        clean, _, _ = callers.measure(4.0)
        sandbox.sb1_faults.configure(rate_limit_rate=0.05)
        time.sleep(4.0)                                         # a cut, its test, undone
        noisy, limited, learned = callers.measure(10.0)
    print(f"5 % random 429s: {noisy:.1f} accepted calls/s against {clean:.1f} without ({noisy / clean:.0%}), "
          f"{limited:.1%} answered 429, learned {learned:.1f}/s\n" + " ".join(callers.trace))
    assert 0.02 <= limited <= 0.09, limited
    assert noisy >= 0.6 * clean, (noisy, clean)


def test_the_learned_rate_shows_in_status_and_the_metrics(sandbox, start_worker, worker_env, r):
    import json
    import subprocess
    import sys

    import redis as redis_lib
    import requests
    from conftest import REDIS_URL, ROOT, free_port
    from test_operations_e2e import metric

    from clients.ratelimit import Bucket, RateLimiter
    from worker.store.keys import Keys
    limits = {"MSB1_SB1_RATE_LIMIT": "50", "MSB1_MOMENT_RATE_LIMIT": "25", "MSB1_SB1_HOST_RATE_LIMIT": "200"}
    limiter = RateLimiter(redis_lib.Redis.from_url(REDIS_URL), Keys("msb1test").rate_limits())
    limiter.penalize((Bucket(Keys.sb1_company_bucket(COMPANY_KEYS["acme"]), 50.0),))      # 50 → 0.9 × 45
    env = dict(worker_env, **limits)

    def status(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "worker.cli", "status", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60, check=True).stdout
    shown = json.loads(status("--json"))["integrations"]
    [company, host] = shown["acme"]["rate_limits"]["SpareBank 1 Regnskap"]
    assert company["bucket"] == "company" and 40 <= company["calls_per_second"] < 42 and company["ceiling"] == 50
    assert host == {"bucket": "host", "calls_per_second": 200, "ceiling": 200}
    assert shown["acme"]["rate_limits"]["Moment"] == [{"bucket": "company", "calls_per_second": 25, "ceiling": 25}]
    assert shown["fjord"]["rate_limits"]["SpareBank 1 Regnskap"][0]["calls_per_second"] == 50
    assert "SpareBank 1 Regnskap rate limit: company 4" in status("--integration", "acme")

    port = free_port()
    start_worker(MSB1_METRICS_PORT=port, **limits)
    text = wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text, 20, 0.2,
                      message="the worker's metrics")
    learned = metric(text, "msb1_rate_limit_calls_per_second", integration="acme", service="SpareBank 1 Regnskap")
    assert learned is not None and 40 <= learned < 46, learned
    # at their ceiling (nothing learned): no series (the series budget)
    assert metric(text, "msb1_rate_limit_calls_per_second", integration="fjord", service="SpareBank 1 Regnskap") is None
    assert metric(text, "msb1_rate_limit_calls_per_second", integration="acme", service="Moment") is None


def test_two_worker_processes_backfilling_keep_to_a_true_limit(sandbox, start_worker, r):
    from worker.intake.producer import enqueue
    key = COMPANY_KEYS["acme"]
    seeded = seed_customers(sandbox.moment, "acme", 300)
    for _ in range(2):          # the product's default ceilings
        start_worker(concurrency=16, MSB1_SB1_RATE_LIMIT=200, MSB1_SB1_HOST_RATE_LIMIT=1000, MSB1_MOMENT_RATE_LIMIT=0)
    sandbox.sb1_faults.configure(company_limit=30)
    t0 = time.time()
    for rec in seeded:
        enqueue("acme", "customers", rec["id"])
    wait_until(lambda: len(sandbox.sb1.customers(key)) == 300, 120, 0.2, message="all 300 customers")
    elapsed = time.time() - t0
    ok, limited = sandbox.sb1_faults.passed[key], sandbox.sb1_faults.limited[key]
    print(f"2 workers × 16 threads, true limit 30/s, ceiling 200/s: {ok} calls accepted in {elapsed:.1f}s "
          f"({ok / elapsed:.1f}/s), {limited} answered 429 ({limited / (ok + limited):.1%})")
    assert ok / elapsed >= 0.6 * 30, f"{ok / elapsed:.1f} accepted calls/s against a limit of 30"
    assert limited / (ok + limited) <= 0.04, f"{limited} of {ok + limited} calls answered 429"
    assert len({c["CustomerNumber"] for c in sandbox.sb1.customers(key)}) == 300
