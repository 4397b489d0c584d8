"""Coalescing: a burst of changes to one record becomes few syncs, never losing the last one."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import redis

from worker.store.batch import Batch
from worker.store.keys import Keys
from worker.store.records import Paused

# How long until a sync of one record may start: each record has a bucket of
# ``max_per_window`` starts that refills one start per ``window`` seconds. KEYS[4] is the
# bucket (tokens, at); ARGV[1] now, ARGV[3] window, ARGV[4] the bucket's size.
_DUE = """
local function due(now)
  local st = redis.call('HMGET', KEYS[4], 'tokens', 'at')
  local size = tonumber(ARGV[4])
  local tokens = tonumber(st[1] or size)
  local at = tonumber(st[2] or now)
  tokens = math.min(size, tokens + math.max(0, now - at) / tonumber(ARGV[3]))
  if tokens >= 1 then return 0 end
  return (1 - tokens) * tonumber(ARGV[3])
end
"""


# Decide, atomically, what a new change to one record needs. KEYS: pending, running, dirty,
# bucket, the paused integrations. ARGV: now, stale_after ('' = trust the mark), window,
# bucket size, pending ttl, dirty ttl, the integration. Returns "paused" (nothing is
# queued), "folded" (a sync is running and will be followed), "queued" (a queued sync
# covers it), or the countdown for a new sync.
_CLAIM = _DUE + """
local now = tonumber(ARGV[1])
if redis.call('HEXISTS', KEYS[5], ARGV[7]) == 1 then return 'paused' end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SET', KEYS[3], '1', 'EX', tonumber(ARGV[6]))
  return 'folded'
end
local mark = redis.call('GET', KEYS[1])
if mark and (ARGV[2] == '' or now - tonumber(mark) < tonumber(ARGV[2])) then return 'queued' end
local countdown = due(now)
redis.call('SET', KEYS[1], string.format('%.6f', now + countdown), 'EX', tonumber(ARGV[5]))
return string.format('%.6f', countdown)
"""


# A sync ended. KEYS and ARGV as _CLAIM, plus ARGV[7] = 1 when the chain ended (written,
# unchanged, dead-lettered): then a change that came while it ran gets its follow-up now
# (by the same bucket). Returns the follow-up's countdown, or nil.
_FINISHED = _DUE + """
redis.call('DEL', KEYS[2])
local dirty = redis.call('GET', KEYS[3])
redis.call('DEL', KEYS[3])
if ARGV[7] ~= '1' or not dirty then return nil end
local now = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local countdown = due(now)
redis.call('SET', KEYS[1], string.format('%.6f', now + countdown), 'EX', tonumber(ARGV[5]))
return string.format('%.6f', countdown)
"""


# A sync starts: it takes a start from the record's bucket. KEYS[4] bucket; ARGV[1] now,
# ARGV[3] window, ARGV[4] size. With KEYS[5] (the record's lock) and KEYS[6] (the state
# hash), it also tries the lock (ARGV[7] token, ARGV[8] milliseconds) and, when it got it,
# reads the record's state (field ARGV[9]): returns {1, state or false}, or {0} when the
# lock is held. Without them, returns 1.
# With a gate (KEYS[7] a counter hash, KEYS[8] the paused integrations, KEYS[9..] keys
# that hold the sync back while they exist, ARGV[10] the integration, ARGV[11] the
# counter's field), it first counts the start, then returns {'held'} (nothing started)
# when the integration is paused or a key of KEYS[9..] exists.
_START = """
if KEYS[7] then
  redis.call('HINCRBY', KEYS[7], ARGV[11], 1)
  if redis.call('HEXISTS', KEYS[8], ARGV[10]) == 1 then return {'held'} end
  for i = 9, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then return {'held'} end
  end
end
local now = tonumber(ARGV[1])
local size = tonumber(ARGV[4])
local st = redis.call('HMGET', KEYS[4], 'tokens', 'at')
local tokens = tonumber(st[1] or size)
local at = tonumber(st[2] or now)
tokens = math.min(size, tokens + math.max(0, now - at) / tonumber(ARGV[3])) - 1
redis.call('HSET', KEYS[4], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[4], math.ceil(tonumber(ARGV[3]) * (size + 1)) + 1)
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[6]))
if not KEYS[5] then return 1 end
if not redis.call('SET', KEYS[5], ARGV[7], 'NX', 'PX', tonumber(ARGV[8])) then return {0} end
return {1, redis.call('HGET', KEYS[6], ARGV[9])}
"""


@dataclass(frozen=True)
class Gate:
    """What may hold a sync back, checked as it starts (see ``Coalescer.started``)."""
    count: tuple[str, str]      # (hash, field) counted on every start
    paused: str                 # the hash of paused integrations
    held_by: tuple[str, ...]    # keys that hold the sync back while they exist (open circuits)


@dataclass(frozen=True)
class Start:
    held: bool = False          # paused, or a gate key exists: nothing was started
    locked: bool = False        # the record's lock is ours
    state: str | None = None    # the record's state as stored, read under the lock


class Coalescer:
    """Folds a burst of changes to one record into few syncs, never losing the last one.

    A change to a record with no sync queued or running queues one at once. While a sync is
    queued, further changes are folded into it (it fetches the record when it runs). While a
    sync runs, further changes mark the record "dirty", and the sync queues its follow-up the
    moment it ends, which fetches the latest state. So a change waits at most for the sync
    already under way. Bursts stay folded: each record may start ``max_per_window`` syncs at
    once, then one per ``window`` seconds (a token bucket), so 20 changes in a second give at
    most three writes, and a record changed twice in a row is still written at once. A
    worker that dies mid-sync loses nothing: its message is delivered again and fetches the
    latest state.
    """

    def __init__(self, r: redis.Redis, keys: Keys, window: float, pending_ttl: int,
                 max_per_window: int = 2, running_ttl: int = 120):
        self.redis, self.keys, self.window, self.pending_ttl = r, keys, window, pending_ttl
        self.max_per_window, self.running_ttl = max_per_window, running_ttl
        self._claim = r.register_script(_CLAIM)
        self._finished = r.register_script(_FINISHED)
        self._start = r.register_script(_START)

    def _keys(self, integration_id: str, data_type: str, record_id: int) -> list[str]:
        return [self.keys.pending(integration_id, data_type, record_id),
                *self.keys.started(integration_id, data_type, record_id)]

    def _args(self, stale_after: float | None) -> list:
        return [f"{time.time():.6f}", "" if stale_after is None else stale_after, self.window,
                self.max_per_window, self.pending_ttl, self.running_ttl]

    def claim(self, integration_id: str, data_type: str, record_id: int,
              stale_after: float | None = None) -> float | None:
        """Seconds until a new sync should run, or None when a queued or running sync
        covers the change. Raises ``Paused`` for a paused integration (one round trip).

        ``stale_after``: a "queued" mark older than this many seconds is not trusted (the
        poll passes its interval): its message may never have reached the queue, if Redis
        failed between the mark and the publish. A second message is harmless.
        """
        answer = self._claim(keys=[*self._keys(integration_id, data_type, record_id), self.keys.paused()],
                             args=[*self._args(stale_after), integration_id])
        if answer == "paused":
            raise Paused(integration_id)
        return None if answer in ("folded", "queued") else float(answer)

    def requeued(self, integration_id: str, data_type: str, record_id: int, countdown: float) -> None:
        """A sync put itself back on the queue (a retry in ``countdown`` seconds): changes
        until then are folded into it, as into any queued sync. The mark holds the time
        the retry is due, so the poll does not take it for a lost message before then."""
        due = time.time() + countdown
        self.redis.set(self.keys.pending(integration_id, data_type, record_id), f"{due:.6f}",
                       ex=int(countdown) + self.pending_ttl)

    def release(self, integration_id: str, data_type: str, record_id: int) -> None:
        """Undo a claim whose message could not be queued."""
        self.redis.delete(self.keys.pending(integration_id, data_type, record_id))

    def started(self, integration_id: str, data_type: str, record_id: int, *,
                lock: tuple[str, str, float] | None = None, state_key: str | None = None,
                gate: Gate | None = None) -> Start:
        """A sync is about to fetch the record: it covers every change so far; later ones
        mark it dirty and get a follow-up when it ends.

        ``lock`` (name, token, seconds) and ``state_key``: in the same round trip, try the
        record's lock and read the record's state. ``gate`` (with ``lock``): first count
        the start, and start nothing while the integration is paused or a gate key exists."""
        keys, args = self._keys(integration_id, data_type, record_id), self._args(None)
        if lock is None:
            self._start(keys=keys, args=args)
            return Start()
        name, token, seconds = lock
        keys, args = [*keys, name, state_key], [*args, token, int(seconds * 1000), str(record_id)]
        if gate is not None:
            keys += [gate.count[0], gate.paused, *gate.held_by]
            args += [integration_id, gate.count[1]]
        answer = self._start(keys=keys, args=args)
        if answer[0] == "held":
            return Start(held=True)
        return Start(locked=bool(answer[0]), state=answer[1] if len(answer) > 1 else None)

    def finished(self, integration_id: str, data_type: str, record_id: int, *, ended: bool,
                 batch: Batch | None = None, then: Callable[[float | None], None] | None = None) -> float | None:
        """The sync let go of the record. When its chain ended and a change came meanwhile,
        the follow-up's countdown (the caller queues it); else None. A retry (``ended``
        False) covers the change itself. With ``batch``, ``then(countdown)`` gets the answer."""
        keys = self._keys(integration_id, data_type, record_id)
        args = [*self._args(None), "1" if ended else "0"]
        if batch is None:
            answer = self._finished(keys=keys, args=args)
            return None if answer is None else float(answer)
        since = batch.mark()
        batch.pipe.eval(_FINISHED, len(keys), *keys, *args)
        if then:
            batch.then(since, lambda answers: then(None if answers[0] is None else float(answers[0])))
        return None
