"""The safety net: every ``MSB1_POLL_INTERVAL`` seconds (celery beat), list what changed
in Moment since a cursor and queue syncs for it, in case a webhook went missing.

The cursor (per integration and data type, in Redis) moves only forward, and each poll
looks ``MSB1_POLL_OVERLAP`` seconds further back, so a record whose change became visible
late, or was stamped by a clock a little behind ours, is still seen. Records whose
version a sync has already finished (written, unchanged, left alone as a draft, or
dead-lettered) are not queued again.

The cursor moves to the time the poll *started*, but never past a change that no sync has
finished yet: a queued message can still be lost (kombu takes a message off the Redis list
before it records it as unacknowledged, so a worker killed in between loses it). Such a
record stays in every poll's window, and once its "queued" mark is older than a poll
interval it is queued again. ``MSB1_POLL_MAX_HOLD`` bounds how far the cursor is held back.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone

from clients.moment import MODIFIED_FIELD
from errors import IntegrationError
from schemas.datatypes import DATA_TYPES
from worker.broker import POLL_ALL_TASK, POLL_TASK, app, publish_poll
from worker.intake.producer import enqueue, refill_bulk
from worker.ops.sentry import report_failure
from worker.sync.task import RuntimeTask

log = logging.getLogger(__name__)


@app.task(name=POLL_ALL_TASK, base=RuntimeTask)
def poll_changes() -> int:
    """Fan out: one poll task per integration and selected data type. Also makes sure a
    collected digest is due (its send message may have been lost), and tries again a dead
    letter whose notice was never collected (a worker died between the two)."""
    rt = poll_changes.runtime
    rt.redis.set(rt.keys.last_poll(), f"{time.time():.3f}")       # beat's health signal
    refill_bulk(rt, force=True)     # bulk work whose chain of refills broke (a worker killed)
    n = 0
    paused = rt.pauses.all()
    for integration in rt.integrations.values():
        if integration.id in paused:        # its cursor stays: the poll after the resume finds it all
            continue
        for data_type in DATA_TYPES:
            if integration.wants(data_type):
                publish_poll(integration.id, data_type)
                n += 1
        if rt.notices.pending(integration.id):
            rt.notices.schedule(integration.id)
        collected = rt.notices.collected(integration.id)
        for letter in rt.dead_letters.list(integration.id):
            if not letter.notified and letter.field not in collected and letter.data_type in DATA_TYPES:
                enqueue(integration.id, letter.data_type, letter.record_id, runtime=rt)
    return n


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _usable_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2 ** 63


def aware_time(value: object) -> datetime | None:
    """A lastModifiedDate as Moment listed it: an ISO 8601 time with its offset, else None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@app.task(name=POLL_TASK, bind=True, base=RuntimeTask)
def poll_integration(self, integration_id: str, data_type: str, fresh: bool = False) -> int:
    """Queue syncs of what changed in Moment since the cursor. ``fresh`` (``resume``): poll
    now even if a poll ran moments ago (the guard below is cleared first)."""
    rt = self.runtime
    settings = rt.settings
    integration = rt.integrations.get(integration_id)
    if integration is None or not integration.wants(data_type):
        return 0
    if rt.pauses.is_paused(integration_id):
        log.info("poll %s %s: the integration is paused; the cursor waits", integration_id, data_type)
        return 0
    # Two beats started by mistake, or a slow poll overlapping the next: one at a time,
    # and not again within half an interval.
    guard = max(1, int(settings.poll_interval / 2))
    if fresh:       # a change made while paused must not wait for the next interval
        rt.redis.delete(rt.keys.poll_guard(integration_id, data_type))
    if not rt.redis.set(rt.keys.poll_guard(integration_id, data_type), "1", nx=True, ex=guard):
        log.info("poll %s %s: ran moments ago; skipped", integration_id, data_type)
        return 0
    if any(c.service == "moment" for c in rt.circuits.open_for(integration_id)):
        rt.redis.delete(rt.keys.poll_guard(integration_id, data_type))
        log.info("poll %s %s: Moment is out (open circuit); the cursor waits", integration_id, data_type)
        return 0
    started = datetime.now(timezone.utc)
    cursor_key = rt.keys.cursor(integration_id, data_type)
    cursor = _parse(rt.redis.get(cursor_key))
    since = (cursor or started) - timedelta(seconds=settings.poll_overlap)
    queued = seen = 0
    open_since: datetime | None = None        # the oldest change no sync has finished
    skipped = 0
    try:
        for record in rt.moment(integration).list(data_type, modified_from=since):
            seen += 1
            record_id = record.get("id") if isinstance(record, dict) else None
            if not _usable_id(record_id):
                # not even an id to fetch by: skip it (its content may be personal data, so
                # it is not logged) and keep the cursor where it is, so it is listed again
                skipped += 1
                log.warning("poll %s %s: listed record %d has no usable id; skipped", integration_id,
                            data_type, seen)
                open_since = since
                continue
            modified = aware_time(record.get(MODIFIED_FIELD))
            if modified is not None:
                done = rt.state.finished_version(integration_id, data_type, record_id)
                if done is not None and modified <= done:
                    continue                  # a sync has finished this version already
            enqueue(integration_id, data_type, record_id, runtime=rt, stale_after=settings.poll_interval)
            queued += 1
            # an unreadable time: queued all the same, and the cursor does not move past it
            known = modified if modified is not None else since
            if open_since is None or known < open_since:
                open_since = known
    except IntegrationError as exc:
        rt.redis.delete(rt.keys.poll_guard(integration_id, data_type))
        if exc.retriable:
            rt.circuits.failed(integration_id, exc)
        if settings.retry_policy.should_retry(exc, self.request.retries):
            delay = settings.retry_policy.delay(self.request.retries, getattr(exc, "retry_after", None))
            log.warning("poll %s %s: %s; trying again in %.1fs", integration_id, data_type, exc, delay)
            raise self.retry(countdown=delay)
        log.error("poll %s %s failed: %s", integration_id, data_type, exc)
        report_failure(exc, integration_id=integration_id, data_type=data_type, record_id=0, kind="poll")
        return 0
    new_cursor = _next_cursor(started, open_since, settings.poll_max_hold)
    if open_since is not None and new_cursor > open_since:
        log.warning("poll %s %s: a change from %s is still not finished; the poll no longer "
                    "looks that far back (MSB1_POLL_MAX_HOLD)", integration_id, data_type,
                    open_since.isoformat())
    # forward only, and only once everything up to the new cursor is queued
    rt.redis.eval("local c = redis.call('GET', KEYS[1]) "
                  "if (not c) or c < ARGV[1] then redis.call('SET', KEYS[1], ARGV[1]) end",
                  1, cursor_key, new_cursor.isoformat(timespec="microseconds"))
    log.info("poll %s %s: %d changed since %s, %d queued, %d skipped", integration_id, data_type, seen,
             since.isoformat(), queued, skipped)
    return queued


def _next_cursor(started: datetime, open_since: datetime | None, max_hold: float) -> datetime:
    """Where the next poll starts (before its overlap): at this poll's start, held back to
    the oldest unfinished change, but by no more than ``max_hold`` seconds."""
    if open_since is None:
        return started
    held = min(started, open_since.astimezone(timezone.utc))
    return max(held, started - timedelta(seconds=max_hold))
