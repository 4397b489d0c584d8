"""Backfill: queue a sync of every Moment record of one type, page by page.

Each page is read once for all its records (``worker.intake.pages``): the records as
listed, and what the books hold under their numbers, so a record's sync writes without
reading again (one call per new record). The messages still carry only ids.

A page that fails is tried again (``MSB1_RETRY_MAX_ATTEMPTS``, with the usual backoff);
when it still fails the backfill stops with a one-line reason, and the same command
started again resumes there: Redis remembers the last page that was fully queued. It
goes back one page to be safe (a record deleted in Moment meanwhile shifts the pages);
queueing a record twice is harmless. A listed record without a usable id is skipped and
counted.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from errors import IntegrationError, TransientError
from worker.config.integrations import Integration
from worker.config.queues import BULK
from worker.intake.pages import keep_page
from worker.intake.producer import enqueue, enqueue_bulk
from worker.store.runs import Run

KEEP_PROGRESS = 7 * 86400       # seconds a stopped backfill can be resumed


@dataclass
class Backfill:
    queued: int = 0             # syncs queued now
    already: int = 0            # already queued (a change or an earlier run covers them)
    skipped: int = 0            # listed without a usable id
    read_ahead: int = 0         # records whose numbers the books were asked for with their page
    pages: int = 0
    resumed_from: int | None = None
    stopped_at: int | None = None
    error: str | None = None


def progress_key(rt, integration_id: str, data_type: str, since: datetime | None) -> str:
    return rt.keys.backfill(integration_id, data_type, since.isoformat() if since else "all")


def run_backfill(rt, integration: Integration, data_type: str, since: datetime | None, *,
                 page_size: int, restart: bool = False, say: Callable[[str], None] = print,
                 sleep: Callable[[float], None] = time.sleep, run: Run | None = None,
                 lane: str = BULK) -> Backfill:
    """Queue every record in the bulk lane (``run``: follow them to their end, see
    ``worker.store.runs``). ``lane="live"`` queues them like changes, as before there were lanes
    (the fairness benchmark's baseline)."""
    result = Backfill()
    key = progress_key(rt, integration.id, data_type, since)
    done = None if restart else rt.redis.get(key)
    next_page = max(1, int(done)) if done else 1        # the last full page once more
    if done:
        result.resumed_from = next_page
        say(f"resuming where the last run stopped: page {next_page} again, then on")
    policy = rt.settings.retry_policy
    moment = rt.moment(integration)
    attempt = 1
    while True:
        try:
            for page, content in moment.pages(data_type, modified_from=since, page_size=page_size,
                                              start=next_page):
                listed: dict[int, dict] = {}
                for record in content:
                    record_id = record.get("id") if isinstance(record, dict) else None
                    if not isinstance(record_id, int) or isinstance(record_id, bool) or record_id <= 0:
                        result.skipped += 1
                        continue
                    listed[record_id] = record
                ids = list(listed)
                if run is not None:
                    rt.runs.mark(run, ids)
                if lane == BULK:
                    result.read_ahead += keep_page(rt, integration, data_type, listed)
                    result.queued += enqueue_bulk(integration.id, data_type, ids, runtime=rt)
                else:
                    for record_id in ids:
                        if enqueue(integration.id, data_type, record_id, runtime=rt):
                            result.queued += 1
                        else:
                            result.already += 1
                result.pages += 1
                rt.redis.set(key, page, ex=KEEP_PROGRESS)
                next_page, attempt = page + 1, 1
            break
        except TransientError as exc:  # the page is listed again: its marks are written again
            if not policy.should_retry(exc, attempt - 1):
                result.stopped_at, result.error = next_page, f"{exc} (after {attempt} tries)"
                return result
            delay = policy.delay(attempt - 1, exc.retry_after)
            say(f"page {next_page}: {exc}; trying again in {delay:.1f}s ({attempt + 1} of {policy.max_attempts})")
            sleep(delay)
            attempt += 1
        except IntegrationError as exc:
            result.stopped_at, result.error = next_page, str(exc)
            return result
    rt.redis.delete(key)
    return result
