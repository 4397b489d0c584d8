"""The Celery application: at-least-once delivery on Redis, JSON only, explicit task names.

Run a worker with::

    celery -A worker.app worker --pool threads --concurrency 32
"""
from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Mapping

from celery import Celery, Task, signals
from kombu import Queue

from schemas.datatypes import DATA_TYPES, DataType
from .integrations import IntegrationsError
from .lanes import BULK_QUEUE, LIVE_QUEUE
from .logs import configure_logging
from .redis_url import RedisTarget
from .metrics import serve_worker_metrics
from .observability import init_sentry
from .runtime import get_runtime
from .settings import Settings, SettingsError, unknown_variables
from .sync import Body, RecordSync, SyncTask

log = logging.getLogger(__name__)

QUEUE = LIVE_QUEUE          # live changes; bulk work (backfills, replays of many) on BULK_QUEUE
# The collector's young generation is collected after this many new container objects
# (Python's default: 700); see _settle_memory.
GC_YOUNG_THRESHOLD = 7000
TASK_MODULES = ["tasks.customers", "tasks.projects", "tasks.invoices", "tasks.poll", "tasks.notices"]
# data type → task name; the producer API and the CLI enqueue through this table
TASKS = {name: t.task for name, t in DATA_TYPES.items()}


def celery_config(settings: Settings) -> dict:
    redis_target = RedisTarget.parse(settings.redis_url)
    redbeat_url, redbeat_options = redis_target.redbeat()
    return {
        "broker_url": redis_target.broker_url(),
        "broker_connection_retry_on_startup": True,
        # A message that is not acked within this many seconds is handed out again, so it
        # must be longer than any countdown we set (Settings.check enforces that).
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": settings.restore_interval,
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": settings.restore_lock_timeout,
            # a worker takes from the live queue whenever it has something (worker.lanes)
            "queue_order_strategy": "priority",
            **redis_target.broker_transport_options(),
        },
        "task_default_queue": QUEUE,
        "task_queues": [Queue(LIVE_QUEUE), Queue(BULK_QUEUE)],
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        # at-least-once: ack after the task ran; a task whose worker died is delivered again
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": settings.concurrency,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "timezone": "UTC",
        # celery beat: RedBeat keeps the schedule in Redis and holds a lock, so a second
        # beat started by mistake waits instead of doubling the work
        "beat_scheduler": "redbeat.RedBeatScheduler",
        "redbeat_redis_url": redbeat_url,
        **({"redbeat_redis_options": redbeat_options} if redbeat_options else {}),
        "redbeat_key_prefix": f"{settings.key_prefix}:redbeat",
        "redbeat_lock_timeout": max(30, int(settings.poll_interval * 5)),
        "beat_max_loop_interval": max(1, min(30, int(settings.poll_interval))),
        "beat_schedule": {
            "poll-moment": {"task": "poll.changes", "schedule": settings.poll_interval,
                            "options": {"expires": settings.poll_interval}},
        },
    }


def _settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as err:
        print(f"moment-sb1: {err}", file=sys.stderr)
        raise SystemExit(2) from None


class _Config(Mapping):
    """The app's configuration, made from the environment when Celery first needs it (a
    worker starting, a task being sent), not when this module is imported."""

    def __init__(self) -> None:
        self._data: dict | None = None

    def _load(self) -> dict:
        if self._data is None:
            self._data = {**celery_config(_settings_or_exit()), "include": TASK_MODULES}
        return self._data

    def __getitem__(self, key: str):
        return self._load()[key]

    def __iter__(self):
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


app = Celery("moment_sb1", task_cls=SyncTask)
app.config_from_object(_Config())


def sync_task(data_type: DataType, body: Body) -> Task:
    """The sync task of one data type: the shared mechanism (``RecordSync``) with the type's
    name and body. A task module declares its type and body with it, and nothing else."""
    def run(self, integration_id: str, record_id: int, attempt: int = 1) -> str:
        return self.sync(integration_id, record_id, attempt)
    run.__name__ = run.__qualname__ = f"sync_{data_type.name}"
    run.__module__ = sys._getframe(1).f_globals.get("__name__", body.__module__)   # the task module
    return app.task(run, base=RecordSync, bind=True, name=data_type.task, data_type=data_type.name,
                    body=staticmethod(body))


@signals.setup_logging.connect
def _logging(**_):
    """Our log format in the worker and in beat (Celery leaves logging to us)."""
    configure_logging(_settings_or_exit(), "beat" if "beat" in sys.argv else "worker")
    for problem in unknown_variables():
        log.warning("%s; it is ignored", problem)


@signals.worker_init.connect
def _check_before_start(sender, **_):
    """Refuse to start with an invalid integrations file or credentials, saying why."""
    runtime = get_runtime()
    try:
        runtime.integrations    # loads and checks the file
        runtime.tokens  # loads the private key / certificate once
    except (IntegrationsError, RuntimeError, ValueError, OSError) as err:
        print(f"moment-sb1: the worker cannot start: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    init_sentry(runtime.settings)


@signals.worker_ready.connect
def _say_ready(**_):
    """What this worker serves, in its log (here, not at ``worker_init``: Celery sets up
    logging after that, and a line logged before it was lost)."""
    runtime = get_runtime()
    log.info("moment-sb1 worker ready for %d integration(s): %s", len(runtime.integrations),
             ", ".join(sorted(runtime.integrations)))


@signals.worker_ready.connect
def _serve_metrics(**_):
    """The worker's Prometheus endpoint, when ``MSB1_METRICS_PORT`` is set."""
    serve_worker_metrics(get_runtime().settings.metrics_port, get_runtime)


@signals.worker_ready.connect
def _settle_memory(**_):
    """Leave what start-up built (modules, Celery, the runtime: most of the heap) out of
    every later full collection, and collect the young generation less often. In the
    customer benchmark (``--gc-time``) the collector's time fell from 0.15-0.17 ms per record
    (3-4 % of the worker's CPU; four full collections of 80 ms each in 4,000 records) to
    0.003 ms. Objects made after start-up are collected as before."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
