"""The per-record coalescing of the producer, against a real (private) Redis."""
import time

import pytest

from worker.state import Coalescer, Keys


@pytest.fixture
def co(r):
    return Coalescer(r, Keys("msb1test"), window=1.0, pending_ttl=600)


def test_first_change_now_then_folded_then_throttled_after_a_start(co):
    assert co.claim("acme", "customers", 1) == 0.0          # queue at once
    assert co.claim("acme", "customers", 1) is None         # a sync is queued: folded into it
    assert co.claim("acme", "customers", 2) == 0.0          # other records are independent
    co.started("acme", "customers", 1)                      # the sync fetches now
    wait = co.claim("acme", "customers", 1)                 # a change after the fetch: its own sync,
    assert 0.9 < wait <= 1.0                                # one window after that start
    assert co.claim("acme", "customers", 1) is None


def test_release_after_a_failed_publish(co):
    assert co.claim("acme", "customers", 1) == 0.0
    co.release("acme", "customers", 1)
    assert co.claim("acme", "customers", 1) == 0.0


def test_a_stale_mark_is_not_trusted_by_the_poll(co, r):
    assert co.claim("acme", "customers", 1) == 0.0
    r.set("msb1test:pending:acme:customers:1", f"{time.time() - 400:.6f}")   # 400 s old: lost message?
    assert co.claim("acme", "customers", 1) is None                         # webhooks still fold
    assert co.claim("acme", "customers", 1, stale_after=300) == 0.0         # the poll queues again
    assert co.claim("acme", "customers", 1, stale_after=300) is None        # ...once
    assert 590 < r.ttl("msb1test:pending:acme:customers:1") <= 600
