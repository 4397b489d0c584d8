"""The worker process: the Celery app (``worker.broker``) with what a worker and beat do as
they start (logging, checks, Sentry, metrics, memory).

Run a worker with ``moment-sb1 worker``, or::

    celery -A worker.app worker --pool threads --concurrency 32
"""
from __future__ import annotations

import gc
import logging
import sys

from celery import signals

from worker.broker import app, settings_or_exit
from worker.config.integrations import IntegrationsError, require_secrets
from worker.config.rules import one_line
from worker.config.settings import unknown_variables
from worker.ops.logs import configure_logging
from worker.ops.metrics import serve_worker_metrics
from worker.ops.sentry import init_sentry
from worker.runtime import get_runtime
from worker.store import schema

__all__ = ["app"]

log = logging.getLogger(__name__)


# The collector's young generation is collected after this many new container objects
# (Python's default: 700); see _settle_memory.
GC_YOUNG_THRESHOLD = 7000


@signals.celeryd_init.connect
def _log_early(**_):
    """The log format from the worker's first line (Celery warns of running as root before
    it sets up logging)."""
    configure_logging(settings_or_exit(), "worker", capture_output=True)


@signals.worker_shutting_down.connect
def _say_shutdown(sig, how, **_):
    """Celery's own "worker: Warm shutdown" line is written past the logs (JSON: not at all)."""
    log.info("worker: %s shutdown (%s)", how, sig)


@signals.setup_logging.connect
def _logging(**_):
    """Our log format in the worker and in beat (Celery leaves logging to us)."""
    configure_logging(settings_or_exit(), "beat" if "beat" in sys.argv else "worker", capture_output=True)
    for problem in unknown_variables():
        log.warning("%s; it is ignored", problem)


def startup_problems(runtime) -> list[str]:
    """What keeps a worker from starting, one line each (none: it may start). The worker
    runs this before it starts and ``moment-sb1 check-config`` runs the same; the settings
    were checked when the runtime was made."""
    try:
        # loads and checks the file; a worker needs every Moment API key (and no webhook secret)
        require_secrets(runtime.integrations.values(), "moment_api_key")
        runtime.tokens  # loads the private key / certificate once
    except IntegrationsError as err:
        return list(err.problems)
    except (RuntimeError, ValueError, OSError) as err:
        return [one_line(str(err))]
    return []


@signals.worker_init.connect
def _check_before_start(sender, **_):
    """Refuse to start with an invalid integrations file or credentials: one line per
    problem on stderr, exit code 2."""
    runtime = get_runtime()
    problems = startup_problems(runtime)
    for problem in problems:
        print(f"moment-sb1: the worker cannot start: {problem}", file=sys.__stderr__)   # one plain line
    if problems:
        raise SystemExit(2)
    try:    # migrate the Redis state of an older release, or refuse a newer one's
        MIGRATED.extend(schema.at_start(runtime.redis, runtime.keys))
    except schema.SchemaError as err:
        print(f"moment-sb1: the worker cannot start: {err}", file=sys.__stderr__)
        raise SystemExit(2)
    init_sentry(runtime.settings)


MIGRATED: list[str] = []     # what this worker's start did to the Redis state (logged when ready)


@signals.worker_ready.connect
def _say_ready(**_):
    """What this worker serves, in its log (here, not at ``worker_init``: Celery sets up
    logging after that, and a line logged before it was lost)."""
    runtime = get_runtime()
    log.info("moment-sb1 worker ready for %d integration(s): %s", len(runtime.integrations),
             ", ".join(sorted(runtime.integrations)))
    for line in MIGRATED:
        log.warning("%s", line)


@signals.worker_ready.connect
def _serve_metrics(**_):
    """The worker's Prometheus endpoint, when ``MSB1_METRICS_PORT`` is set."""
    settings = get_runtime().settings
    serve_worker_metrics(settings.metrics_port, get_runtime, settings.metrics_host)


@signals.worker_ready.connect
def _settle_memory(**_):
    """Leave what start-up built (modules, Celery, the runtime: most of the heap) out of
    every later full collection, and collect the young generation less often: no full
    collection then stops every thread for tens of milliseconds. Objects made after start-up
    are collected as before. What it measurably changes: bench/README.md (bench.customers,
    ``--no-gc-freeze``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
