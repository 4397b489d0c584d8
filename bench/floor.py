"""Celery's own cost per task on this machine: the floor under the worker's CPU per record.

The customer benchmark (``--floor``) starts workers with this module instead of
``worker.app``: the same app, the same settings (thread pool, late acks, the same two
queues, the same Redis), and two tasks that do no work of ours:

- ``bench.noop``: returns at once; Celery's fetch, hand-over to a thread, and ack;
- ``bench.waits``: sleeps as long as a customer sync waits for its three API calls (three
  sleeps of the added latency), so its threads are woken as often by the API calls.

Their CPU per task, next to a real sync's in the same run, shows how much of a record's
CPU is the task queue and the waking up, which no change to our own code can take away.
"""
from __future__ import annotations

import time

from celery import Task

from worker.broker import app

# what a customer sync waits for: the Moment fetch, the SpareBank 1 look-up, the write
API_CALLS_PER_CUSTOMER = 3


@app.task(name="bench.noop", base=Task)
def noop() -> None:
    return None


@app.task(name="bench.waits", base=Task)
def waits(seconds: float) -> None:
    for _ in range(API_CALLS_PER_CUSTOMER):
        time.sleep(seconds)
