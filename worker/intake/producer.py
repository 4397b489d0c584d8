"""The producer API: how any change feed (webhooks, Moment's own feed, the poll, the CLI)
asks for a record to be synced.

    from worker.intake.producer import enqueue
    enqueue("acme", "customers", 1000123)

Only IDs travel in the message; the task fetches the record as it is when it runs.
Nothing is queued for a paused integration (``Paused``). Changes to one record are
coalesced (``worker.store.coalescer``): ``enqueue`` returns the queued task's id, or None
when a queued sync of that record already covers the change.
"""
from __future__ import annotations

from typing import Iterable

from worker.broker import UnknownDataType, publish_sync, task_name
from worker.config.queues import LIVE
from worker.runtime import Runtime, get_runtime
from worker.store.records import Paused

__all__ = ["Paused", "UnknownDataType", "enqueue", "enqueue_bulk", "refill_bulk"]


def enqueue(integration_id: str, data_type: str, record_id: int, *, runtime: Runtime | None = None,
            stale_after: float | None = None) -> str | None:
    """Queue one sync (coalesced per record). Raises if Redis cannot take it.
    ``stale_after``: see ``Coalescer.claim``."""
    task_name(data_type)
    rt = runtime or get_runtime()
    record_id = int(record_id)
    countdown = rt.coalescer.claim(integration_id, data_type, record_id, stale_after)
    if countdown is None:
        return None
    try:
        task_id = publish_sync(data_type, integration_id, record_id, countdown=countdown)
    except BaseException:
        try:
            rt.coalescer.release(integration_id, data_type, record_id)
        except Exception:
            pass          # Redis is gone too; the mark expires by itself
        raise
    rt.lanes.queued(integration_id, LIVE)
    return task_id


def enqueue_bulk(integration_id: str, data_type: str, record_ids: Iterable[int], *,
                 runtime: Runtime | None = None) -> int:
    """Queue syncs in the bulk lane (backfills, replays of many): they wait in the company's
    own list and reach the queue in turn with other companies' bulk work, always after live
    changes (``worker.store.lanes``). Returns how many were added."""
    task_name(data_type)
    rt = runtime or get_runtime()
    if rt.pauses.is_paused(integration_id):
        raise Paused(integration_id)
    added = rt.lanes.add_bulk(integration_id, data_type, record_ids)
    refill_bulk(rt, force=True)
    return added


def refill_bulk(rt: Runtime, force: bool = False) -> int:
    """Top the bulk queue up from the companies' lists, in turn (``force``: look now, even
    if this process looked a moment ago and found the queue full)."""
    def send(integration_id: str, data_type: str, record_id: int) -> None:
        publish_sync(data_type, integration_id, record_id, bulk=True)
    return rt.lanes.refill(send, paused=rt.pauses.all, force=force)
