"""The per-record coalescing of the producer, against a real (private) Redis."""
import time

import pytest

from worker.store.coalescer import Coalescer
from worker.store.keys import Keys


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


def test_the_start_takes_the_lock_reads_the_state_and_stops_at_the_gate(co, r):
    """The sync's one round trip at its start: counted, held back by a pause or an open
    circuit (then nothing else happens), else the record's lock and its state."""
    from worker.store.coalescer import Gate
    r.hset("msb1test:state:acme:customers", "1", '{"sb1_id": 7}')
    lock = ("msb1test:lock:acme:customers:1", "token-a", 30)
    gate = Gate(("msb1test:lane:acme:live", "started"), "msb1test:paused", ("msb1test:circuit:acme:sb1",))
    kw = dict(lock=lock, state_key="msb1test:state:acme:customers", gate=gate)

    r.hset("msb1test:paused", "acme", "1")
    held = co.started("acme", "customers", 1, **kw)
    assert held.held and not held.locked
    assert not r.exists(lock[0]) and not r.exists("msb1test:started:acme:customers:1:running")
    r.delete("msb1test:paused")
    r.hset("msb1test:circuit:acme:sb1", "reason", "outage")
    assert co.started("acme", "customers", 1, **kw).held
    r.delete("msb1test:circuit:acme:sb1")

    began = co.started("acme", "customers", 1, **kw)
    assert (began.held, began.locked, began.state) == (False, True, '{"sb1_id": 7}')
    assert r.get(lock[0]) == "token-a" and 29_000 < r.pttl(lock[0]) <= 30_000
    assert r.exists("msb1test:started:acme:customers:1:running")
    assert r.hget("msb1test:lane:acme:live", "started") == "3"           # every start counted, held or not

    busy = co.started("acme", "customers", 1, lock=("msb1test:lock:acme:customers:1", "token-b", 30),
                      state_key="msb1test:state:acme:customers", gate=gate)
    assert (busy.held, busy.locked, busy.state) == (False, False, None)
    assert r.get(lock[0]) == "token-a"


def test_a_batch_sends_everything_at_once_and_hands_each_its_answers(r):
    from worker.store.batch import Batch, release_lock
    batch = Batch(r)
    got = {}
    since = batch.mark()
    batch.pipe.set("msb1test:a", "1")
    batch.pipe.incr("msb1test:n")
    batch.then(since, lambda answers: got.setdefault("first", answers))
    batch.pipe.set("msb1test:unwatched", "x")                      # no one asks for this answer
    r.set("msb1test:lock", "mine")
    release_lock(r, "msb1test:lock", "not-mine", batch, then=lambda ok: got.setdefault("theirs", ok))
    release_lock(r, "msb1test:lock", "mine", batch, then=lambda ok: got.setdefault("mine", ok))
    since = batch.mark()
    batch.pipe.get("msb1test:a")
    batch.then(since, lambda answers: 1 / 0)                       # a failing one ...
    since = batch.mark()
    batch.pipe.incr("msb1test:n")
    batch.then(since, lambda answers: got.setdefault("last", answers))
    assert not r.exists("msb1test:a")                               # nothing sent yet
    with pytest.raises(ZeroDivisionError):
        batch.execute()
    assert got == {"first": [True, 1], "theirs": False, "mine": True, "last": [2]}   # ... stops no other
    assert not r.exists("msb1test:lock")
    batch.execute()                                                 # empty: nothing to send
