"""The producer API: how any change feed (webhooks, Moment's own feed, the poll, the CLI)
asks for a record to be synced.

    from worker.producer import enqueue
    enqueue("acme", "customers", 1000123)

Only IDs travel in the message; the task fetches the record as it is when it runs.
"""
from __future__ import annotations

from .app import TASKS, app


class UnknownDataType(ValueError):
    pass


def task_name(data_type: str) -> str:
    try:
        return TASKS[data_type]
    except KeyError:
        raise UnknownDataType(f"unknown data type {data_type!r}; choose from {', '.join(TASKS)}") from None


def enqueue(integration_id: str, data_type: str, record_id: int, *, countdown: float | None = None) -> str:
    """Queue one sync; returns the task id. Raises if Redis cannot take it."""
    result = app.send_task(task_name(data_type), args=[integration_id, int(record_id)],
                           countdown=countdown)
    return result.id
