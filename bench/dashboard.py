"""The Grafana dashboard, and a picture of it from a real run against the sandbox.

    .venv/bin/python -m bench.dashboard --write-json     # deploy/grafana/moment-sb1.json
    .venv/bin/pip install -e '.[bench]'                  # matplotlib, for the picture
    .venv/bin/python -m bench.dashboard                  # a 90 s run → docs/dashboard.png

The panels are defined once, here: each has its PromQL (for Grafana) and the same
computation in Python over the samples this script scrapes from the worker's and the
receiver's ``/metrics`` every second (Grafana is not available on the machine that made
the picture). The run: two companies; acme backfills 1,000 customers while fjord's
customers change by webhook at 5/s; 20 of fjord's records turn invalid (dead letters);
SpareBank 1 answers 503 for 20 s (circuits open, syncs wait, then go on); fjord is paused
for 10 s.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests

ROOT = Path(__file__).resolve().parent.parent
JSON_PATH = ROOT / "deploy" / "grafana" / "moment-sb1.json"
PICTURE = ROOT / "docs" / "dashboard.png"
WINDOW = 10          # seconds over which the picture's rates are taken (Grafana: [5m])

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
Series = list[tuple[float, Samples]]


@dataclass
class Panel:
    title: str
    unit: str
    promql: list[tuple[str, str]]            # (expression, legend)
    compute: Callable[[Series, int], dict[str, float]]   # the same, at one point of the run


@dataclass
class Table:
    """The fleet table: one row per company, one column per instant query (not in the picture)."""
    title: str
    columns: list[tuple[str, str, str]]      # (header, expression, unit)


COMPANY = 'integration=~"$company"'          # the dashboard's company variable (All: every one)


def _by(samples: Samples, name: str, label: str | None) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for (metric, labels), value in samples.items():
        if metric == name:
            key = dict(labels).get(label, "") if label else name
            counter = name.endswith(("_total", "_bucket", "_count", "_sum"))
            out[key] = out[key] + value if counter else max(out[key], value)
    return dict(out)


def rate_by(name: str, label: str) -> Callable[[Series, int], dict[str, float]]:
    def compute(series: Series, i: int) -> dict[str, float]:
        j = max(0, i - WINDOW)
        (t1, now), (t0, then) = series[i], series[j]
        if t1 <= t0:
            return {}
        a, b = _by(now, name, label), _by(then, name, label)
        return {k: max(0.0, (v - b.get(k, 0.0)) / (t1 - t0)) for k, v in a.items()}
    return compute


def gauge_by(name: str, label: str | None, transform: Callable[[float, float], float] = lambda v, t: v):
    def compute(series: Series, i: int) -> dict[str, float]:
        t, now = series[i]
        return {k: transform(v, t) for k, v in _by(now, name, label).items()}
    return compute


def quantiles(series: Series, i: int) -> dict[str, float]:
    j = max(0, i - WINDOW)
    now, then = series[i][1], series[j][1]
    buckets: dict[float, float] = defaultdict(float)
    for (metric, labels), value in now.items():
        if metric == "msb1_sync_duration_seconds_bucket":
            le = dict(labels)["le"]
            buckets[float("inf") if le == "+Inf" else float(le)] += value - then.get((metric, labels), 0.0)
    out = {}
    total = buckets.get(float("inf"), 0.0)
    if total <= 0:
        return out
    for q in (0.5, 0.99):
        target, previous_le, previous_count = q * total, 0.0, 0.0
        for le in sorted(buckets):
            if buckets[le] >= target:
                if le == float("inf"):
                    out[f"p{int(q * 100)}"] = previous_le
                else:
                    share = (target - previous_count) / max(1e-9, buckets[le] - previous_count)
                    out[f"p{int(q * 100)}"] = previous_le + (le - previous_le) * share
                break
            previous_le, previous_count = le, buckets[le]
    return out


def both(*computes: Callable[[Series, int], dict[str, float]]) -> Callable[[Series, int], dict[str, float]]:
    def compute(series: Series, i: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in computes:
            out.update(c(series, i))
        return out
    return compute


def tries_not_final(series: Series, i: int) -> dict[str, float]:
    return {k: v for k, v in rate_by("msb1_sync_tries_total", "result")(series, i).items() if k != "final"}


FLEET = Table("Fleet (problems first: circuits, dead letters, paused)", [
    ("circuits open", f'count by (integration) (max by (integration, service) (msb1_circuit_open{{{COMPANY}}}))', "short"),
    ("dead letters", f'max by (integration) (msb1_dead_letters{{{COMPANY}}})', "short"),
    ("paused", f'max by (integration) (msb1_integration_paused{{{COMPANY}}})', "short"),
    ("backlog", f'max by (integration) (msb1_backlog_messages{{{COMPANY}}})', "short"),
    ("since last write", f'time() - max by (integration) (msb1_last_write_timestamp_seconds{{{COMPANY}}})', "s"),
    ("poll lag", f'max by (integration) (msb1_poll_lag_seconds{{{COMPANY}}})', "s"),
])

PANELS = [
    Panel("Syncs per second: final outcomes, and tries repeated or waiting", "ops",
          [('sum by (outcome) (rate(msb1_sync_outcomes_total[5m]))', "{{outcome}}"),
           ('sum by (result) (rate(msb1_sync_tries_total{result!="final"}[5m]))', "{{result}} (a try)")],
          both(rate_by("msb1_sync_outcomes_total", "outcome"), tries_not_final)),
    Panel("Sync duration (one try)", "s",
          [('histogram_quantile(0.5, sum by (le) (rate(msb1_sync_duration_seconds_bucket[5m])))', "p50"),
           ('histogram_quantile(0.99, sum by (le) (rate(msb1_sync_duration_seconds_bucket[5m])))', "p99")], quantiles),
    Panel("Queue", "short",
          [('max by (state) (msb1_queue_messages)', "{{state}}")], gauge_by("msb1_queue_messages", "state")),
    Panel("Backlog per company (both lanes)", "short",
          [(f'max by (integration) (msb1_backlog_messages{{{COMPANY}}})', "{{integration}}")],
          gauge_by("msb1_backlog_messages", "integration")),
    Panel("Dead letters now", "short",
          [(f'max by (integration) (msb1_dead_letters{{{COMPANY}}})', "{{integration}}")],
          gauge_by("msb1_dead_letters", "integration")),
    Panel("Since the last write to the books", "s",
          [(f'time() - max by (integration) (msb1_last_write_timestamp_seconds{{{COMPANY}}})', "{{integration}}")],
          gauge_by("msb1_last_write_timestamp_seconds", "integration", lambda v, t: max(0.0, t - v))),
    Panel("Circuits open (syncs waiting for a service)", "short",
          [(f'sum by (integration, service) (max without (instance, job) (msb1_circuit_open{{{COMPANY}}}))',
            "{{integration}} {{service}}")], gauge_by("msb1_circuit_open", "integration")),
    Panel("Webhooks per second, by decision", "ops",
          [(f'sum by (decision) (rate(msb1_webhooks_total{{{COMPANY}}}[5m]))', "{{decision}}")],
          rate_by("msb1_webhooks_total", "decision")),
    Panel("Paused integrations", "short",
          [(f'max by (integration) (msb1_integration_paused{{{COMPANY}}})', "{{integration}}")],
          gauge_by("msb1_integration_paused", "integration")),
    Panel("Poll lag", "s",
          [(f'max by (integration) (msb1_poll_lag_seconds{{{COMPANY}}})', "{{integration}}")],
          gauge_by("msb1_poll_lag_seconds", "integration")),
]


def fleet_panel(table: Table, n: int) -> dict:
    refs = [chr(65 + k) for k in range(len(table.columns))]
    return {
        "id": n, "type": "table", "title": table.title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 10, "w": 24, "x": 0, "y": 0},
        "fieldConfig": {"defaults": {}, "overrides": [
            {"matcher": {"id": "byName", "options": header}, "properties": [{"id": "unit", "value": unit}]}
            for header, _, unit in table.columns]},
        "options": {"showHeader": True, "sortBy": [{"displayName": "dead letters", "desc": True}]},
        "targets": [{"refId": ref, "expr": expr, "format": "table", "instant": True, "range": False}
                    for ref, (_, expr, _) in zip(refs, table.columns)],
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {
                "excludeByName": {"Time": True},
                "indexByName": {"integration": 0, **{header: k + 1 for k, (header, _, _) in enumerate(table.columns)}},
                "renameByName": {"integration": "company",
                                 **{f"Value #{ref}": header for ref, (header, _, _) in zip(refs, table.columns)}}}},
        ],
    }


COMPANY_VARIABLE = {
    "name": "company", "label": "Company", "type": "query",
    "datasource": {"type": "prometheus", "uid": "${datasource}"},
    "definition": "label_values(msb1_dead_letters, integration)",
    "query": {"query": "label_values(msb1_dead_letters, integration)", "refId": "PrometheusVariableQueryEditor"},
    "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".*",
    "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [], "hide": 0,
}


def grafana_json() -> dict:
    panels = [fleet_panel(FLEET, 1)]
    for n, panel in enumerate(PANELS):
        panels.append({
            "id": n + 2, "type": "timeseries", "title": panel.title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 8, "x": (n % 3) * 8, "y": 10 + (n // 3) * 8},
            "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
            "targets": [{"refId": chr(65 + k), "expr": expr, "legendFormat": legend}
                        for k, (expr, legend) in enumerate(panel.promql)],
        })
    return {
        "title": "moment-sb1", "uid": "moment-sb1", "schemaVersion": 39, "version": 1, "editable": True,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "tags": ["moment-sb1"],
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus"}, COMPANY_VARIABLE]},
        "annotations": {"list": []},
        "panels": panels,
    }


# ---------------------------------------------------------------- the run

def scrape(urls: list[str]) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families
    samples: Samples = {}
    for url in urls:
        try:
            text = requests.get(url, timeout=5).text
        except requests.RequestException:
            continue
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if not s.name.startswith("msb1_"):
                    continue
                key = (s.name, tuple(sorted(s.labels.items())))
                # counters of one process; gauges read from Redis appear on both endpoints
                is_counter = s.name.endswith(("_total", "_bucket", "_count", "_sum"))
                samples[key] = samples.get(key, 0.0) + s.value if is_counter else s.value
    return samples


def run(seconds: float) -> tuple[Series, list[tuple[float, str]], float]:
    """Scrapes (epoch time, samples) and the events (seconds into the run, what)."""
    from sandbox.local import free_port
    from sandbox.stack import Stack, wait_for
    companies = [{"moment_company": "acme", "moment_api_key": "acme-key", "seed_customers": 1000},
                 {"moment_company": "fjord", "moment_api_key": "fjord-key", "seed_customers": 100,
                  "start_number": 150001}]
    metrics_port, receiver_metrics_port = free_port(), free_port()
    stack = Stack(companies, latency=0.02, env={"MSB1_METRICS_PORT": str(metrics_port),
                                                "MSB1_WEBHOOK_METRICS_PORT": str(receiver_metrics_port),
                                                "MSB1_CIRCUIT_PROBE_INTERVAL": "3", "MSB1_RETRY_BASE_DELAY": "0.5",
                                                "MSB1_RETRY_MAX_DELAY": "5", "MSB1_POLL_INTERVAL": "30"})
    events: list[tuple[float, str]] = []
    try:
        stack.start_worker(32)
        receiver = stack.start_receiver()
        beat = stack._spawn([sys.executable, "-m", "worker.cli", "beat"], "beat.log", env=stack.env)
        urls = [f"http://127.0.0.1:{metrics_port}/metrics", f"http://127.0.0.1:{receiver_metrics_port}/metrics"]
        moment = f"{stack.moment_url}/api/1.0/companies/fjord/customers"
        fjord_ids = [c["id"] for c in requests.get(moment, auth=("apikey", "fjord-key"),
                                                   params={"size": 200}, timeout=10).json()["content"]]
        hook = f"{receiver}/webhooks/fjord/{stack.webhook_secret('fjord')}"
        series: Series = []
        stop = threading.Event()
        start = time.time()

        def note(text: str) -> None:
            events.append((time.time() - start, text))
            print(f"{time.time() - start:5.1f}s  {text}", flush=True)

        def webhooks() -> None:
            n = 0
            while not stop.is_set():
                rid = fjord_ids[n % len(fjord_ids)]
                requests.patch(f"{moment}/{rid}", auth=("apikey", "fjord-key"), timeout=10,
                               json={"website": f"https://fjord{n}.example.no"})
                requests.post(hook, json={"event": "UPDATE", "customer": {"id": rid}}, timeout=10)
                n += 1
                stop.wait(0.2)
        threading.Thread(target=webhooks, daemon=True).start()
        note("acme backfills 1,000 customers; fjord: webhooks at 5/s")
        backfill = subprocess.Popen([sys.executable, "-m", "worker.cli", "backfill", "acme", "--page-size", "200"],
                                    cwd=ROOT, env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        script = {20: "invalid", 35: "outage", 55: "recover", 65: "pause", 75: "resume"}
        done = set()
        while time.time() - start < seconds:
            elapsed = time.time() - start
            for at, action in script.items():
                if elapsed >= at and at not in done:
                    done.add(at)
                    if action == "invalid":
                        for rid in fjord_ids[:20]:
                            requests.patch(f"{moment}/{rid}", auth=("apikey", "fjord-key"), timeout=10,
                                           json={"customerNumber": "12AB"})
                        note("20 of fjord's customers get an invalid number")
                    elif action == "outage":
                        requests.post(f"{stack.sb1_url}/_sandbox/faults", json={"error_rate": 1.0},
                                      timeout=10).raise_for_status()
                        note("SpareBank 1 answers 503")
                    elif action == "recover":
                        requests.post(f"{stack.sb1_url}/_sandbox/faults", json={"error_rate": 0.0}, timeout=10)
                        note("SpareBank 1 is back")
                    elif action == "pause":
                        subprocess.run([sys.executable, "-m", "worker.cli", "pause", "fjord"], cwd=ROOT,
                                       env=stack.env, capture_output=True)
                        note("fjord paused")
                    elif action == "resume":
                        subprocess.run([sys.executable, "-m", "worker.cli", "resume", "fjord"], cwd=ROOT,
                                       env=stack.env, capture_output=True)
                        note("fjord resumed")
            series.append((time.time(), scrape(urls)))
            time.sleep(max(0.0, 1.0 - (time.time() - series[-1][0])))
        stop.set()
        backfill.wait(30)
        beat.terminate()
        wait_for(lambda: True, 1, "nothing")
        return series, [(at, text) for at, text in events], start
    finally:
        stack.stop()


def draw(series: Series, events: list[tuple[float, str]], start: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 8, "axes.facecolor": "#181b1f", "figure.facecolor": "#111217",
                         "axes.edgecolor": "#2c3235", "axes.labelcolor": "#ccccdc", "xtick.color": "#8e8e8e",
                         "ytick.color": "#8e8e8e", "text.color": "#ccccdc", "grid.color": "#2c3235",
                         "legend.facecolor": "#181b1f", "legend.edgecolor": "#2c3235"})
    rows = -(-len(PANELS) // 3)
    fig, axes = plt.subplots(rows, 3, figsize=(15, 3 * rows))
    times = [t - start for t, _ in series]
    for panel, ax in zip(PANELS, axes.flat):
        lines: dict[str, list[float]] = defaultdict(lambda: [float("nan")] * len(series))
        for i in range(len(series)):
            for key, value in panel.compute(series, i).items():
                lines[key or "value"][i] = value
        for key in sorted(lines):
            ax.plot(times, lines[key], label=key, linewidth=1.4)
        ax.set_title(panel.title, loc="left", fontsize=9)
        ax.grid(True, linewidth=0.5)
        if lines:
            ax.legend(loc="upper left", fontsize=7)
        for at, _text in events:
            ax.axvline(at, color="#5794f2", linewidth=0.6, alpha=0.5, linestyle="--")
        ax.set_xlabel(f"seconds into the run ({panel.unit})", fontsize=7)
    fig.suptitle("moment-sb1 — a 90 s run against the sandbox: " + "; ".join(f"{t:.0f}s {text}" for t, text in events),
                 fontsize=8, x=0.01, ha="left")
    for ax in list(axes.flat)[len(PANELS):]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-json", action="store_true", help=f"write {JSON_PATH.relative_to(ROOT)} and stop")
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--out", type=Path, default=PICTURE)
    args = parser.parse_args()
    JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
    JSON_PATH.write_text(json.dumps(grafana_json(), indent=2) + "\n")
    if args.write_json:
        print(f"wrote {JSON_PATH}")
        return
    series, events, start = run(args.seconds)
    draw(series, events, start, args.out)
    print(f"wrote {args.out} ({len(series)} scrapes)")


if __name__ == "__main__":
    main()
