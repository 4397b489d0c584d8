"""Local processes for the tests, the demo and the benchmarks: a private ``redis-server`` on
a free port (never the shared one), and the small helpers every runner needs."""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

INSTALL_HINT = ("redis-server is needed: install it (Debian/Ubuntu: sudo apt-get install redis-server; "
                "macOS: brew install redis), or run scripts/setup as root")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class TimedOut(AssertionError):
    """What was awaited did not happen in time (an AssertionError, so pytest shows it as a failure)."""


def wait_until(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.05,
               message: str = "condition", describe: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` until it is true and return its value; on timeout, say what was
    awaited and, through ``describe()``, what the state was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    details = f"\n{describe()}" if describe else ""
    raise TimedOut(f"timed out after {timeout}s waiting for {message}{details}")


class RedisServer:
    """A private ``redis-server`` on a free local port.

    ``aof=True`` keeps an append-only file (as docker-compose does), so :meth:`restart` finds
    the data again; without it a restart starts empty. ``with RedisServer() as server: ...``
    or :meth:`start` / :meth:`close`.
    """

    def __init__(self, *, port: int | None = None, aof: bool = False, fsync: str = "always",
                 directory: Path | None = None, log: Path | None = None):
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="msb1-redis-"))
        self.argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "yes" if aof else "no", "--appendfsync", fsync, "--dir", str(self.dir)]
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.client = redis.Redis.from_url(self.url, decode_responses=True)

    def up(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def start(self) -> RedisServer:
        if not shutil.which("redis-server"):
            raise RuntimeError(INSTALL_HINT)
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if self.log:
                out.close()
        wait_until(self.up, 20, message=f"redis-server on port {self.port}")
        return self

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM writes the AOF; ``kill`` does not) and wait for its port."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(30)
        wait_until(lambda: not listening(self.port), 5, message=f"redis' port {self.port} to close")

    def restart(self, down: float = 0.0) -> None:
        self.stop()
        time.sleep(down)
        self.start()

    def close(self) -> None:
        self.stop()
        self.client.close()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
