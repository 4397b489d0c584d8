"""Runs: a backfill or a replay followed to its end.

A run marks each record it queues (a hash maps the record to the run); whichever sync of that record ends next (written, unchanged, failed)
counts it for the run. So ``moment-sb1 backfill --wait`` can show a total, a rate and an
ETA, and end with the outcome counts; ``status`` shows the runs still going. Tasks keep
carrying only IDs. A record already in a run joins the newer run (and leaves the older).
Its Redis keys: ``worker.store.keys`` (lanes and runs).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Iterable

import redis

from worker.store.keys import Keys

KEEP = 7 * 86400         # seconds a run's record is kept


@dataclass
class Run:
    id: str
    integration_id: str
    data_type: str
    kind: str                    # backfill | replay
    started: float
    total: int = 0
    done: int = 0
    queued_all: bool = False     # every record is marked (the listing is finished)
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.queued_all and self.done >= self.total

    @property
    def rate(self) -> float:
        elapsed = time.time() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until the last record is done, at the rate so far (None: not known yet)."""
        if self.finished:
            return 0.0
        if not self.done or not self.queued_all:
            return None
        return (self.total - self.done) / self.rate


class Runs:
    def __init__(self, r: redis.Redis, keys: Keys):
        self.redis, self.keys = r, keys

    def _run_key(self, run_id: str) -> str:
        return self.keys.run(run_id)

    def _map_key(self, integration_id: str, data_type: str) -> str:
        return self.keys.run_of(integration_id, data_type)

    def start(self, integration_id: str, data_type: str, kind: str) -> Run:
        run = Run(uuid.uuid4().hex[:12], integration_id, data_type, kind, time.time())
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self._run_key(run.id), mapping={"integration": integration_id, "data_type": data_type,
                                                   "kind": kind, "started": f"{run.started:.3f}",
                                                   "total": 0, "done": 0, "queued_all": 0})
        pipe.expire(self._run_key(run.id), KEEP)
        pipe.zadd(self.keys.runs(), {run.id: run.started})
        pipe.execute()
        return run

    def mark(self, run: Run, record_ids: Iterable[int]) -> None:
        """These records belong to the run (mark them before they are queued)."""
        ids = list(dict.fromkeys(str(int(i)) for i in record_ids))
        if not ids:
            return
        earlier = self.redis.hmget(self._map_key(run.integration_id, run.data_type), ids)
        pipe = self.redis.pipeline(transaction=False)
        for other in earlier:
            if other and other != run.id:      # it joins this run: the earlier one no longer waits for it
                pipe.hincrby(self._run_key(other), "total", -1)
        pipe.hset(self._map_key(run.integration_id, run.data_type), mapping={i: run.id for i in ids})
        pipe.expire(self._map_key(run.integration_id, run.data_type), KEEP)
        pipe.hincrby(self._run_key(run.id), "total", len(ids))
        pipe.execute()

    def unmark(self, run: Run, record_ids: Iterable[int]) -> None:
        """Records that could not be queued after all (nothing will settle them)."""
        ids = [str(int(i)) for i in record_ids]
        if ids:
            self.redis.hdel(self._map_key(run.integration_id, run.data_type), *ids)
            self.redis.hincrby(self._run_key(run.id), "total", -len(ids))

    def all_queued(self, run: Run) -> None:
        self.redis.hset(self._run_key(run.id), "queued_all", 1)

    def settle(self, integration_id: str, data_type: str, record_id: int, outcome: str, pipe=None):
        """A sync ended: count it for its record's run, if it is in one. Given a pipeline,
        the look-up rides on it and this returns the function to call with the pipeline's
        answers (a second round trip only for a record in a run, the rare case)."""
        key = self._map_key(integration_id, data_type)
        if pipe is None:
            self._count(key, record_id, outcome, self.redis.hget(key, str(record_id)))
            return None
        pipe.hget(key, str(record_id))
        return lambda answers: self._count(key, record_id, outcome, answers[-1])

    def _count(self, key: str, record_id: int, outcome: str, run_id: str | None) -> None:
        if not run_id:
            return
        if not self.redis.hdel(key, str(record_id)):
            return                      # another sync of the record counted it just now
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self._run_key(run_id), "done", 1)
        pipe.hincrby(self._run_key(run_id), f"outcome:{outcome}", 1)
        pipe.execute()

    def get(self, run_id: str) -> Run | None:
        data = self.redis.hgetall(self._run_key(run_id))
        if not data:
            return None
        return Run(run_id, data["integration"], data["data_type"], data["kind"], float(data["started"]),
                   int(data.get("total", 0)), int(data.get("done", 0)), data.get("queued_all") == "1",
                   {k.removeprefix("outcome:"): int(v) for k, v in data.items() if k.startswith("outcome:")})

    def unfinished(self, integration_id: str | None = None) -> list[Run]:
        """Runs not yet done (their records still syncing), oldest first."""
        out = []
        for run_id in self.redis.zrange(self.keys.runs(), 0, -1):
            run = self.get(run_id)
            if run is None:
                self.redis.zrem(self.keys.runs(), run_id)       # expired
                continue
            if not run.finished and (integration_id is None or run.integration_id == integration_id):
                out.append(run)
        return out
