"""The per-record coalescing of the producer, against a real (private) Redis."""
import time

import pytest

from worker.state import Coalescer, Keys


@pytest.fixture
def co(r):
    return Coalescer(r, Keys("msb1test"), window=1.0, pending_ttl=600)


def test_first_change_now_then_folded_then_followed_up_when_the_sync_ends(co):
    assert co.claim("acme", "customers", 1) == 0.0          # queue at once
    assert co.claim("acme", "customers", 1) is None         # a sync is queued: folded into it
    assert co.claim("acme", "customers", 2) == 0.0          # other records are independent
    co.started("acme", "customers", 1)                      # the sync fetches now
    assert co.claim("acme", "customers", 1) is None         # a change during the sync: marked
    assert co.claim("acme", "customers", 1) is None         # (any number of them)
    assert co.finished("acme", "customers", 1, ended=True) == 0.0   # its follow-up, at once
    assert co.claim("acme", "customers", 1) is None         # folded into the follow-up
    assert co.finished("acme", "customers", 2, ended=True) is None  # nothing came during 2: none


def test_a_burst_starts_at_most_two_syncs_a_second(co):
    assert co.claim("acme", "customers", 1) == 0.0
    co.started("acme", "customers", 1)
    assert co.claim("acme", "customers", 1) is None          # a change while it runs
    assert co.finished("acme", "customers", 1, ended=True) == 0.0     # the follow-up, at once
    co.started("acme", "customers", 1)                      # ... runs
    assert co.claim("acme", "customers", 1) is None          # another change while it runs
    wait = co.finished("acme", "customers", 1, ended=True)  # a third sync in the same second waits
    assert 0.9 < wait <= 1.0, wait
    co.release("acme", "customers", 1)
    time.sleep(1.05)                                        # a second later: at once again
    assert co.claim("acme", "customers", 1) == 0.0


def test_a_retry_covers_a_change_made_during_its_try(co):
    co.claim("acme", "customers", 1)
    co.started("acme", "customers", 1)
    assert co.claim("acme", "customers", 1) is None
    co.requeued("acme", "customers", 1, countdown=5)
    assert co.finished("acme", "customers", 1, ended=False) is None     # no follow-up: the retry fetches
    assert co.claim("acme", "customers", 1) is None                     # folded into the retry


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


def test_a_retry_counts_as_queued_until_it_is_due(co, r):
    co.claim("acme", "customers", 1)
    co.started("acme", "customers", 1)
    co.requeued("acme", "customers", 1, countdown=500)     # failed; tries again in 500 s
    co.finished("acme", "customers", 1, ended=False)
    assert co.claim("acme", "customers", 1) is None         # a webhook folds into the retry
    assert co.claim("acme", "customers", 1, stale_after=300) is None   # the poll trusts it too
    assert r.ttl("msb1test:pending:acme:customers:1") > 1000   # outlives the wait
    r.set("msb1test:pending:acme:customers:1", f"{time.time() - 301:.6f}")  # due 301 s ago: lost
    assert co.claim("acme", "customers", 1, stale_after=300) is not None


def test_the_poll_cursor_waits_for_unfinished_changes_within_a_bound():
    from datetime import datetime, timedelta, timezone
    from tasks.poll import _next_cursor
    started = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    oslo = timezone(timedelta(hours=1))
    assert _next_cursor(started, None, 3600) == started                   # all finished
    open_since = datetime(2026, 11, 25, 12, 30, tzinfo=oslo)             # 11:30 UTC
    assert _next_cursor(started, open_since, 3600) == started - timedelta(minutes=30)
    assert _next_cursor(started, open_since, 3600).tzinfo == timezone.utc  # comparable as text
    assert _next_cursor(started, open_since, 600) == started - timedelta(minutes=10)  # the bound
    later = started + timedelta(seconds=5)                               # stamped by a fast clock
    assert _next_cursor(started, later, 3600) == started
