"""The series budget (docs/operations.md, "What to watch"): a worker's /metrics serves at most
300 series for 50 companies. A real worker syncs a customer of each of 50 companies (three
with a dead letter, one paused, one with an open circuit); its scrape is counted line by
line, and ``status --problems`` names exactly those five."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
import requests
from conftest import free_port, publish_task, wait_until
from test_status_table import FLEET, fleet_env, status

from sandbox.moment import seed_customers
from worker.store.keys import Keys
from worker.store.records import Pauses

pytestmark = pytest.mark.slow

BUDGET = 300
DEAD, PAUSED, OUTAGE = ("co07", "co21", "co33"), "co12", "co40"


def series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_a_worker_serves_at_most_300_series_for_50_companies(sandbox, rsa_key, r, tmp_path, start_worker):
    env = fleet_env(tmp_path, sandbox, rsa_key)
    keys = Keys("msb1test")
    records = {}
    for name in FLEET:
        [customer] = seed_customers(sandbox.moment, name, 1)
        if name in DEAD:
            sandbox.moment.update(name, "customers", customer["id"], {"customerNumber": "X1"})
        records[name] = customer["id"]
    Pauses(r, keys).pause(PAUSED)
    r.hset(keys.circuit("circuit", OUTAGE, "sb1"), mapping={"since": f"{time.time():.3f}", "reason": "outage",
                                                           "error": "SpareBank 1 Regnskap answered 503"})
    port = free_port()
    start_worker(**{k: v for k, v in env.items() if k.endswith("_MOMENT_KEY") or k == "MSB1_INTEGRATIONS_FILE"},
                 MSB1_METRICS_PORT=port, MSB1_CIRCUIT_PROBE_INTERVAL=5)
    for name, record_id in records.items():
        if name != OUTAGE:      # a sync of it would probe the (well) sandbox and close the circuit
            publish_task(name, record_id)
    ended = [n for n in FLEET if n not in (PAUSED, OUTAGE)]
    wait_until(lambda: all(r.hget(keys.stats(n), "customers:created" if n not in DEAD else "customers:failed")
                           for n in ended), 90, 0.5, message="a sync of each company")

    polled = datetime.now(timezone.utc).isoformat()
    for name in FLEET:          # as beat's poll leaves it: every company has a poll lag
        r.set(keys.cursor(name, "customers"), polled)
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    lines = series(text)
    assert len(lines) <= BUDGET, f"{len(lines)} series"
    per_company = [line for line in lines if 'integration="co' in line]
    assert len(per_company) <= 5 * len(FLEET), len(per_company)
    assert sum(line.startswith("msb1_backlog_messages{") for line in lines) == 50
    assert sum(line.startswith("msb1_poll_lag_seconds{") for line in lines) == 50
    assert f'msb1_integration_paused{{integration="{PAUSED}"}} 1.0' in lines
    assert not any(line.startswith("msb1_integration_paused{") and PAUSED not in line for line in lines)
    assert not any("integration=" in line for line in lines if line.startswith("msb1_sync_"))   # by data type only
    assert 'msb1_sync_outcomes_total{data_type="customers",outcome="failed"} 3.0' in lines
    print(f"{len(lines)} series on one worker's /metrics for 50 companies")

    out = status(env, "--problems", "--json")
    assert out.returncode == 1
    assert {row["integration"] for row in json.loads(out.stdout)} == {*DEAD, PAUSED, OUTAGE}
