"""Each process gets only its own secrets: a secret setting may come from a file
(``MSB1_<NAME>_FILE``), an integration's secret from ``{ env = ... }`` or ``{ file = ... }``;
a secret a process is not given is an error only in a process that uses it (one line), so
the webhook receiver runs with the webhook secrets alone and a worker without them."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests
from conftest import COMPANY_KEYS, ROOT, free_port, wait_until

from worker.config.integrations import IntegrationsError, load_integrations, require_secrets
from worker.config.settings import Settings, SettingsError, secret_settings, unknown_variables

SECRET_SETTINGS = {"MSB1_SMTP_PASSWORD": "smtp_password", "MSB1_SENTRY_DSN": "sentry_dsn",
                   "MSB1_SB1_P12_PASSWORD": "sb1_p12_password", "MSB1_SB1_CLIENT_SECRET": "sb1_client_secret",
                   "MSB1_CONSOLE_SECRET": "console_secret"}
WEBHOOK_SECRETS = {"acme": "acme-webhook-secret-from-env-0123", "fjord": "fjord-webhook-secret-from-file-45"}


# ------------------------------------------------------------------ settings from files

def test_every_secret_setting_can_be_read_from_a_file(tmp_path):
    assert secret_settings() == set(SECRET_SETTINGS)
    for name, attr in SECRET_SETTINGS.items():
        value = "https://abc123@sentry.example/1" if name == "MSB1_SENTRY_DSN" else "pw with spaces \u00e6"
        path = tmp_path / name
        path.write_text(value + "\n")             # as `echo value > file` writes it
        settings = Settings.from_env({f"{name}_FILE": str(path)})
        assert getattr(settings, attr) == value, name
    assert unknown_variables({f"{name}_FILE": "x" for name in SECRET_SETTINGS}) == []
    assert unknown_variables({"MSB1_SMTP_HOST_FILE": "x"}) != []       # only secrets come from files
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert Settings.from_env({"MSB1_SMTP_PASSWORD_FILE": str(empty)}).smtp_password is None


@pytest.mark.parametrize("case,expected", [
    ("missing", "MSB1_SMTP_PASSWORD_FILE: '{tmp}/nope' cannot be read (No such file or directory)"),
    ("directory", "MSB1_SMTP_PASSWORD_FILE: '{tmp}' cannot be read (Is a directory)"),
    ("both", "set MSB1_SMTP_PASSWORD or MSB1_SMTP_PASSWORD_FILE, not both"),
    ("huge", "MSB1_SMTP_PASSWORD_FILE: '{tmp}/huge' is larger than 64 KiB; is it the right file?"),
    ("binary", "MSB1_SMTP_PASSWORD_FILE: '{tmp}/binary' is not UTF-8 text"),
])
def test_a_secret_file_that_cannot_be_used_is_one_line_without_the_secret(tmp_path, case, expected):
    (tmp_path / "pw").write_text("the-password\n")
    (tmp_path / "huge").write_text("the-password" * 10000)
    (tmp_path / "binary").write_bytes(b"the-password\xff")
    env = {"missing": {"MSB1_SMTP_PASSWORD_FILE": str(tmp_path / "nope")},
           "directory": {"MSB1_SMTP_PASSWORD_FILE": str(tmp_path)},
           "both": {"MSB1_SMTP_PASSWORD_FILE": str(tmp_path / "pw"), "MSB1_SMTP_PASSWORD": "the-password"},
           "huge": {"MSB1_SMTP_PASSWORD_FILE": str(tmp_path / "huge")},
           "binary": {"MSB1_SMTP_PASSWORD_FILE": str(tmp_path / "binary")}}[case]
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert str(err.value) == expected.format(tmp=tmp_path)
    assert "the-password" not in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------ the integrations file's secrets

def integrations_file(path, *, moment_keys: dict[str, str]) -> str:
    """acme's secrets from variables, fjord's from files (``moment_keys``: where each key is)."""
    lines = []
    for name, key in COMPANY_KEYS.items():
        source = ({"env": f"{name.upper()}_MOMENT_API_KEY"} if name == "acme"
                  else {"file": moment_keys.get(name, str(path.parent / "fjord-moment-api-key"))})
        hook = ('{ env = "ACME_WEBHOOK_SECRET" }' if name == "acme"
                else f'{{ file = "{path.parent / "fjord-webhook-secret"}" }}')
        ref = ", ".join(f'{k} = "{v}"' for k, v in source.items())
        lines += ["[[integration]]", f'id = "{name}"', f'moment_company = "{name}"',
                  f"moment_api_key = {{ {ref} }}", 'bank = "smn"', f'company_key = "{key}"',
                  f'notify_email = "regnskap@{name}.example"', 'data_types = ["customers"]',
                  f"webhook_secret = {hook}", ""]
    path.write_text("\n".join(lines))
    return str(path)


def test_secrets_from_variables_and_files_and_what_a_process_lacks(tmp_path):
    path = integrations_file(tmp_path / "integrations.toml", moment_keys={})
    (tmp_path / "fjord-webhook-secret").write_text(WEBHOOK_SECRETS["fjord"] + "\n")
    # the receiver's view: webhook secrets only
    loaded = load_integrations(path, env={"ACME_WEBHOOK_SECRET": WEBHOOK_SECRETS["acme"]})
    assert {i: loaded[i].webhook_secret for i in loaded} == WEBHOOK_SECRETS
    require_secrets(loaded.values(), "webhook_secret")
    assert loaded["acme"].moment_api_key is None and loaded["fjord"].moment_api_key is None
    with pytest.raises(IntegrationsError) as err:
        require_secrets(loaded.values(), "moment_api_key")
    assert str(err.value).splitlines() == [
        "integration 'acme', field 'moment_api_key': environment variable ACME_MOMENT_API_KEY is not set",
        f"integration 'fjord', field 'moment_api_key': file '{tmp_path}/fjord-moment-api-key' cannot be read "
        "(No such file or directory)"]
    with pytest.raises(IntegrationsError, match="^integration 'acme', field 'moment_api_key': environment "
                                                "variable ACME_MOMENT_API_KEY is not set$"):
        loaded["acme"].secret("moment_api_key")
    # a worker's view: the Moment keys, no webhook secret
    (tmp_path / "fjord-webhook-secret").unlink()
    (tmp_path / "fjord-moment-api-key").write_text("fjord-key-from-a-file\r\n")
    loaded = load_integrations(path, env={"ACME_MOMENT_API_KEY": "acme-key-from-env"})
    require_secrets(loaded.values(), "moment_api_key")
    assert [loaded[i].secret("moment_api_key") for i in ("acme", "fjord")] == ["acme-key-from-env",
                                                                                "fjord-key-from-a-file"]
    assert loaded["acme"].webhook_secret is None and "fjord-key" not in repr(loaded["fjord"])
    with pytest.raises(IntegrationsError, match="field 'webhook_secret': file .*fjord-webhook-secret' cannot be read"):
        require_secrets(loaded.values(), "webhook_secret")
    # a secret's rules still hold where it is given
    (tmp_path / "fjord-webhook-secret").write_text("short\n")
    with pytest.raises(IntegrationsError, match="field 'webhook_secret': must be at least 16 characters"):
        load_integrations(path, env={})
    (tmp_path / "fjord-webhook-secret").write_text("\n")
    with pytest.raises(IntegrationsError, match="field 'webhook_secret': file .* is empty"):
        require_secrets(load_integrations(path, env={}).values(), "webhook_secret")


def process_env(tmp_path, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSB1_") and not k.endswith("_MOMENT_KEY")}
    env.update(PYTHONPATH=str(ROOT), MSB1_REDIS_URL=redis_url, MSB1_KEY_PREFIX="msb1test",
               MSB1_INTEGRATIONS_FILE=integrations_file(tmp_path / "integrations.toml", moment_keys={}), **extra)
    return env


def test_the_receiver_runs_on_the_webhook_secrets_alone(tmp_path, r, redis_server):
    """No Moment API key, no SpareBank 1 key, no mail password: the receiver takes webhooks."""
    (tmp_path / "fjord-webhook-secret").write_text(WEBHOOK_SECRETS["fjord"] + "\n")
    env = process_env(tmp_path, redis_server, ACME_WEBHOOK_SECRET=WEBHOOK_SECRETS["acme"])
    assert not [k for k in env if "MOMENT" in k or k.startswith(("MSB1_SB1", "MSB1_SMTP"))]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "webhooks", "--host", "127.0.0.1", "--port",
                             str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
            except requests.ConnectionError:
                return False
        wait_until(up, 30, message="the receiver")
        for name, secret in WEBHOOK_SECRETS.items():
            answer = requests.post(f"http://127.0.0.1:{port}/webhooks/{name}/{secret}", timeout=10,
                                   json={"event": "UPDATE", "customer": {"id": 7, "customerNumber": "100001"}})
            assert answer.status_code in (200, 202), (name, answer.status_code, answer.text)
        assert r.llen("moment-sb1") == 2
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_receiver_without_a_webhook_secret_and_a_worker_without_a_moment_key_refuse_to_start(
        tmp_path, redis_server, rsa_key):
    (tmp_path / "fjord-webhook-secret").write_text(WEBHOOK_SECRETS["fjord"] + "\n")
    receiver = subprocess.run([sys.executable, "-m", "worker.cli", "webhooks", "--port", str(free_port())],
                              cwd=ROOT, env=process_env(tmp_path, redis_server), capture_output=True, text=True,
                              timeout=60)
    assert receiver.returncode != 0
    [line] = [line for line in receiver.stderr.splitlines() if "webhook_secret" in line]
    assert line.endswith("integration 'acme', field 'webhook_secret': environment variable ACME_WEBHOOK_SECRET "
                         "is not set"), receiver.stderr
    assert "Traceback" not in receiver.stderr
    (tmp_path / "fjord-moment-api-key").write_text("fjord-key\n")
    env = process_env(tmp_path, redis_server, MSB1_SB1_CLIENT_ID="c", MSB1_SB1_PRIVATE_KEY_FILE=str(rsa_key[0]))
    worker = subprocess.run([sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "threads"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert worker.returncode != 0
    assert ("moment-sb1: the worker cannot start: integration 'acme', field 'moment_api_key': environment "
            "variable ACME_MOMENT_API_KEY is not set") in worker.stderr.splitlines()
