"""Day-two work, end to end: a fleet's backfill in one command, check-config's one line per
cause, resume's poll at once (past the "ran moments ago" guard), JSON on every line of a
worker's output, and the receiver's log naming the task it queued."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests
from conftest import COMPANY_KEYS, ROOT, start_receiver, wait_until

from sandbox.moment import seed_customers

pytestmark = pytest.mark.slow


def run(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def books(sandbox, company: str = "acme") -> dict:
    return {c["CustomerNumber"]: c for c in sandbox.sb1.customers(COMPANY_KEYS[company])}


def test_check_config_names_one_missing_key_file_once_for_fifty_companies(worker_env, tmp_path):
    path = tmp_path / "fifty.toml"
    entries = [f'[[integration]]\nid = "c{n:02d}"\nmoment_company = "c{n:02d}"\n'
               f'moment_api_key = {{ file = "{tmp_path}/moment-key" }}\nbank = "sor-norge"\n'
               f'company_key = "0f8fad5b-d9cb-469f-a165-{n:012d}"\nnotify_email = "regnskap@c{n:02d}.example"\n'
               'data_types = ["customers"]\n'
               for n in range(50)]
    path.write_text("\n".join(entries))
    out = run(dict(worker_env, MSB1_INTEGRATIONS_FILE=str(path)), "check-config")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert f"field 'moment_api_key': file '{tmp_path}/moment-key'" in lines[0]
    assert lines[0].endswith("(50 integration(s): " + ", ".join(f"c{n:02d}" for n in range(50)) + ")")


def test_backfill_all_one_line_per_company_exit_code_and_replay(sandbox, start_worker, worker_env, r):
    seed_customers(sandbox.moment, "acme", 3)
    [_, bad] = seed_customers(sandbox.moment, "fjord", 2, start_number=150001)
    sandbox.moment.update("fjord", "customers", bad["id"], {"customerNumber": "12AB"})
    start_worker()
    out = run(worker_env, "backfill", "--all", "--wait", "--timeout", "60")
    assert out.returncode == 1, out.stdout + out.stderr          # fjord's record failed
    lines = out.stdout.splitlines()
    assert "acme: queued 3 customers from 1 page(s)" in lines and "fjord: queued 2 customers from 1 page(s)" in lines
    assert "acme: backfill: 3 written, 0 failed (3 created)" in lines
    assert "fjord: backfill: 1 written, 1 failed (1 created)" in lines
    assert "1 integration(s) need attention" in out.stderr
    assert len(books(sandbox, "acme")) == 3
    # the replay of a record still broken fails again: exit code 1
    again = run(worker_env, "replay", "--wait", "--timeout", "30")
    assert again.returncode == 1 and "replay: 0 written, 1 failed" in again.stdout
    assert run(worker_env, "backfill", "acme", "--all").returncode != 0       # one or --all, not both


def test_resume_polls_at_once_even_when_a_poll_ran_moments_ago(sandbox, start_worker, worker_env, r):
    start_worker(MSB1_POLL_INTERVAL=3600)             # beat's next poll is an hour away
    assert run(worker_env, "pause", "acme").returncode == 0
    r.set("msb1test:poll-guard:acme:customers", "1", ex=1800)      # a poll ran just before the pause
    [late] = seed_customers(sandbox.moment, "acme", 1)              # a change made during the pause
    assert run(worker_env, "resume", "acme").returncode == 0
    wait_until(lambda: int(late["customerNumber"]) in books(sandbox), 30, message="the change made during the pause")


def test_every_line_of_a_json_worker_is_json(sandbox, start_worker, worker_env, tmp_path):
    w = start_worker(MSB1_LOG_FORMAT="json")
    [customer] = seed_customers(sandbox.moment, "acme", 1)
    assert run(worker_env, "enqueue", "acme", "customers", str(customer["id"])).returncode == 0
    wait_until(lambda: int(customer["customerNumber"]) in books(sandbox), 30, message="the sync")
    w.stop()                                        # "worker: Warm shutdown": printed by Celery
    raw = w.log_path.read_text()
    entries = [json.loads(line) for line in raw.splitlines()]       # every line, or this raises
    assert any("celery@" in e["message"] or "[queues]" in e["message"] for e in entries if e["logger"] == "stdout")
    assert any("Warm shutdown" in e["message"] for e in entries)


def test_the_receiver_logs_the_task_it_queued(sandbox, worker_env, tmp_path):
    log_path = tmp_path / "receiver.log"
    with open(log_path, "wb") as log:
        proc, url = start_receiver(worker_env, log)
    try:
        resp = requests.post(f"{url}/webhooks/acme/acme-webhook-secret-0123456789",
                             json={"event": "UPDATE", "customer": {"id": 7}}, timeout=10)
        assert resp.status_code == 202 and resp.json()["status"] == "queued"

        def queued_line():
            for line in log_path.read_text().splitlines():
                entry = json.loads(line)
                if entry.get("decision") == "queued":
                    return entry
        entry = wait_until(queued_line, 10, message="the receiver's line")
        assert entry["task_id"] and entry["moment_id"] == 7
    finally:
        proc.terminate()
        proc.wait(10)
    assert all(json.loads(line) for line in log_path.read_text().splitlines())   # its output too
