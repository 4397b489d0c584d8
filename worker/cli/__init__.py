"""``moment-sb1``: run, inspect and repair the integration.

Each module adds its commands to the group in ``base``: ``run`` (the processes and the
configuration check), ``inspect`` (status, history, dead letters), ``repair`` (pause,
queue, replay, purge, backfill), ``reconcile`` (the month against Moment), ``events`` (the
platform's event plans), ``console`` (the operator console, its users, the audit log)."""
from worker.cli import console, events, inspect, reconcile, repair, run  # noqa: F401 (each adds its commands to main)
from worker.cli.base import main

__all__ = ["main"]
