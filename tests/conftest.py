"""Real parts for the tests: a private Redis server, the sandbox APIs on localhost, an SMTP
sink (aiosmtpd), a Sentry ingest stand-in, and Celery workers as subprocesses."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import redis
import requests

from sandbox.local import RedisServer, free_port, wait_until  # noqa: F401 - the tests import them from here

ROOT = Path(__file__).resolve().parent.parent
COMPANY_KEYS = {"acme": "0f8fad5b-d9cb-469f-a165-70867728950e",
                "fjord": "7c9e6679-7425-40de-944b-e07fc1f90ae7"}
API_KEYS = {"acme": "acme-moment-key-1234", "fjord": "fjord-moment-key-5678"}
CLIENT_ID = "moment-sb1-test-client"


def broker_state(r, worker=None) -> str:
    """The queue as kombu keeps it in Redis, and the end of a worker's log: for failures."""
    lines = [f"queued: {r.llen('moment-sb1')}, unacked: {r.hlen('unacked')}, "
             f"restore lock ttl: {r.ttl('unacked_mutex')}"]
    if worker is not None:
        lines += worker.log().splitlines()[-40:]
    return "\n".join(lines)


# A private Redis for the whole session: the shared one on 6379 is never touched.
SESSION_REDIS = RedisServer()
REDIS_PORT = SESSION_REDIS.port
REDIS_URL = SESSION_REDIS.url
os.environ["MSB1_REDIS_URL"] = REDIS_URL
os.environ["MSB1_KEY_PREFIX"] = "msb1test"
# no shared rate limit unless a test sets one (test_ratelimit_e2e does)
NO_RATE_LIMITS = {"MSB1_SB1_RATE_LIMIT": "0", "MSB1_SB1_HOST_RATE_LIMIT": "0", "MSB1_MOMENT_RATE_LIMIT": "0"}
os.environ.update(NO_RATE_LIMITS)


def publish_task(integration: str, record_id: int, data_type: str = "customers") -> None:
    """Publish a sync task directly, without the producer's coalescing: for tests that want
    every task to run, as redeliveries and replays do."""
    from worker.broker import publish_sync
    publish_sync(data_type, integration, record_id)


def _start(server: RedisServer) -> RedisServer:
    try:
        return server.start()
    except RuntimeError as err:       # no redis-server on this machine
        pytest.fail(str(err))


@pytest.fixture(scope="session")
def redis_server():
    _start(SESSION_REDIS)
    yield REDIS_URL
    SESSION_REDIS.close()


@pytest.fixture
def make_redis():
    """Another private redis-server for one test (``make_redis(aof=True)`` keeps an AOF, so a
    restart finds the data): for tests that stop, kill and restart Redis."""
    servers: list[RedisServer] = []

    def make(**options) -> RedisServer:
        server = _start(RedisServer(**options))
        servers.append(server)
        return server
    yield make
    for server in servers:
        server.close()


@pytest.fixture
def r(redis_server):
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture(scope="session")
def rsa_key(tmp_path_factory):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("keys") / "client.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, public


@pytest.fixture
def smtp():
    from sandbox.mail import Mailbox
    box = Mailbox()
    yield box
    box.stop()


class SentrySink:
    """Stands in for Sentry's ingest endpoint and keeps the raw envelopes it receives."""

    def __init__(self):
        from flask import Flask, request

        from sandbox.server import serve_in_thread
        self.envelopes: list[bytes] = []
        app = Flask("sentry-sink")

        @app.post("/api/<int:project>/envelope/")
        def envelope(project):
            data = request.get_data()
            enc = request.headers.get("Content-Encoding", "")
            if enc == "gzip":
                data = gzip.decompress(data)
            elif enc == "deflate":
                data = zlib.decompress(data)
            elif enc == "br":
                import brotli  # pragma: no cover - only if the SDK picks brotli
                data = brotli.decompress(data)
            self.envelopes.append(data)
            return {"id": "0" * 32}

        self.server = serve_in_thread(app)
        self.dsn = f"http://public@127.0.0.1:{self.server.port}/1"

    def events(self) -> list[dict]:
        found = []
        for raw in self.envelopes:
            lines = raw.split(b"\n")
            for header, payload in zip(lines[1::2], lines[2::2]):
                if json.loads(header).get("type") == "event":
                    found.append(json.loads(payload))
        return found

    def stop(self):
        self.server.stop()


@pytest.fixture
def sentry():
    sink = SentrySink()
    yield sink
    sink.stop()


@pytest.fixture
def sandbox(rsa_key):
    from sandbox.server import Sandbox
    sb = Sandbox()
    for name, key in COMPANY_KEYS.items():
        sb.moment.add_company(name, API_KEYS[name])
        sb.sb1.add_company(key, f"{name.title()} AS")
    sb.sb1.add_client(CLIENT_ID, public_key_pem=rsa_key[1])
    yield sb
    sb.stop()


def write_integrations(path: Path, sandbox, data_types=("customers",), **overrides) -> Path:
    """The test integrations file. Emails are in English unless an override says otherwise
    (``acme={"language": None}`` leaves the product's default, Norwegian)."""
    lines = []
    for name, key in COMPANY_KEYS.items():
        types = overrides.get(name, {}).get("data_types", data_types)
        language = overrides.get(name, {}).get("language", "en")
        lines += ["[[integration]]", *overrides.get(name, {}).get("extra", ()), f'id = "{name}"',
                  f'moment_company = "{name}"',
                  f'moment_api_key = {{ env = "{name.upper()}_MOMENT_KEY" }}',
                  f'moment_base_url = "{sandbox.moment_url}"', f'sb1_base_url = "{sandbox.sb1_url}"',
                  f'company_key = "{key}"', f'notify_email = "regnskap@{name}.example"',
                  f"data_types = {json.dumps(list(types))}",
                  f'webhook_secret = "{name}-webhook-secret-0123456789"',
                  *([f'language = "{language}"'] if language else []), ""]
    path.write_text("\n".join(lines))
    return path


def as_text(raw: str) -> str:
    lines = []
    for line in raw.splitlines():
        try:
            entry = json.loads(line) if line.startswith("{") else None
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or "message" not in entry:
            lines.append(line)
            continue
        lines.append(f"{entry.get('time')} {entry.get('level')} {entry.get('logger')} {entry['message']}")
        if entry.get("error"):
            lines.append(str(entry["error"]))
    return "\n".join(lines) + "\n"


def log_entries(path: Path) -> list[dict]:
    """The JSON lines of a process's log."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


class Worker:
    """A real Celery worker in a subprocess (thread pool), logging to a file."""

    def __init__(self, env: dict, log_path: Path, concurrency: int = 8):
        self.env, self.log_path, self.concurrency = env, log_path, concurrency
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "Worker":
        self._log = open(self.log_path, "ab")
        self._offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "threads",
             "--concurrency", str(self.concurrency), "--queues", "moment-sb1,moment-sb1-bulk", "--without-mingle",
             "--without-gossip", "--loglevel", "INFO", "--hostname", f"test{time.time_ns()}@%h"],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            wait_until(lambda: b" ready." in self.log_path.read_bytes()[self._offset:] or self.proc.poll() is not None,
                       60, 0.1, "the worker to start")
            if self.proc.poll() is not None:
                raise AssertionError("worker exited:\n" + self.log())
        return self

    def log(self) -> str:
        """The worker's log as text: each JSON line as "time level logger message [error]"
        (what a person reads), any other line (Celery's banner) as it is."""
        return as_text(self.log_path.read_text(errors="replace"))

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if hasattr(self, "_log"):
            self._log.close()


@pytest.fixture
def worker_env(sandbox, smtp, rsa_key, r, tmp_path):
    integrations = write_integrations(tmp_path / "integrations.toml", sandbox)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSB1_")}
    env.update({
        "PYTHONPATH": str(ROOT),
        "MSB1_REDIS_URL": REDIS_URL,
        "MSB1_KEY_PREFIX": "msb1test",
        "MSB1_INTEGRATIONS_FILE": str(integrations),
        "ACME_MOMENT_KEY": API_KEYS["acme"],
        "FJORD_MOMENT_KEY": API_KEYS["fjord"],
        "MSB1_SMTP_HOST": "127.0.0.1",
        "MSB1_SMTP_PORT": str(smtp.port),
        "MSB1_SMTP_SENDER": "integration@moment-sb1.example",
        "MSB1_SB1_CLIENT_ID": CLIENT_ID,
        "MSB1_SB1_PRIVATE_KEY_FILE": str(rsa_key[0]),
        "MSB1_SB1_TOKEN_URL": f"{sandbox.sb1_url}/connect/token",
        # fast retries, short timeouts: the same code paths, quicker
        "MSB1_RETRY_MAX_ATTEMPTS": "4",
        "MSB1_RETRY_BASE_DELAY": "0.1",
        "MSB1_RETRY_MAX_DELAY": "1.5",
        "MSB1_VISIBILITY_TIMEOUT": "8",
        "MSB1_RESTORE_INTERVAL": "1",
        "MSB1_RESTORE_LOCK_TIMEOUT": "3",
        "MSB1_LOCK_TIMEOUT": "5",
        "MSB1_LOCK_WAIT": "2",
        "MSB1_HTTP_READ_TIMEOUT": "5",
        "MSB1_DIGEST_WINDOW": "3",
        **NO_RATE_LIMITS,
        "MSB1_CIRCUIT_PROBE_INTERVAL": "2",
    })
    return env


@pytest.fixture
def start_worker(worker_env, tmp_path):
    started: list[Worker] = []

    def start(concurrency: int = 8, wait: bool = True, **env_overrides) -> Worker:
        env = dict(worker_env, **{k: str(v) for k, v in env_overrides.items()})
        w = Worker(env, tmp_path / "worker.log", concurrency).start(wait=wait)
        started.append(w)
        return w

    yield start
    for w in started:        # nothing to wait for: the next test starts from an empty Redis
        if w.proc and w.proc.poll() is None:
            w.kill()
        if hasattr(w, "_log"):
            w._log.close()


@pytest.fixture
def worker(start_worker):
    return start_worker()


def start_receiver(env: dict, output=subprocess.DEVNULL) -> tuple[subprocess.Popen, str]:
    """The webhook receiver as a subprocess, once it answers; and its base URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "webhooks", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return requests.get(f"{url}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return False
    wait_until(up, 30, message="the webhook receiver")
    return proc, url


@pytest.fixture
def receiver(worker_env, r):
    """The webhook receiver (a subprocess); yields acme's webhook URL."""
    proc, url = start_receiver(worker_env)
    yield f"{url}/webhooks/acme/acme-webhook-secret-0123456789"
    proc.terminate()
    proc.wait(10)
