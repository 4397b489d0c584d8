"""What an operator runs, end to end: every CLI command against a real Redis, worker and the
sandbox; the metrics endpoints; the JSON logs; and the CLI with Redis down or a broken
configuration (one line, exit code 1, never a traceback)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import pytest
import requests
from conftest import API_KEYS, COMPANY_KEYS, ROOT, free_port, log_entries, wait_until

from sandbox.moment import seed_customers
from worker.ops.metrics import _version

ACME = COMPANY_KEYS["acme"]
pytestmark = pytest.mark.slow


def run(env, *args, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT, input=input)


def ok(env, *args, input: str | None = None) -> str:
    out = run(env, *args, input=input)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def books(sandbox) -> dict[str, dict]:
    return {c["CustomerNumber"]: c for c in sandbox.sb1.customers(ACME)}


def metric(text: str, name: str, **labels) -> float | None:
    """The value of one sample in a Prometheus exposition (parsed by prometheus_client)."""
    from prometheus_client.parser import text_string_to_metric_families
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == {k: str(v) for k, v in labels.items()}:
                return sample.value
    return None


# ---------------------------------------------------------------- pause / resume

def test_pause_holds_everything_and_resume_picks_up_the_pause(sandbox, start_worker, worker_env, r):
    seeded = seed_customers(sandbox.moment, "acme", 3)
    env = dict(worker_env, MSB1_POLL_INTERVAL="3600")          # no beat here: resume polls itself
    from worker.intake.producer import enqueue
    for rec in seeded:
        enqueue("acme", "customers", rec["id"])                 # queued before the pause
    assert "acme paused" in ok(env, "pause", "acme")
    assert "already paused" in ok(env, "pause", "acme")
    start_worker()
    wait_until(lambda: int(r.hget("msb1test:stats:acme", "customers:waiting") or 0) >= 3, 20,
               message="the queued syncs to wait")
    assert books(sandbox) == {}                                 # nothing written while paused
    refused = run(env, "enqueue", "acme", "customers", str(seeded[0]["id"]))
    assert refused.returncode == 1 and "acme is paused" in refused.stderr
    assert "PAUSED since" in ok(env, "status", "--integration", "acme")
    assert json.loads(ok(env, "status", "--json"))["integrations"]["acme"]["paused_since"]
    # a change made during the pause, known to nobody but Moment (no webhook here)
    [late] = seed_customers(sandbox.moment, "acme", 1, start_number=100200)
    assert "resumed" in ok(env, "resume", "acme")
    wait_until(lambda: len(books(sandbox)) == 4, 30, message="the 3 waiting syncs and the change of the pause")
    assert 100200 in books(sandbox)
    assert "was not paused" in ok(env, "resume", "acme")


def test_a_paused_integration_answers_webhooks_without_queueing(sandbox, receiver, worker_env, r):
    ok(worker_env, "pause", "acme")
    resp = requests.post(receiver, json={"event": "UPDATE", "customer": {"id": 7}}, timeout=10)
    assert resp.status_code == 202 and resp.json()["status"] == "paused", resp.text
    assert r.llen("moment-sb1") == 0
    ok(worker_env, "resume", "acme")
    resp = requests.post(receiver, json={"event": "UPDATE", "customer": {"id": 7}}, timeout=10)
    assert resp.status_code == 202 and resp.json()["status"] == "queued"


# ---------------------------------------------------------------- backfill, history, dead letters, replay, purge

def test_backfill_waits_and_reports_then_history_dead_letters_replay_and_purge(sandbox, start_worker,
                                                                                worker_env, r):
    seeded = seed_customers(sandbox.moment, "acme", 30)
    bad = seeded[4]
    sandbox.moment.update("acme", "customers", bad["id"], {"customerNumber": "12AB"})
    start_worker()
    out = run(worker_env, "backfill", "acme", "--wait", "--page-size", "7")
    assert out.returncode == 1, out.stderr                    # a record failed: exit code 1
    assert "queued 30 customers sync(s) for acme from 5 page(s)" in out.stdout
    assert "backfill: 29 written, 1 failed (29 created)" in out.stdout
    assert "of 30 done" in out.stderr and "ETA" in out.stderr          # progress while it ran
    assert len(books(sandbox)) == 29

    # history: created, then an update naming the field that changed
    good = seeded[0]
    sandbox.moment.update("acme", "customers", good["id"], {"name": "Nytt Navn AS"})
    ok(worker_env, "enqueue", "acme", "customers", str(good["id"]))
    wait_until(lambda: int(r.hget("msb1test:stats:acme", "customers:updated") or 0) == 1, 20, message="the update")
    text = ok(worker_env, "history", "acme", "customers", str(good["id"]))
    lines = text.splitlines()
    assert lines[0] == f"acme customers {good['id']} (number {good['customerNumber']})"
    assert "updated" in lines[1] and "changed: name" in lines[1] and "try 1" in lines[1]
    assert "created" in lines[2]
    assert "Nytt Navn" not in text                              # field names, never values
    # by the number the accountant quotes: the same history
    assert ok(worker_env, "history", "acme", "customers", "--number", good["customerNumber"]) == text
    unknown = run(worker_env, "history", "acme", "customers", "--number", "12AB")    # not valid: never kept
    assert unknown.returncode == 1 and "use the Moment id" in unknown.stderr
    failed = json.loads(ok(worker_env, "history", "acme", "customers", str(bad["id"]), "--json"))
    assert failed[0]["outcome"] == "failed" and "12AB" not in json.dumps(failed)     # the refused value's shape
    assert failed[0]["error"].startswith("the customer number (4 characters: letters and digits) is not a number")
    assert "number" not in failed[0]                                 # not a valid number: not kept
    assert "no syncs of acme customers 999" in ok(worker_env, "history", "acme", "customers", "999")

    # dead letters: plain, JSON, grouped
    assert f"acme customers {bad['id']} (customer with Moment id {bad['id']}) failed 1x" in ok(worker_env,
                                                                                                "dead-letters")
    [letter] = json.loads(ok(worker_env, "dead-letters", "--json"))
    assert letter["record_id"] == bad["id"] and letter["kind"] == "RecordInvalid"
    grouped = ok(worker_env, "dead-letters", "--group")
    assert "    1  acme customers [RecordInvalid]" in grouped and "1 dead letter(s) in 1 group(s)" in grouped
    [group] = json.loads(ok(worker_env, "dead-letters", "--group", "--json"))
    assert group["records"] == 1 and group["moment_ids"] == [bad["id"]]

    # replay: a dry run queues nothing; a real one, still broken, reports the failure
    dry = ok(worker_env, "replay", "--dry-run")
    assert f"would replay acme customers {bad['id']}" in dry and "1 replay(s) would be queued" in dry
    assert r.llen("moment-sb1") == 0
    again = run(worker_env, "replay", "--wait", "--timeout", "30")
    assert again.returncode == 1 and "replay: 0 written, 1 failed" in again.stdout      # failed again: exit 1
    # purge asks first; "no" keeps it
    kept = run(worker_env, "purge", "--integration", "acme", input="n\n")
    assert kept.returncode == 1 and "Delete 1 dead letter(s) (acme customers)?" in kept.stdout
    assert r.hlen("msb1test:dead:acme") == 1
    # fixed in Moment: the replay writes it and says so
    sandbox.moment.update("acme", "customers", bad["id"], {"customerNumber": "100777"})
    assert "replay: 1 written, 0 failed (1 created)" in ok(worker_env, "replay", "--wait", "--timeout", "30")
    assert r.hlen("msb1test:dead:acme") == 0
    assert "no dead letters match" in ok(worker_env, "purge", "-y")


def test_purge_deletes_after_yes(sandbox, start_worker, worker_env, r):
    [rec] = seed_customers(sandbox.moment, "acme", 1)
    sandbox.moment.update("acme", "customers", rec["id"], {"customerNumber": "1"})
    start_worker()
    ok(worker_env, "enqueue", "acme", "customers", str(rec["id"]))
    wait_until(lambda: r.hlen("msb1test:dead:acme") == 1, 20, message="the dead letter")
    assert "deleted 1 dead letter(s)" in ok(worker_env, "purge", "--data-type", "customers", input="y\n")
    assert r.hlen("msb1test:dead:acme") == 0


# ---------------------------------------------------------------- check-config --online

def test_check_config_online_passes_then_names_each_failure(sandbox, smtp, worker_env, tmp_path):
    out = run(dict(worker_env, MSB1_RETRY_MAX_ATTEMPT="3"), "check-config", "--online")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "warning: MSB1_RETRY_MAX_ATTEMPT is not a setting (did you mean MSB1_RETRY_MAX_ATTEMPTS?)" in out.stderr
    for line in ("ok    Redis:", "ok    mail server: 127.0.0.1:", "ok    SpareBank 1 identity server:",
                 "ok    acme: Moment:", "ok    acme: SpareBank 1 Regnskap:", "ok    fjord: Moment:"):
        assert line in out.stdout, out.stdout
    assert "every check passed" in out.stdout
    # invoices: the revenue account and VAT codes are checked too; one is missing
    from conftest import write_integrations
    path = write_integrations(tmp_path / "inv.toml", sandbox, data_types=("customers", "invoices"),
                              acme={"extra": ['vat_codes = ["3", "99"]']})
    bad_key = path.read_text().replace(API_KEYS["fjord"], "wrong")
    path.write_text(bad_key)
    env = dict(worker_env, MSB1_INTEGRATIONS_FILE=str(path), FJORD_MOMENT_KEY="wrong-key", MSB1_SMTP_PORT=str(free_port()))
    out = run(env, "check-config", "--online")
    assert out.returncode == 1
    assert "ok    acme: revenue account 3000: account 3000 (expenses, hours, products) exists" in out.stdout
    assert "ok    acme: VAT code 3: VAT code 3 exists" in out.stdout
    assert "FAIL  acme: VAT code 99: LookupError: VAT code 99 is not in the books" in out.stdout
    assert "FAIL  fjord: Moment:" in out.stdout and "401" in out.stdout
    assert "FAIL  mail server: ConnectionRefusedError" in out.stdout
    assert "3 check(s) failed" in out.stderr
    assert "wrong-key" not in out.stdout + out.stderr and "Traceback" not in out.stderr


# ---------------------------------------------------------------- metrics, logs, health

def test_worker_metrics_and_json_logs(sandbox, start_worker, worker_env, r, tmp_path):
    port = free_port()
    w = start_worker(MSB1_METRICS_PORT=port)
    seeded = seed_customers(sandbox.moment, "acme", 3)
    sandbox.moment.update("acme", "customers", seeded[2]["id"], {"customerNumber": "X1"})
    ok(worker_env, "enqueue", "acme", "customers", *(str(c["id"]) for c in seeded))
    wait_until(lambda: r.hlen("msb1test:dead:acme") == 1 and len(books(sandbox)) == 2, 20, message="the syncs")

    def scraped():
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return text if metric(text, "msb1_sync_outcomes_total", data_type="customers",
                              outcome="failed") == 1 else None
    text = wait_until(scraped, 10, message="the counters on the worker's endpoint")
    assert metric(text, "msb1_sync_outcomes_total", data_type="customers", outcome="created") == 2
    assert metric(text, "msb1_sync_tries_total", data_type="customers", result="final") == 3
    assert metric(text, "msb1_sync_duration_seconds_count", data_type="customers") == 3
    assert metric(text, "msb1_build_info", version=_version(), python=platform.python_version()) == 1
    assert metric(text, "msb1_backlog_messages", integration="acme") == 0
    assert metric(text, "msb1_dead_letters", integration="acme") == 1
    assert metric(text, "msb1_dead_letters", integration="fjord") == 0
    assert metric(text, "msb1_redis_up") == 1
    assert metric(text, "msb1_queue_messages", state="waiting") == 0
    assert abs(metric(text, "msb1_last_write_timestamp_seconds", integration="acme") - time.time()) < 60
    assert metric(text, "msb1_integration_paused", integration="acme") is None     # only those paused
    # every metric the Grafana dashboard in the repo asks for is served
    import re
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "moment-sb1.json").read_text())
    asked = {re.sub(r"_(bucket|count|sum)$", "", name) for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"msb1_[a-z_]+", target["expr"])}
    served = set(re.findall(r"^# TYPE (msb1_[a-z_]+)", text, re.M))
    assert asked and asked <= served, asked - served

    # every line of the worker's log is JSON; a sync's lines name the task and the record
    entries = log_entries(w.log_path)
    created = [e for e in entries if e.get("message", "").endswith(f"customer {seeded[0]['customerNumber']}: created")]
    assert created, [e.get("message") for e in entries][-20:]
    line = created[0]
    assert line["level"] == "INFO" and line["process"] == "worker" and line["logger"] == "worker.sync.task"
    assert line["integration"] == "acme" and line["data_type"] == "customers"
    assert line["moment_id"] == seeded[0]["id"] and line["number"] == seeded[0]["customerNumber"]
    assert len(line["task_id"]) == 36 and line["time"].endswith("Z")
    for private in (seeded[0]["name"], seeded[0]["email"], API_KEYS["acme"]):
        assert private not in w.log_path.read_text()


def test_receiver_metrics_and_decisions_in_its_log(sandbox, worker_env, r, tmp_path):
    port, metrics_port = free_port(), free_port()
    log = tmp_path / "webhooks.log"
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "webhooks", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, env=dict(worker_env, MSB1_WEBHOOK_METRICS_PORT=str(metrics_port)),
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), 30, message="the receiver")
        secret = "acme-webhook-secret-0123456789"
        assert requests.post(f"{url}/webhooks/acme/{secret}", json={"event": "CREATE_NEW", "customer": {"id": 5}},
                             timeout=5).status_code == 202
        assert requests.post(f"{url}/webhooks/acme/{secret}", data="{", headers={"Content-Type": "application/json"},
                             timeout=5).status_code == 400
        assert requests.post(f"{url}/webhooks/acme/wrong-secret-000000", json={}, timeout=5).status_code == 404
        text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text   # never on the webhook port
        assert metric(text, "msb1_webhooks_total", integration="acme", decision="queued") == 1
        assert metric(text, "msb1_webhooks_total", integration="acme", decision="refused") == 1
        assert metric(text, "msb1_webhooks_total", integration="unknown", decision="refused") == 1
        assert metric(text, "msb1_queue_messages", state="waiting") == 1
    finally:
        proc.terminate()
        proc.wait(10)
    decisions = [(e.get("decision"), e.get("status"), e.get("integration")) for e in log_entries(log) if "decision" in e]
    assert decisions == [("queued", 202, "acme"), ("refused", 400, "acme"), ("refused", 404, None)]
    assert secret not in log.read_text() and "wrong-secret" not in log.read_text()


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).ok
    except requests.ConnectionError:
        return False


def test_health_worker_pings_the_node(start_worker, worker_env):
    w = start_worker()
    entries = [e for e in log_entries(w.log_path) if e.get("message", "").endswith(" ready.")]
    node = entries[0]["message"].split()[0]                     # test…@host
    out = run(worker_env, "health", "worker", "--node", node)
    assert out.returncode == 0 and f"worker ok: {node} answered" in out.stdout, out.stderr
    out = run(worker_env, "health", "worker", "--node", "nobody@nowhere", "--timeout", "1")
    assert out.returncode == 1 and "did not answer" in out.stderr


# ---------------------------------------------------------------- the CLI when things are wrong

@pytest.mark.parametrize("command", [["status"], ["dead-letters"], ["pause", "acme"], ["history", "acme", "customers", "1"],
                                     ["replay"], ["purge", "-y"], ["backfill", "acme"], ["health", "beat"],
                                     ["health", "worker", "--timeout", "1"]])
def test_redis_down_is_one_line(worker_env, command):
    env = dict(worker_env, MSB1_REDIS_URL=f"redis://:pw-secret@127.0.0.1:{free_port()}/0")
    out = run(env, *command)
    assert out.returncode == 1, out.stdout
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Redis is not reachable at redis://:***@127.0.0.1:" in out.stderr and "pw-secret" not in out.stderr


@pytest.mark.parametrize("setup,message", [
    ("directory", "is a directory, not a file"),
    ("latin1", "is not UTF-8 text"),
    ("missing", "does not exist"),
    ("bad-setting", "MSB1_TASK_EVENTS must be true or false, got 'maybe'"),
])
def test_broken_configuration_is_one_line(worker_env, tmp_path, setup, message):
    env = dict(worker_env)
    if setup == "directory":
        env["MSB1_INTEGRATIONS_FILE"] = str(tmp_path)
    elif setup == "latin1":
        path = tmp_path / "i.toml"
        path.write_bytes('[[integration]]\nid = "bøk"\n'.encode("latin-1"))
        env["MSB1_INTEGRATIONS_FILE"] = str(path)
    elif setup == "missing":
        env["MSB1_INTEGRATIONS_FILE"] = str(tmp_path / "nope.toml")
    else:
        env["MSB1_TASK_EVENTS"] = "maybe"
    for command in (["check-config"], ["status"]):
        out = run(env, *command)
        assert out.returncode == 1 and message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_version_and_help(worker_env):
    import click

    from worker.cli import main
    assert ok(worker_env, "--version").startswith("moment-sb1, version ")
    assert "Usage: python -m worker.cli backfill" in ok(worker_env, "backfill", "-h")
    for name, command in main.commands.items():
        assert command.help, f"{name} has no help text"
        for param in command.params:           # every option says what it does
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{name} {param.opts[0]} has no help text"


def test_sandbox_config_missing_field_is_one_line(tmp_path):
    path = tmp_path / "sandbox.json"
    path.write_text(json.dumps({"companies": [{"moment_company": "x"}]}))
    # ports 0: the system's free ones (a port picked beforehand may be taken by a parallel test)
    out = subprocess.run([sys.executable, "-m", "sandbox.server", "--moment-port", "0", "--sb1-port",
                          "0", "--config", str(path)], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 1 and "misses the field 'moment_api_key'" in out.stderr and "Traceback" not in out.stderr
