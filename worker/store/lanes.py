"""Two lanes: live changes never wait behind bulk work, and companies take turns in bulk.

**live** (``moment-sb1``): webhooks, the producer API, the poll, single replays.
**bulk** (``moment-sb1-bulk``): backfills and replays of many.

Workers read the live queue first (kombu's ``priority`` queue order): a bulk sync is taken
only when no live one waits. Bulk work does not go to Celery all at once: each company's
records wait in a list of its own in Redis (``Keys.bulk_list``), and the bulk queue
is kept short (``MSB1_BULK_QUEUE_TARGET``), refilled a chunk at a time from the companies in
turn. So a company's 10,000-record backfill holds another company's backfill up by one
chunk, not by 10,000 records. Refills happen when bulk work is added, after each bulk sync
that leaves the queue below half its target, and on every poll (a safety net).

Per company and lane, Redis counts what was queued, started and finished, and the
finishes per ten seconds; ``status`` shows waiting, running, rate, oldest waiting and ETA.
The counts are approximate after a worker is killed mid-task.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import redis

from worker.config.queues import BULK, BULK_QUEUE, LIVE
from worker.store.keys import Keys

log = logging.getLogger(__name__)

CHUNK = 16                  # records taken from one company at a time
RATE_BUCKET = 10            # seconds per bucket of finished syncs
RATE_BUCKETS = 6            # the rate is taken over the last minute

# Take up to ARGV[1] items from the next company in turn: rotate the companies' list, move
# them from that company's list to the handover list (KEYS[2], as "company|item"), drop the
# company from the rotation when it has no more. An item leaves the handover list only
# once its task is published, so a refill that dies or loses Redis half-way loses nothing:
# the next refill publishes what is left there first.
_TAKE = """
local skip = {}
for i = 3, #ARGV do skip[ARGV[i]] = true end
local company = nil
for i = 1, redis.call('LLEN', KEYS[1]) do
  local c = redis.call('LMOVE', KEYS[1], KEYS[1], 'LEFT', 'RIGHT')
  if not skip[c] then company = c break end
end
if not company then return nil end
local list = ARGV[2] .. company
local items = redis.call('LPOP', list, tonumber(ARGV[1]))
if redis.call('LLEN', list) == 0 then redis.call('LREM', KEYS[1], 0, company) end
if not items then return {company} end
for _, item in ipairs(items) do redis.call('RPUSH', KEYS[2], company .. '|' .. item) end
table.insert(items, 1, company)
return items
"""

# Add a company to the rotation once.
_JOIN = """
if redis.call('LPOS', KEYS[1], ARGV[1]) == false then redis.call('RPUSH', KEYS[1], ARGV[1]) end
return 1
"""


@dataclass
class LaneStatus:
    integration_id: str
    lane: str
    waiting: int
    running: int
    per_second: float
    oldest_waiting_s: float | None

    @property
    def eta_s(self) -> float | None:
        if not self.waiting:
            return 0.0
        return self.waiting / self.per_second if self.per_second > 0 else None


SHARERS = 10           # worker processes a refill's skipped checks allow for


class Lanes:
    def __init__(self, r: redis.Redis, keys: Keys, target: int):
        self.redis, self.keys, self.target = r, keys, target
        self._take = r.register_script(_TAKE)
        self._join = r.register_script(_JOIN)
        # checks this process may skip, and until when: the queue held plenty at the last one
        self._skip: tuple[int, float] = (0, 0.0)

    # --- keys
    @property
    def rotation(self) -> str:
        return self.keys.bulk_turns()

    @property
    def handover(self) -> str:
        """Items taken from a company's list whose task is not published yet."""
        return self.keys.bulk_handover()

    def _list(self, integration_id: str) -> str:
        return self.keys.bulk_list(integration_id)

    def _counts(self, integration_id: str, lane: str) -> str:
        return self.keys.lane_counts(integration_id, lane)

    def _done(self, integration_id: str, lane: str, bucket: int) -> str:
        return self.keys.lane_done(integration_id, lane, bucket)

    # --- bulk work in
    def add_bulk(self, integration_id: str, data_type: str, record_ids: Iterable[int]) -> int:
        """Put records in the company's bulk list (the queue gets them in turn)."""
        now = f"{time.time():.0f}"
        items = [f"{data_type}:{int(i)}:{now}" for i in record_ids]
        if not items:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(self._list(integration_id), *items)
        pipe.hincrby(self._counts(integration_id, BULK), "queued", len(items))
        pipe.execute()
        self._join(keys=[self.rotation], args=[integration_id])
        return len(items)

    def refill(self, send, paused: Callable[[], Iterable[str]] = tuple, force: bool = False) -> int:
        """Top the bulk queue up to its target, a chunk per company in turn (``paused()``:
        companies that keep their turn for later). ``send(iid, data_type, record_id)``
        publishes one bulk task. One refiller at a time. Called after every bulk sync, so
        when the queue is full enough it costs one round trip, and then none for the next
        few syncs of this process (``force``: new work came, look now).

        At least once: what an earlier refill took and did not publish (it died, or Redis
        failed mid-way) is published first. A task published twice is harmless (a sync
        that finds its record unchanged writes nothing); one never published would wait
        for a backfill to be run again, since the poll only sees records that change."""
        skip, until = self._skip
        if not force and skip > 0 and time.monotonic() < until:
            self._skip = (skip - 1, until)
            return 0
        queued, handed = self.redis.pipeline(transaction=False).llen(BULK_QUEUE).llen(self.handover).execute()
        if queued >= self.target // 2 and not handed:
            # what is queued beyond half the target lasts this process's next few syncs (for a
            # second at most) even with ten processes taking from the queue: skip that many checks
            self._skip = ((queued - self.target // 2) // SHARERS, time.monotonic() + 1.0)
            return 0
        if not self.redis.set(self.keys.bulk_refill(), "1", nx=True, px=5000):
            return 0
        sent = 0
        try:
            left = self.redis.lrange(self.handover, 0, -1)
            if left:
                log.info("bulk lane: %d task(s) an earlier refill took but did not publish, published now",
                         len(left))
                sent += self._publish(send, [tuple(entry.split("|", 1)) for entry in left])
            paused = list(paused())
            room = self.target - self.redis.llen(BULK_QUEUE)
            while room > 0:
                got = self._take(keys=[self.rotation, self.handover],
                                 args=[min(CHUNK, room), self.keys.bulk_list_prefix(), *paused])
                if not got:
                    break
                company, items = got[0], got[1:]
                sent += self._publish(send, [(company, item) for item in items])
                room -= len(items)
        finally:
            self.redis.delete(self.keys.bulk_refill())
        return sent

    def _publish(self, send, entries: list[tuple[str, str]]) -> int:
        """Publish each (company, item) and then take it off the handover list; those
        published before a failure come off too (when Redis lets us)."""
        done: list[str] = []
        try:
            for company, item in entries:
                data_type, record_id, _added = item.rsplit(":", 2)
                send(company, data_type, int(record_id))
                done.append(f"{company}|{item}")
        finally:
            if done:
                pipe = self.redis.pipeline(transaction=False)
                for entry in done:
                    pipe.lrem(self.handover, 1, entry)
                pipe.execute()
        return len(done)

    # --- counting: queued (every publish, retries too), started and ended (every run of a
    # task), settled (a chain's end, for the rate)
    def queued(self, integration_id: str, lane: str, n: int = 1) -> None:
        self.redis.hincrby(self._counts(integration_id, lane), "queued", n)

    def started(self, integration_id: str, lane: str) -> None:
        self.redis.hincrby(*self.started_field(integration_id, lane), 1)

    def started_field(self, integration_id: str, lane: str) -> tuple[str, str]:
        """(hash, field) that counts the starts of a lane (a sync's start script counts it)."""
        return self._counts(integration_id, lane), "started"

    def ended(self, integration_id: str, lane: str, *, settled: bool, requeued: bool, pipe=None) -> None:
        key = self._counts(integration_id, lane)
        own = pipe is None
        pipe = self.redis.pipeline(transaction=False) if own else pipe
        pipe.hincrby(key, "done", 1)
        if requeued:
            pipe.hincrby(key, "queued", 1)
        if settled:
            bucket = int(time.time() // RATE_BUCKET)
            pipe.incr(self._done(integration_id, lane, bucket))
            pipe.expire(self._done(integration_id, lane, bucket), RATE_BUCKET * (RATE_BUCKETS + 2))
        if own:
            pipe.execute()

    def status(self, integration_id: str) -> list[LaneStatus]:
        now = time.time()
        bucket = int(now // RATE_BUCKET)
        out = []
        for lane in (LIVE, BULK):
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(self._counts(integration_id, lane))
            # the last minute: five whole buckets and the current one so far
            for b in range(bucket - RATE_BUCKETS + 1, bucket + 1):
                pipe.get(self._done(integration_id, lane, b))
            pipe.lindex(self._list(integration_id), 0)
            pipe.llen(self._list(integration_id))
            counts, *rest = pipe.execute()
            done_buckets, head, listed = rest[:-2], rest[-2], rest[-1]
            queued, started, done = (int(counts.get(k, 0)) for k in ("queued", "started", "done"))
            window = RATE_BUCKET * (RATE_BUCKETS - 1) + (now - bucket * RATE_BUCKET)
            rate = sum(int(v or 0) for v in done_buckets) / window
            oldest = now - float(head.rsplit(":", 1)[1]) if lane == BULK and head else None
            waiting = max(0, queued - started)
            if lane == BULK:
                waiting = max(waiting, listed)
            out.append(LaneStatus(integration_id, lane, waiting, max(0, started - done), round(rate, 1), oldest))
        return out
