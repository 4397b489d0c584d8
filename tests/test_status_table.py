"""``status --table`` and ``--problems`` for a fleet of 50 companies: one row each, problems
first; ``--problems`` lists exactly the companies that need attention and exits 1. The state
is written through the product's own stores into a real Redis (no worker: cheap)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from conftest import CLIENT_ID, ROOT

from worker.store.keys import Keys
from worker.store.records import DeadLetter, DeadLetters, Pauses

FLEET = [f"co{n:02d}" for n in range(1, 51)]


def company_key(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.example"))


def fleet_env(tmp_path: Path, sandbox, rsa_key, names=FLEET, data_types=("customers",)) -> dict:
    """An integrations file of ``names`` against the sandbox (each a company there too), and
    the environment of a command or worker that reads it."""
    lines, env = [], {}
    for name in names:
        sandbox.moment.add_company(name, f"{name}-moment-key")
        sandbox.sb1.add_company(company_key(name), f"{name.title()} AS")
        env[f"{name.upper()}_MOMENT_KEY"] = f"{name}-moment-key"
        lines += ["[[integration]]", f'id = "{name}"', f'moment_company = "{name}"',
                  f'moment_api_key = {{ env = "{name.upper()}_MOMENT_KEY" }}',
                  f'moment_base_url = "{sandbox.moment_url}"', f'sb1_base_url = "{sandbox.sb1_url}"',
                  f'company_key = "{company_key(name)}"', f'notify_email = "regnskap@{name}.example"',
                  f"data_types = {json.dumps(list(data_types))}",
                  f'webhook_secret = "{name}-webhook-secret-0123456789"', 'language = "en"', ""]
    path = tmp_path / "fleet.toml"
    path.write_text("\n".join(lines))
    base = {k: v for k, v in os.environ.items() if not k.startswith("MSB1_")}
    return {**base, **env, "PYTHONPATH": str(ROOT), "MSB1_REDIS_URL": os.environ["MSB1_REDIS_URL"],
            "MSB1_KEY_PREFIX": "msb1test", "MSB1_INTEGRATIONS_FILE": str(path), "MSB1_SB1_CLIENT_ID": CLIENT_ID,
            "MSB1_SB1_PRIVATE_KEY_FILE": str(rsa_key[0]), "MSB1_SB1_TOKEN_URL": f"{sandbox.sb1_url}/connect/token",
            "MSB1_SMTP_HOST": "127.0.0.1", "MSB1_SMTP_PORT": "1", "MSB1_SMTP_SENDER": "integration@moment-sb1.example",
            "MSB1_SB1_RATE_LIMIT": "0", "MSB1_SB1_HOST_RATE_LIMIT": "0", "MSB1_MOMENT_RATE_LIMIT": "0"}


def status(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker.cli", "status", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_fleet_table_lists_the_companies_that_need_attention_first(sandbox, rsa_key, r, tmp_path):
    env = fleet_env(tmp_path, sandbox, rsa_key)
    keys = Keys("msb1test")
    now = datetime.now(timezone.utc)
    for name in FLEET:           # every company polled a minute ago and written to the books
        r.set(keys.cursor(name, "customers"), (now - timedelta(seconds=60)).isoformat())
        r.hset(keys.stats(name), mapping={"customers:created": 3, "customers:last_created_at": f"{time.time():.3f}"})
    dead = DeadLetters(r, keys)
    for name, n in (("co17", 2), ("co03", 5)):
        for record_id in range(n):
            dead.record(DeadLetter(name, "customers", 100 + record_id, f"customer {100 + record_id}",
                                   "The customer number 'AB12' is not a number (request id 77)", "RecordInvalid"))
    Pauses(r, keys).pause("co25")
    r.hset(keys.circuit("circuit", "co40", "sb1"), mapping={"since": f"{time.time() - 120:.3f}", "reason": "outage",
                                                           "error": "SpareBank 1 Regnskap answered 503"})
    r.set(keys.cursor("co44", "customers"), (now - timedelta(hours=2)).isoformat())   # poll held back 2 h

    out = status(env, "--problems")
    assert out.returncode == 1, out.stdout + out.stderr
    rows = out.stdout.splitlines()
    assert rows[0].split()[:4] == ["company", "paused", "circuits", "dead"]
    listed = [line.split()[0] for line in rows[1:-1]]
    assert listed == ["co40", "co03", "co17", "co25", "co44"]      # circuits, most dead letters, paused, the rest
    assert "sb1 outage" in rows[1] and "SpareBank 1 Regnskap answered 503" in rows[1]
    assert "RecordInvalid: The customer number 'AB12' is not a number" in rows[2] and "request id" not in rows[2]
    assert rows[-1].startswith("5 of 50 companies need attention: co40 (circuit open), co03 (dead letters)")

    table = status(env, "--table")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert len(lines) == 1 + 50 + 1 and [line.split()[0] for line in lines[1:6]] == listed
    assert lines[6].split()[:6] == ["co01", "-", "-", "0", "0", "0"]

    rows_json = json.loads(status(env, "--problems", "--json").stdout)
    assert [(row["integration"], row["problems"]) for row in rows_json] == [
        ("co40", ["circuit open"]), ("co03", ["dead letters"]), ("co17", ["dead letters"]), ("co25", ["paused"]),
        ("co44", ["poll behind"])]
    assert rows_json[1]["dead_letters"] == 5 and rows_json[1]["backlog"] == {"live": 0, "bulk": 0}
    assert 7150 < rows_json[4]["poll_lag_seconds"] < 7400

    # one company that is fine: no problems, exit 0; the detailed status is still there
    assert status(env, "--problems", "--integration", "co01").returncode == 0
    detailed = status(env, "co03")
    assert detailed.returncode == 0 and "co03 (customers)" in detailed.stdout and "dead letters: 5" in detailed.stdout
    assert "co01" not in detailed.stdout

    # nothing personal: the dead letters' records are named by number only
    assert "regnskap@" not in out.stdout + table.stdout
