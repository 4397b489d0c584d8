"""What the worker remembers per record and integration: the last transfer, dead letters,
counters, pauses and each record's history."""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import redis

from worker.ops.metrics import count_sync
from worker.store.keys import Keys


class SyncState:
    """The last successful transfer of each record: its fingerprint and platform ID."""

    def __init__(self, r: redis.Redis, keys: Keys):
        self.redis, self.keys = r, keys

    def get(self, integration_id: str, data_type: str, record_id: int) -> dict[str, Any] | None:
        return self.parse(self.redis.hget(self.keys.state(integration_id, data_type), str(record_id)))

    def get_many(self, integration_id: str, data_type: str, record_ids: list[int]) -> dict[int, dict[str, Any]]:
        """The states of many records in one round trip (those with none are left out)."""
        if not record_ids:
            return {}
        raws = self.redis.hmget(self.keys.state(integration_id, data_type), [str(i) for i in record_ids])
        return {i: json.loads(raw) for i, raw in zip(record_ids, raws) if raw}

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

    Holds no personal data: ``what`` names the record by type and Moment id, or by its
    number when that is a valid one ("customer 100001"); ``error`` is the error's own words,
    which name a refused value by its shape only (``schemas.text.shape``).
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


class Paused(RuntimeError):
    """The integration is paused (``moment-sb1 pause``): nothing is queued for it. The poll
    finds the change once it is resumed."""

    def __init__(self, integration_id: str):
        super().__init__(f"{integration_id} is paused; its changes are picked up when it is resumed")


class Stats:
    """Outcome counters per integration in Redis (``status``), and in Prometheus (``/metrics``)."""

    def __init__(self, r: redis.Redis, keys: Keys):
        self.redis, self.keys = r, keys

    def incr(self, integration_id: str, data_type: str, outcome: str, pipe=None) -> None:
        count_sync(data_type, outcome)
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
    ``MSB1_HISTORY_DAYS`` after the record's last sync. No values, only field names; the
    record's number only when it is a valid one, an error in its own words (a refused value
    by its shape)."""

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
        if entry.get("number"):       # a valid number only (the caller's ``NUMBER_OK``): by it too
            index = self.keys.history_numbers(integration_id, data_type)
            pipe.hset(index, entry["number"], str(record_id))
            pipe.expire(index, self.ttl)
        if own:
            pipe.execute()

    def by_number(self, integration_id: str, data_type: str, number: str) -> int | None:
        """The Moment id last synced under this number (a valid one: others were never kept)."""
        raw = self.redis.hget(self.keys.history_numbers(integration_id, data_type), number.strip())
        return int(raw) if raw else None

    def get(self, integration_id: str, data_type: str, record_id: int) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.redis.lrange(self.keys.history(integration_id, data_type, record_id),
                                                              0, -1)]
