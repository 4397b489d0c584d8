"""The whole local stack in one object: a private Redis, the sandbox in its own process,
an RSA client key, an integrations file, and Celery workers. Used by the demo and the
benchmarks."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import requests

from .local import RedisServer, TimedOut, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "moment-sb1-bench"


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    """:func:`wait_until` for the command-line runners: a timeout ends the run with a message."""
    try:
        wait_until(predicate, timeout, interval, what)
    except TimedOut as err:
        raise SystemExit(str(err)) from None


class Stack:
    """Redis + sandbox (own process) + an RSA client key, in a temp directory."""

    def __init__(self, companies: list[dict], latency: float, smtp_port: int | None = None, *,
                 aof: bool = False, env: dict[str, str] | None = None):
        self.tmp = Path(tempfile.mkdtemp(prefix="msb1-stack-"))
        self.procs: list[subprocess.Popen] = []
        # AOF as in docker-compose, when a run restarts Redis and expects to find its data
        self.redis_server = RedisServer(aof=aof, fsync="everysec", directory=self.tmp,
                                        log=self.tmp / "redis.log")
        try:
            self.redis_server.start()
        except (RuntimeError, TimedOut) as err:
            raise SystemExit(str(err)) from None
        self.redis_url = self.redis_server.url
        self.redis = self.redis_server.client

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_file = self.tmp / "client.pem"
        self.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.companies = [{**c, "company_key": c.get("company_key") or str(uuid.uuid4())} for c in companies]
        (self.tmp / "sandbox.json").write_text(json.dumps(
            {"companies": self.companies, "clients": [{"client_id": CLIENT_ID, "public_key_pem": public}]}))
        self.moment_port, self.sb1_port = free_port(), free_port()
        self.moment_url = f"http://127.0.0.1:{self.moment_port}"
        self.sb1_url = f"http://127.0.0.1:{self.sb1_port}"
        self.sandbox_proc = self._spawn([sys.executable, "-m", "sandbox.server", "--moment-port", str(self.moment_port),
                     "--sb1-port", str(self.sb1_port), "--latency", str(latency),
                     "--config", str(self.tmp / "sandbox.json")], "sandbox.log")
        wait_for(self._sandbox_up, 60, "the sandbox")
        # the servers answer before every company is seeded: wait for the last one
        wait_for(lambda: b"Press Ctrl-C to stop." in (self.tmp / "sandbox.log").read_bytes(), 600,
                 "the sandbox to seed its companies", interval=0.2)
        self.integrations_file = self.tmp / "integrations.toml"
        self.integrations_file.write_text("\n".join(
            f'[[integration]]\nid = "{c["moment_company"]}"\nmoment_company = "{c["moment_company"]}"\n'
            f'moment_api_key = "{c["moment_api_key"]}"\nmoment_base_url = "{self.moment_url}"\n'
            f'sb1_base_url = "{self.sb1_url}"\ncompany_key = "{c["company_key"]}"\n'
            f'notify_email = "regnskap@{c["moment_company"]}.example"\n'
            f'data_types = {json.dumps(c.get("data_types", ["customers"]))}\n'
            f'webhook_secret = "{self.webhook_secret(c["moment_company"])}"\n'
            for c in self.companies))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MSB1_")}
        self.env.update({
            "PYTHONPATH": str(ROOT), "MSB1_REDIS_URL": self.redis_url, "MSB1_KEY_PREFIX": "bench",
            "MSB1_INTEGRATIONS_FILE": str(self.integrations_file), "MSB1_SB1_CLIENT_ID": CLIENT_ID,
            "MSB1_SB1_PRIVATE_KEY_FILE": str(self.key_file),
            "MSB1_SB1_TOKEN_URL": f"{self.sb1_url}/connect/token",
            "MSB1_SMTP_HOST": "127.0.0.1", "MSB1_SMTP_PORT": str(smtp_port or free_port()),
            "MSB1_SMTP_SENDER": "moment-sb1@localhost",
            # the rate limits are the product's defaults (MSB1_SB1_RATE_LIMIT and the others are
            # not set); a run that wants other limits, or none (0), passes them in env
            **(env or {}),
        })
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("MSB1_")})

    def restart_redis(self, down: float = 1.0) -> None:
        """Stop Redis as a restart would (it writes its AOF), wait ``down`` seconds, start it."""
        self.redis_server.restart(down)

    def _spawn(self, argv, log_name, **kw) -> subprocess.Popen:
        log = open(self.tmp / log_name, "ab")
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def _sandbox_up(self) -> bool:
        try:
            return requests.get(f"{self.sb1_url}/_sandbox/state", timeout=1).ok
        except requests.ConnectionError:
            return False

    def sb1_state(self) -> dict:
        return requests.get(f"{self.sb1_url}/_sandbox/state", timeout=10).json()

    def set_latency(self, seconds: float) -> None:
        for url in (self.moment_url, self.sb1_url):
            requests.post(f"{url}/_sandbox/faults", json={"latency": seconds}, timeout=10).raise_for_status()

    def start_worker(self, concurrency: int, log_name: str = "worker.log",
                     queues: str = "moment-sb1,moment-sb1-bulk", app: str = "worker.app") -> subprocess.Popen:
        """A worker process with the product's defaults (a thread pool)."""
        log_path = self.tmp / log_name
        env = self.env
        proc = self._spawn([sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "threads",
                            "--concurrency", str(concurrency), "--queues", queues, "--without-mingle",
                            "--without-gossip", "--loglevel", "INFO"], log_name, env=env)
        wait_for(lambda: b" ready." in log_path.read_bytes(), 60, "the worker")
        return proc

    @staticmethod
    def webhook_secret(integration_id: str) -> str:
        return f"{integration_id}-webhook-secret-0123456789"

    def start_receiver(self, log_name: str = "webhooks.log") -> str:
        """Start the webhook receiver; return its base URL."""
        port = free_port()
        self._spawn([sys.executable, "-m", "worker.cli", "webhooks", "--host", "127.0.0.1",
                     "--port", str(port)], log_name, env=self.env)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return requests.get(f"{url}/healthz", timeout=1).ok
            except requests.ConnectionError:
                return False
        wait_for(up, 60, "the webhook receiver")
        return url

    @staticmethod
    def stop_process(proc: subprocess.Popen) -> None:
        """Stop one process of the stack (and its session): SIGTERM, then SIGKILL after 20 s."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def stop(self, keep_files: bool = False) -> None:
        for proc in reversed(self.procs):
            self.stop_process(proc)
        self.redis_server.stop()
        if not keep_files:
            shutil.rmtree(self.tmp, ignore_errors=True)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    user, system, child_user, child_system = (int(v) for v in fields[11:15])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + child_user) / tick, (system + child_system) / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its reaped children."""
    return sum(cpu_times(pid))


def _status(path: Path) -> dict[str, str]:
    """A ``/proc`` status file's fields (raises OSError when its process or thread ended)."""
    return dict(line.split(":\t", 1) for line in path.read_text().splitlines() if ":\t" in line)


def thread_statuses(pid: int) -> dict[int, dict[str, str]]:
    """Each thread of a process (by thread id) → its ``/proc`` status fields."""
    found = {}
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            found[int(status.parent.name)] = _status(status)
        except OSError:             # the thread ended meanwhile
            continue
    return found


def context_switches(pid: int) -> int:
    """Thread switches (voluntary and not) of every thread of a process so far: each time
    one of its threads stopped running, to wait for a socket, a lock or the GIL, or because
    its time was up."""
    return sum(int(fields[name]) for fields in thread_statuses(pid).values()
               for name in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]
