"""The Celery app and the one place that publishes tasks: everything else calls the
``publish_*`` functions here (no other module calls ``send_task``).

At-least-once delivery on Redis, JSON only, explicit task names (they travel inside queued
messages and must survive a refactor). Only IDs travel: a task fetches what it needs when
it runs. The app is configured from the environment when Celery first needs it (a worker
starting, a task being sent), not when this module is imported.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping

from celery import Celery
from celery.schedules import crontab
from kombu import Queue

from schemas.datatypes import DATA_TYPES
from worker.config.queues import BULK_QUEUE, LIVE_QUEUE
from worker.config.redis_url import RedisTarget
from worker.config.settings import Settings, SettingsError
from worker.store.keys import Keys

TASK_MODULES = ["tasks.customers", "tasks.projects", "tasks.invoices", "tasks.poll", "tasks.notices", "tasks.events",
                "tasks.reconcile"]
# the tasks that are not a data type's sync (each sync task is named by its DataType)
POLL_ALL_TASK = "poll.changes"
POLL_TASK = "poll.integration"
DIGEST_TASK = "notices.digest"
EVENT_TASK = "events.check"
RECONCILE_TASK = "reconcile.nightly"
# Publishing gives up quickly when Redis is away, so a webhook can answer 503 at once
# and the sender retries, instead of hanging.
QUICK_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
# beat's lock outlives a beat that died (killed, or Redis crashed under it: the lock is in
# the AOF) by at most this many seconds, or three of beat's wake-ups if longer
BEAT_LOCK_MIN = 5


class UnknownDataType(ValueError):
    pass


def task_name(data_type: str) -> str:
    """The sync task of a data type, from its declaration (``schemas.datatypes``)."""
    try:
        return DATA_TYPES[data_type].task
    except KeyError:
        raise UnknownDataType(f"unknown data type {data_type!r}; choose from {', '.join(DATA_TYPES)}") from None


def beat_timing(poll_interval: float) -> tuple[int, int]:
    """How often beat wakes up (and renews its lock), and the lock's timeout, in seconds.

    RedBeat holds a lock in Redis so that a second beat waits; the lock survives a beat that
    dies, and a Redis restart (it is in the AOF), and the next beat waits for it to expire,
    trying every wake-up. So the lock is short (three wake-ups, at least ``BEAT_LOCK_MIN``)
    and beat wakes up at least four times per poll interval (at most every 10 s): a crash
    costs at most the lock plus one wake-up (40 s at the default interval; 6 s at 4 s), not
    five intervals. A beat that stalls longer than the lock loses it and exits (RedBeat
    cannot renew it); ``moment-sb1 beat`` starts it again."""
    wake = max(1, min(10, int(poll_interval // 4)))
    return wake, max(BEAT_LOCK_MIN, 3 * wake)


def celery_config(settings: Settings) -> dict:
    redis_target = RedisTarget.parse(settings.redis_url)
    redbeat_url, redbeat_options = redis_target.redbeat()
    beat_wake, beat_lock = beat_timing(settings.poll_interval)
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
            # a worker takes from the live queue whenever it has something (worker.store.lanes)
            "queue_order_strategy": "priority",
            **redis_target.broker_transport_options(),
        },
        "task_default_queue": LIVE_QUEUE,
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
        "redbeat_key_prefix": Keys(settings.key_prefix).redbeat(),
        "redbeat_lock_timeout": beat_lock,
        "beat_max_loop_interval": beat_wake,
        "beat_schedule": {
            "poll-moment": {"task": POLL_ALL_TASK, "schedule": settings.poll_interval,
                            "options": {"expires": settings.poll_interval}},
            # the nightly reconciliation of this month (and the last until the 10th), UTC
            "reconcile-nightly": {"task": RECONCILE_TASK, "schedule": crontab(minute=0, hour=settings.reconcile_hour),
                                  "options": {"expires": 3600}},
        },
    }


def settings_or_exit() -> Settings:
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
            self._data = {**celery_config(settings_or_exit()), "include": TASK_MODULES}
        return self._data

    def __getitem__(self, key: str):
        return self._load()[key]

    def __iter__(self):
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


app = Celery("moment_sb1")
app.config_from_object(_Config())


def publish_sync(data_type: str, integration_id: str, record_id: int, *, bulk: bool = False,
                 countdown: float | None = None, quick: bool = True) -> str:
    """Queue one sync of a record (live lane, or ``bulk``); returns the task's id. ``quick``:
    give up publishing within about half a second when Redis is away (the caller answers or
    retries), else Celery's own publish retries."""
    result = app.send_task(task_name(data_type), args=[integration_id, int(record_id)],
                           queue=BULK_QUEUE if bulk else LIVE_QUEUE, countdown=countdown or None,
                           **({"retry_policy": QUICK_RETRY} if quick else {}))
    return result.id


def publish_poll(integration_id: str, data_type: str, fresh: bool = False) -> None:
    """Poll Moment now for one integration's changes of one data type; ``fresh``: even if a
    poll ran moments ago (``resume``)."""
    app.send_task(POLL_TASK, args=[integration_id, data_type], kwargs={"fresh": True} if fresh else None)


def publish_digest(integration_id: str, countdown: float) -> None:
    """Send an integration's collected failure notices as one email in ``countdown`` seconds."""
    app.send_task(DIGEST_TASK, args=[integration_id], countdown=countdown)


def publish_event_check(integration_id: str, data_type: str, record_id: int, sb1_id: int, operation: str) -> str:
    """Check a record SpareBank 1 Regnskap says was changed or deleted there (``tasks.events``);
    gives up quickly when Redis is away (the receiver answers 503)."""
    return app.send_task(EVENT_TASK, args=[integration_id, data_type, int(record_id), int(sb1_id), operation],
                         queue=LIVE_QUEUE, retry_policy=QUICK_RETRY).id
