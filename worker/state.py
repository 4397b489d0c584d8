"""What the worker remembers in Redis, all under one key prefix.

``{p}:state:{integration}:{data_type}``  hash  record id → last successful transfer
``{p}:handled:{integration}:{data_type}``  hash  record id → version a sync last finished with
``{p}:dead:{integration}``              hash  "{data_type}:{record id}" → dead letter
``{p}:stats:{integration}``             hash  counters (created, updated, unchanged, failed, ...)
``{p}:lock:{integration}:{data_type}:{record id}``  per-record lock
``{p}:number-lock:{integration}:{data_type}:{number}``  one writer per customer/project number
``{p}:owner:{integration}:{data_type}``  hash  platform ID → the Moment record id that wrote it
``{p}:sb1-token:{digest}``              the shared SpareBank 1 access token
``{p}:pending:{integration}:{data_type}:{record id}``  a sync of this record is queued (due time)
``{p}:started:{integration}:{data_type}:{record id}:running|dirty|bucket``  a sync runs;
                                        a change came meanwhile; the record's start bucket
``{p}:cursor:{integration}:{data_type}``  the safety-net poll's "modified since" cursor
``{p}:paused``                          hash  integration → when it was paused
``{p}:history:{integration}:{data_type}:{record id}``  list  the record's last syncs, newest first
"""
from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import redis

from .metrics import SYNCS


class Batch:
    """Redis commands that go together in one round trip, each with what to do with its
    answers. A sync gathers its writes in one of these (``SyncContext.writes``) instead of a
    round trip for each: py-spy put a third of a sync's CPU in redis-py's cost per command.

    ``pipe``: add commands to it; ``then(since, fn)``, called right after adding them:
    after :meth:`execute`, ``fn`` gets the answers of the commands added since ``mark()``.
    """

    def __init__(self, r: redis.Redis):
        self.pipe = r.pipeline(transaction=False)
        self._then: list[tuple[int, int, Callable[[list], None]]] = []

    def mark(self) -> int:
        return len(self.pipe)

    def then(self, since: int, fn: Callable[[list], None]) -> None:
        self._then.append((since, len(self.pipe), fn))

    def execute(self) -> None:
        """Send everything (if anything); then each ``then`` in the order they were given."""
        if not len(self.pipe):
            return
        then, self._then = self._then, []
        answers = self.pipe.execute()
        errors = []
        for since, end, fn in then:
            try:
                fn(answers[since:end])
            except Exception as exc:     # one failing must not keep the others from running
                errors.append(exc)
        if errors:
            raise errors[0]


# Let go of a lock only if it is still ours (it may have expired and gone to another).
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def new_token() -> str:
    """A lock owner's token (redis-py's own is a uuid1, slower to make)."""
    return uuid.uuid4().hex


def release_lock(r: redis.Redis, name: str, token: str, batch: Batch | None = None,
                 then: Callable[[bool], None] | None = None) -> None:
    """Release a lock taken with ``token``, now or with ``batch``. ``then(released)``: False
    when it had expired meanwhile. EVAL, not EVALSHA: a pipeline with a registered script
    first asks Redis whether it knows it, a round trip of its own."""
    if batch is None:
        released = bool(r.eval(_RELEASE, 1, name, token))
        if then:
            then(released)
        return
    since = batch.mark()
    batch.pipe.eval(_RELEASE, 1, name, token)
    if then:
        batch.then(since, lambda answers: then(bool(answers[0])))


class Keys:
    def __init__(self, prefix: str):
        self.prefix = prefix

    def state(self, integration_id: str, data_type: str) -> str:
        return f"{self.prefix}:state:{integration_id}:{data_type}"

    def dead(self, integration_id: str) -> str:
        return f"{self.prefix}:dead:{integration_id}"

    def stats(self, integration_id: str) -> str:
        return f"{self.prefix}:stats:{integration_id}"

    def lock(self, integration_id: str, data_type: str, record_id: int) -> str:
        return f"{self.prefix}:lock:{integration_id}:{data_type}:{record_id}"

    def number_lock(self, integration_id: str, data_type: str, number: object) -> str:
        return f"{self.prefix}:number-lock:{integration_id}:{data_type}:{number}"

    def owner(self, integration_id: str, data_type: str) -> str:
        return f"{self.prefix}:owner:{integration_id}:{data_type}"

    def pending(self, integration_id: str, data_type: str, record_id: int) -> str:
        return f"{self.prefix}:pending:{integration_id}:{data_type}:{record_id}"

    def started(self, integration_id: str, data_type: str, record_id: int) -> str:
        return f"{self.prefix}:started:{integration_id}:{data_type}:{record_id}"

    def handled(self, integration_id: str, data_type: str) -> str:
        return f"{self.prefix}:handled:{integration_id}:{data_type}"

    def cursor(self, integration_id: str, data_type: str) -> str:
        return f"{self.prefix}:cursor:{integration_id}:{data_type}"

    def last_poll(self) -> str:
        """When beat's poll last ran (seconds since the epoch): the health signal of beat."""
        return f"{self.prefix}:last-poll"

    def paused(self) -> str:
        return f"{self.prefix}:paused"

    def history(self, integration_id: str, data_type: str, record_id: int) -> str:
        return f"{self.prefix}:history:{integration_id}:{data_type}:{record_id}"

    def poll_guard(self, integration_id: str, data_type: str) -> str:
        return f"{self.prefix}:poll-guard:{integration_id}:{data_type}"


class SyncState:
    """The last successful transfer of each record: its fingerprint and platform ID."""

    def __init__(self, r: redis.Redis, keys: Keys):
        self.redis, self.keys = r, keys

    def get(self, integration_id: str, data_type: str, record_id: int) -> dict[str, Any] | None:
        return self.parse(self.redis.hget(self.keys.state(integration_id, data_type), str(record_id)))

    @staticmethod
    def parse(raw: str | None) -> dict[str, Any] | None:
        return json.loads(raw) if raw else None

    def save(self, integration_id: str, data_type: str, record_id: int, pipe=None, **values: Any) -> dict:
        """Store the record's state (now, or with ``pipe``); returns it as stored."""
        values["synced_at"] = time.time()
        (pipe or self.redis).hset(self.keys.state(integration_id, data_type), str(record_id), json.dumps(values))
        return values

    def count(self, integration_id: str, data_type: str) -> int:
        return self.redis.hlen(self.keys.state(integration_id, data_type))

    # Which Moment record wrote which platform record: a second Moment record that claims
    # the same number is refused instead of overwriting the first one's record.

    def owner(self, integration_id: str, data_type: str, sb1_id: int) -> int | None:
        raw = self.redis.hget(self.keys.owner(integration_id, data_type), str(sb1_id))
        return int(raw) if raw else None

    def own(self, integration_id: str, data_type: str, sb1_id: int, record_id: int, pipe=None) -> None:
        (pipe or self.redis).hset(self.keys.owner(integration_id, data_type), str(sb1_id), str(record_id))

    # Which version of each record a sync last finished with, whatever the outcome (written,
    # unchanged, a draft left alone, dead-lettered). The poll keeps its cursor behind any
    # change that no sync has finished yet, so a lost message is found again.

    def mark_handled(self, integration_id: str, data_type: str, record_id: int,
                     version: datetime, pipe=None) -> None:
        (pipe or self.redis).hset(self.keys.handled(integration_id, data_type), str(record_id),
                                  version.astimezone(timezone.utc).isoformat())

    def finished_version(self, integration_id: str, data_type: str, record_id: int) -> datetime | None:
        """The newest version of the record a sync has finished with (or written to the
        books, also as another record's dependency); None when there is none."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.keys.state(integration_id, data_type), str(record_id))
        pipe.hget(self.keys.handled(integration_id, data_type), str(record_id))
        state, handled = pipe.execute()
        written = json.loads(state).get("modified") if state else None
        versions = [datetime.fromisoformat(v) for v in (written, handled) if v]
        return max(versions, default=None)


@dataclass
class DeadLetter:
    """A record that could not be transferred, kept until a replay succeeds.

    Holds no personal data: ``what`` names the record by type and number only.
    """
    integration_id: str
    data_type: str
    record_id: int
    what: str
    error: str
    kind: str
    first_failed_at: float = field(default_factory=time.time)
    last_failed_at: float = field(default_factory=time.time)
    failures: int = 1
    notified: bool = False

    @property
    def field(self) -> str:
        return f"{self.data_type}:{self.record_id}"


def same_problem(error: str) -> str:
    """An error without what differs on every try of the same problem (the request id)."""
    return re.sub(r"\s*\(request id [^)]*\)", "", error)


class DeadLetters:
    def __init__(self, r: redis.Redis, keys: Keys):
        self.redis, self.keys = r, keys

    def record(self, letter: DeadLetter) -> tuple[DeadLetter, bool]:
        """Store ``letter``; True when it is new or its error changed (worth an email)."""
        key = self.keys.dead(letter.integration_id)
        raw = self.redis.hget(key, letter.field)
        news = True
        if raw:
            old = DeadLetter(**json.loads(raw))
            news = same_problem(old.error) != same_problem(letter.error)
            letter.first_failed_at = old.first_failed_at
            letter.failures = old.failures + 1
            letter.notified = old.notified and not news
        self.redis.hset(key, letter.field, json.dumps(asdict(letter)))
        return letter, news

    def mark_notified(self, letter: DeadLetter) -> None:
        letter.notified = True
        self.redis.hset(self.keys.dead(letter.integration_id), letter.field, json.dumps(asdict(letter)))

    def mark_notified_fields(self, integration_id: str, field_names: list[str]) -> None:
        """Mark many dead letters notified in two round trips (those still there: a replay
        may have cleared some)."""
        if not field_names:
            return
        key = self.keys.dead(integration_id)
        updated = {}
        for name, raw in zip(field_names, self.redis.hmget(key, field_names)):
            if raw:
                letter = json.loads(raw)
                letter["notified"] = True
                updated[name] = json.dumps(letter)
        if updated:
            self.redis.hset(key, mapping=updated)

    def resolve(self, integration_id: str, data_type: str, record_id: int, pipe=None) -> bool | None:
        """Forget the dead letter; True if there was one (on a pipeline: its answer says)."""
        answer = (pipe or self.redis).hdel(self.keys.dead(integration_id), f"{data_type}:{record_id}")
        return None if pipe is not None else bool(answer)

    def count(self, integration_id: str) -> int:
        return self.redis.hlen(self.keys.dead(integration_id))

    def list(self, integration_id: str) -> list[DeadLetter]:
        rows = self.redis.hgetall(self.keys.dead(integration_id))
        letters = [DeadLetter(**json.loads(v)) for v in rows.values()]
        return sorted(letters, key=lambda d: d.first_failed_at)



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


class Paused(RuntimeError):
    """The integration is paused (``moment-sb1 pause``): nothing is queued for it. The poll
    finds the change once it is resumed."""

    def __init__(self, integration_id: str):
        super().__init__(f"{integration_id} is paused; its changes are picked up when it is resumed")


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
        base = self.keys.started(integration_id, data_type, record_id)
        return [self.keys.pending(integration_id, data_type, record_id), f"{base}:running", f"{base}:dirty",
                f"{base}:bucket"]

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


class Stats:
    """Outcome counters per integration in Redis (``status``), and in Prometheus (``/metrics``)."""

    def __init__(self, r: redis.Redis, keys: Keys):
        self.redis, self.keys = r, keys

    def incr(self, integration_id: str, data_type: str, outcome: str, pipe=None) -> None:
        SYNCS.labels(integration_id, data_type, str(outcome)).inc()
        own = pipe is None
        pipe = self.redis.pipeline(transaction=False) if own else pipe
        pipe.hincrby(self.keys.stats(integration_id), f"{data_type}:{outcome}", 1)
        pipe.hset(self.keys.stats(integration_id), f"{data_type}:last_{outcome}_at", f"{time.time():.3f}")
        if own:
            pipe.execute()

    def get(self, integration_id: str) -> dict[str, str]:
        return self.redis.hgetall(self.keys.stats(integration_id))


class Pauses:
    """Integrations switched off by an operator (``moment-sb1 pause``): nothing is queued
    for them, their queued syncs wait, and the poll leaves their cursor where it is, so
    it finds every change of the pause once they are resumed."""

    def __init__(self, r: redis.Redis, keys: Keys):
        self.redis, self.keys = r, keys

    def pause(self, integration_id: str) -> bool:
        """True when it was running until now."""
        return bool(self.redis.hsetnx(self.keys.paused(), integration_id, f"{time.time():.3f}"))

    def resume(self, integration_id: str) -> bool:
        """True when it was paused until now."""
        return bool(self.redis.hdel(self.keys.paused(), integration_id))

    def since(self, integration_id: str) -> float | None:
        raw = self.redis.hget(self.keys.paused(), integration_id)
        return float(raw) if raw else None

    def is_paused(self, integration_id: str) -> bool:
        return self.since(integration_id) is not None

    def all(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.redis.hgetall(self.keys.paused()).items()}


class History:
    """Every sync of one record (``moment-sb1 history``): when, outcome, which fields
    changed, the try, the error. Newest first, at most ``KEEP`` entries, kept
    ``MSB1_HISTORY_DAYS`` after the record's last sync. No values, only field names."""

    KEEP = 100

    def __init__(self, r: redis.Redis, keys: Keys, days: float):
        self.redis, self.keys, self.ttl = r, keys, int(days * 86400)

    def add(self, integration_id: str, data_type: str, record_id: int, pipe=None, **entry: Any) -> None:
        if self.ttl <= 0:
            return
        key = self.keys.history(integration_id, data_type, record_id)
        entry = {"at": round(time.time(), 3), **{k: v for k, v in entry.items() if v not in (None, [], "")}}
        own = pipe is None
        pipe = self.redis.pipeline(transaction=False) if own else pipe
        pipe.lpush(key, json.dumps(entry, ensure_ascii=False))
        pipe.ltrim(key, 0, self.KEEP - 1)
        pipe.expire(key, self.ttl)
        if own:
            pipe.execute()

    def get(self, integration_id: str, data_type: str, record_id: int) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.redis.lrange(self.keys.history(integration_id, data_type, record_id),
                                                              0, -1)]
