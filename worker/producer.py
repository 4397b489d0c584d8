"""The producer API: how any change feed (webhooks, Moment's own feed, the poll, the CLI)
asks for a record to be synced.

    from worker.producer import enqueue
    enqueue("acme", "customers", 1000123)

Only IDs travel in the message; the task fetches the record as it is when it runs.
Nothing is queued for a paused integration (``Paused``). Changes to one record are coalesced (see ``worker.state.Coalescer``): ``enqueue`` returns
the queued task's id, or None when a queued sync of that record already covers the change.
"""
from __future__ import annotations

from typing import Iterable

from .app import TASKS, app
from .lanes import BULK_QUEUE, LIVE
from .runtime import Runtime, get_runtime
from .state import Paused

# Publishing gives up quickly when Redis is away, so a webhook can answer 503 at once
# and the sender retries, instead of hanging.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


class UnknownDataType(ValueError):
    pass


def task_name(data_type: str) -> str:
    try:
        return TASKS[data_type]
    except KeyError:
        raise UnknownDataType(f"unknown data type {data_type!r}; choose from {', '.join(TASKS)}") from None


def enqueue(integration_id: str, data_type: str, record_id: int, *, runtime: Runtime | None = None,
            stale_after: float | None = None) -> str | None:
    """Queue one sync (coalesced per record). Raises if Redis cannot take it.
    ``stale_after``: see ``Coalescer.claim``."""
    name = task_name(data_type)
    rt = runtime or get_runtime()
    record_id = int(record_id)
    countdown = rt.coalescer.claim(integration_id, data_type, record_id, stale_after)
    if countdown is None:
        return None
    try:
        result = app.send_task(name, args=[integration_id, record_id], countdown=countdown or None,
                               retry_policy=PUBLISH_RETRY)
    except BaseException:
        try:
            rt.coalescer.release(integration_id, data_type, record_id)
        except Exception:
            pass          # Redis is gone too; the mark expires by itself
        raise
    rt.lanes.queued(integration_id, LIVE)
    return result.id


def enqueue_bulk(integration_id: str, data_type: str, record_ids: Iterable[int], *,
                 runtime: Runtime | None = None) -> int:
    """Queue syncs in the bulk lane (backfills, replays of many): they wait in the company's
    own list and reach the queue in turn with other companies' bulk work, always after live
    changes (``worker.lanes``). Returns how many were added."""
    task_name(data_type)
    rt = runtime or get_runtime()
    if rt.pauses.is_paused(integration_id):
        raise Paused(integration_id)
    added = rt.lanes.add_bulk(integration_id, data_type, record_ids)
    refill_bulk(rt)
    return added


def refill_bulk(rt: Runtime) -> int:
    """Top the bulk queue up from the companies' lists, in turn."""
    def send(integration_id: str, data_type: str, record_id: int) -> None:
        app.send_task(TASKS[data_type], args=[integration_id, record_id], queue=BULK_QUEUE,
                      retry_policy=PUBLISH_RETRY)
    return rt.lanes.refill(send, paused=rt.pauses.all)
