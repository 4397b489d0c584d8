"""Declaring a data type's sync task."""
from __future__ import annotations

import sys

from celery import Task

from schemas.datatypes import DataType
from worker.broker import app
from worker.sync.context import Body
from worker.sync.task import RecordSync


def sync_task(data_type: DataType, body: Body) -> Task:
    """The sync task of one data type: the shared mechanism (``RecordSync``) with the type's
    name and body. A task module declares its type and body with it, and nothing else."""
    def run(self, integration_id: str, record_id: int, attempt: int = 1) -> str:
        return self.sync(integration_id, record_id, attempt)
    run.__name__ = run.__qualname__ = f"sync_{data_type.name}"
    run.__module__ = sys._getframe(1).f_globals.get("__name__", body.__module__)   # the task module
    return app.task(run, base=RecordSync, bind=True, name=data_type.task, data_type=data_type.name,
                    body=staticmethod(body))
