"""Prometheus metrics.

Counted in each process (``msb1_syncs_total``, ``msb1_sync_duration_seconds``,
``msb1_webhooks_total``), and read from Redis when scraped (the state every process shares:
dead letters, the queue, the last write, the poll's lag, circuits, pauses, the learned rate limits). A worker serves
them on ``MSB1_METRICS_PORT``, the webhook receiver on ``/metrics``.

With a prefork pool (several processes per worker), set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty directory: the counters of every child are then summed (prometheus_client's
multiprocess mode). The thread pool this project runs by default needs nothing.

Outcome labels are the words of ``worker.sync.outcomes.Outcome``: created, updated, posted
(written), unchanged, stale, already-posted, not-finalized, gone, failed (dead-lettered),
retried (a try that will be repeated), waiting (for a service that is out, or a pause).
"""
from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime
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

SYNCS = Counter("msb1_syncs", "Syncs by how they ended (or a try that is repeated)",
                ["integration", "data_type", "outcome"])
SYNC_SECONDS = Histogram("msb1_sync_duration_seconds", "Time of one try of one record (fetch, check, write)",
                         ["integration", "data_type"],
                         buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
WEBHOOKS = Counter("msb1_webhooks", "Webhooks by what the receiver did with them", ["integration", "decision"])

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
        last_write = GaugeMetricFamily("msb1_last_write_timestamp_seconds",
                                       "When a record was last written to the books", labels=["integration"])
        lag = GaugeMetricFamily("msb1_poll_lag_seconds", "How far the poll's cursor is behind now",
                                labels=["integration", "data_type"])
        paused = GaugeMetricFamily("msb1_integration_paused", "1 while an operator has paused the integration",
                                   labels=["integration"])
        circuit = GaugeMetricFamily("msb1_circuit_open", "1 while syncs wait for a service that is out",
                                    labels=["integration", "service", "reason"])
        limit = GaugeMetricFamily("msb1_rate_limit_calls_per_second", "The rate the shared limit of the company's "
                                  "calls has learned from the service's 429s (at most the configured rate, a ceiling; "
                                  "calls are spaced for 90 % of the ceiling, a learned rate as it is)", labels=["integration", "service"])
        reconciled = GaugeMetricFamily("msb1_reconcile_differences", "Differences the last reconciliation found "
                                       "(repaired or needing a person; the platform's rounding left out)",
                                       labels=["integration", "kind"])
        reconciled_at = GaugeMetricFamily("msb1_reconcile_last_run_timestamp_seconds",
                                          "When the integration was last reconciled", labels=["integration"])
        pauses = rt.pauses.all()
        for iid, integration in sorted(rt.integrations.items()):
            pipe = r.pipeline(transaction=False)
            pipe.hlen(keys.dead(iid))
            pipe.hgetall(keys.stats(iid))
            pipe.lindex(keys.reconcile_history(iid), 0)
            types = sorted(integration.data_types)
            for dt in types:
                pipe.get(keys.cursor(iid, dt))
            count, stats, last_run, *cursors = pipe.execute()
            _reconcile_metrics(iid, last_run, reconciled, reconciled_at)
            dead.add_metric([iid], count)
            stamps = [float(v) for k, v in stats.items() if k.rsplit(":", 1)[-1] in {f"last_{w}_at" for w in WRITTEN}]
            if stamps:
                last_write.add_metric([iid], max(stamps))
            for dt, cursor in zip(types, cursors):
                if cursor:
                    lag.add_metric([iid, dt], max(0.0, now - datetime.fromisoformat(cursor).timestamp()))
            paused.add_metric([iid], 1 if iid in pauses else 0)
            for service, buckets in rt.rate_buckets(integration).items():
                if buckets[0].rate > 0:
                    limit.add_metric([iid, service], rt.limiter.learned(buckets[:1])[0])
        for c in rt.circuits.all_open():
            circuit.add_metric([c["scope"], c["service"], c.get("reason", "outage")], 1)
        yield from (dead, last_write, lag, paused, circuit, limit, reconciled, reconciled_at)


def _reconcile_metrics(iid: str, raw: str | None, differences: GaugeMetricFamily, at: GaugeMetricFamily) -> None:
    """The integration's last reconciliation (``worker.reconcile.history``), if it ran."""
    try:
        run = json.loads(raw) if raw else None
        for kind, counts in sorted((run or {}).get("kinds", {}).items()):
            differences.add_metric([iid, kind], counts["repaired"] + counts["differing"])
        if run:
            at.add_metric([iid], datetime.fromisoformat(run["finished"]).timestamp())
    except (ValueError, KeyError, TypeError):
        log.warning("metrics: %s's last reconciliation cannot be read", iid)


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
