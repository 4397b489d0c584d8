"""Prometheus metrics.

Counted in each process (``msb1_sync_tries_total``, ``msb1_sync_outcomes_total``,
``msb1_sync_duration_seconds``, ``msb1_webhooks_total``), and read from Redis when scraped (the
state every process shares: dead letters, the backlog, the last write, the poll's lag,
circuits, pauses, the learned rate limits). A worker serves them on ``MSB1_METRICS_PORT``,
the receiver on ``MSB1_WEBHOOK_METRICS_PORT``, both on ``MSB1_METRICS_HOST``.

With a prefork pool (several processes per worker), set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty directory: the counters of every child are then summed (prometheus_client's
multiprocess mode). The thread pool this project runs by default needs nothing.

The series budget (docs/operations.md, tests/test_metrics_budget.py): a worker's endpoint
serves ``PER_COMPANY`` series per integration that are always there, one more per thing that
is wrong now (a pause, an open circuit, a rate limit under its ceiling, a kind of
reconciliation difference) and a part that does not grow with the companies (the process
counters are labelled by data type, never by company or record). 50 companies: <= 300.

Outcome labels are the words of ``worker.sync.outcomes.Outcome``: created, updated, posted
(written), unchanged, stale, already-posted, not-finalized, gone, ignored, failed
(dead-lettered). A try that is repeated (retried) or a sync put back for an open circuit or
a pause (waiting) is no outcome: ``msb1_sync_tries_total`` counts them.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time
from datetime import datetime
from importlib import metadata
from typing import Any, Iterator

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.config.queues import BULK_QUEUE, LIVE_QUEUE

log = logging.getLogger(__name__)
disable_created_metrics()       # no *_created series: they double every counter for nothing

TRIES = Counter("msb1_sync_tries", "Each pass of a record's sync, by how it ended: final (the sync ended; "
                "its outcome is in msb1_sync_outcomes_total), retried (a failed try, tried again later) or "
                "waiting (put back for an open circuit or a pause, no try spent)", ["data_type", "result"])
OUTCOMES = Counter("msb1_sync_outcomes", "Syncs by how they finally ended (written, nothing to write, "
                   "dead-lettered...)", ["data_type", "outcome"])
SYNC_SECONDS = Histogram("msb1_sync_duration_seconds", "Time of one try of one record (fetch, check, write)",
                         ["data_type"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120))
WEBHOOKS = Counter("msb1_webhooks", "Webhooks by what the receiver did with them", ["integration", "decision"])

NOT_FINAL = {"retried", "waiting"}
PER_COMPANY = ("msb1_dead_letters", "msb1_backlog_messages", "msb1_last_write_timestamp_seconds",
               "msb1_poll_lag_seconds")


def count_sync(data_type: str, outcome: str) -> None:
    """One pass of a sync ended: a try that is repeated, a wait, or the sync's final outcome."""
    outcome = str(outcome)
    if outcome in NOT_FINAL:
        TRIES.labels(data_type, outcome).inc()
    else:
        TRIES.labels(data_type, "final").inc()
        OUTCOMES.labels(data_type, outcome).inc()


WRITTEN = ("created", "updated", "posted")


class StateCollector(Collector):
    """The shared state, read from Redis at each scrape (a few round trips per integration)."""

    def __init__(self, runtime_getter):
        self._runtime = runtime_getter

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("msb1_redis_up", "1 when Redis answered this scrape")
        try:
            families = list(self._families(self._runtime()))
        except Exception as err:            # Redis away: say so, and nothing stale
            log.warning("metrics: the shared state could not be read (%s)", type(err).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    @staticmethod
    def _families(rt) -> Iterator[Metric]:
        r, keys, now = rt.redis, rt.keys, time.time()
        queue = GaugeMetricFamily("msb1_queue_messages", "Messages on the queues: live ones waiting to be taken "
                                  "(waiting), bulk ones (bulk), or held by a worker (running, or a retry waiting "
                                  "for its time)", labels=["state"])
        pipe = r.pipeline(transaction=False)
        pipe.llen(LIVE_QUEUE)
        pipe.llen(BULK_QUEUE)
        pipe.hlen("unacked")
        pipe.get(keys.last_poll())
        waiting, bulk, held, last_poll = pipe.execute()
        queue.add_metric(["waiting"], waiting)
        queue.add_metric(["bulk"], bulk)
        queue.add_metric(["held"], held)
        yield queue
        poll = GaugeMetricFamily("msb1_last_poll_timestamp_seconds", "When beat's safety-net poll last ran")
        if last_poll:
            poll.add_metric([], float(last_poll))
        yield poll

        dead = GaugeMetricFamily("msb1_dead_letters", "Records kept for replay now", labels=["integration"])
        backlog = GaugeMetricFamily("msb1_backlog_messages", "Syncs of the company waiting to be taken, in both "
                                    "lanes (live and a backfill's bulk; `moment-sb1 status --table` splits them)",
                                    labels=["integration"])
        last_write = GaugeMetricFamily("msb1_last_write_timestamp_seconds",
                                       "When a record was last written to the books", labels=["integration"])
        lag = GaugeMetricFamily("msb1_poll_lag_seconds", "How far the poll's cursor is behind now (the "
                                "integration's data type furthest behind)", labels=["integration"])
        paused = GaugeMetricFamily("msb1_integration_paused", "1 while an operator has paused the integration "
                                   "(only those)", labels=["integration"])
        circuit = GaugeMetricFamily("msb1_circuit_open", "1 while syncs wait for a service that is out",
                                    labels=["integration", "service", "reason"])
        limit = GaugeMetricFamily("msb1_rate_limit_calls_per_second", "The rate the shared limit of the company's "
                                  "calls has learned from the service's 429s, while it is under the configured rate "
                                  "(a ceiling; calls are spaced for 90 % of it)", labels=["integration", "service"])
        reconciled = GaugeMetricFamily("msb1_reconcile_differences", "Differences the last reconciliation found "
                                       "(repaired or needing a person; the platform's rounding left out; kinds "
                                       "with none left out)", labels=["integration", "kind"])
        reconciled_at = GaugeMetricFamily("msb1_reconcile_last_run_timestamp_seconds",
                                          "The oldest of the integrations' last reconciliations (`moment-sb1 "
                                          "status` names each)")
        pauses = rt.pauses.all()
        oldest_run: list[float] = []
        for iid, integration in sorted(rt.integrations.items()):
            pipe = r.pipeline(transaction=False)
            pipe.hlen(keys.dead(iid))
            pipe.hgetall(keys.stats(iid))
            pipe.lindex(keys.reconcile_history(iid), 0)
            types = sorted(integration.data_types)
            for dt in types:
                pipe.get(keys.cursor(iid, dt))
            count, stats, last_run, *cursors = pipe.execute()
            _reconcile_metrics(iid, last_run, reconciled, oldest_run)
            dead.add_metric([iid], count)
            backlog.add_metric([iid], sum(ls.waiting for ls in rt.lanes.status(iid)))
            stamps = [float(v) for k, v in stats.items() if k.rsplit(":", 1)[-1] in {f"last_{w}_at" for w in WRITTEN}]
            if stamps:
                last_write.add_metric([iid], max(stamps))
            lags = [max(0.0, now - datetime.fromisoformat(c).timestamp()) for c in cursors if c]
            if lags:
                lag.add_metric([iid], max(lags))
            if iid in pauses:
                paused.add_metric([iid], 1)
            for service, buckets in rt.rate_buckets(integration).items():
                if buckets[0].rate > 0:
                    learned = rt.limiter.learned(buckets[:1])[0]
                    if learned < buckets[0].rate * 0.999:
                        limit.add_metric([iid, service], learned)
        if oldest_run:
            reconciled_at.add_metric([], min(oldest_run))
        for c in rt.circuits.all_open():
            circuit.add_metric([c["scope"], c["service"], c.get("reason", "outage")], 1)
        yield from (dead, backlog, last_write, lag, paused, circuit, limit, reconciled, reconciled_at)


def _reconcile_metrics(iid: str, raw: str | None, differences: GaugeMetricFamily, runs: list[float]) -> None:
    """The integration's last reconciliation (``worker.reconcile.history``), if it ran."""
    try:
        run = json.loads(raw) if raw else None
        for kind, counts in sorted((run or {}).get("kinds", {}).items()):
            found = counts["repaired"] + counts["differing"]
            if found:
                differences.add_metric([iid, kind], found)
        if run:
            runs.append(datetime.fromisoformat(run["finished"]).timestamp())
    except (ValueError, KeyError, TypeError):
        log.warning("metrics: %s's last reconciliation cannot be read", iid)


class BuildInfo(Collector):
    """``msb1_build_info{version,python} 1``: which release each process runs."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("msb1_build_info", "The release this process runs (always 1)",
                                 labels=["version", "python"])
        info.add_metric([_version(), platform.python_version()], 1)
        yield info


def _version() -> str:
    try:
        return metadata.version("moment-sb1")
    except metadata.PackageNotFoundError:
        return "unknown"


class _ProcessMetrics(Collector):
    """This process's own counters (or, in multiprocess mode, every process's, summed)."""

    def __init__(self) -> None:
        self._source: Any = REGISTRY
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess
            self._source = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._source)

    def collect(self) -> Iterator[Metric]:
        return self._source.collect()


def registry(runtime_getter) -> CollectorRegistry:
    """What an endpoint serves: the process's counters and the shared state."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_ProcessMetrics())
    reg.register(BuildInfo())
    reg.register(StateCollector(runtime_getter))
    return reg


def serve_worker_metrics(port: int, runtime_getter, host: str = "127.0.0.1") -> None:
    """A worker's endpoint (a small HTTP server thread) on ``host`` (``MSB1_METRICS_HOST``:
    this machine only unless configured; its figures name every integration); port 0 means
    none."""
    if not port:
        return
    from prometheus_client import start_http_server
    start_http_server(port, addr=host, registry=registry(runtime_getter))
    log.info("metrics on http://%s:%d/metrics", host, port)
