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


def listening_on(port: int) -> set[str]:
    """The IPv4 addresses a socket listens on at ``port``, as the kernel says (/proc/net/tcp;
    LISTEN is state 0A)."""
    import struct
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(struct.pack("<I", int(address, 16))))
    return found


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
                 directory: Path | None = None, log: Path | None = None, extra: tuple[str, ...] = ()):
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="msb1-redis-"))
        self.argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "yes" if aof else "no", "--appendfsync", fsync, "--dir", str(self.dir),
                     *extra]
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


class SentinelGroup:
    """A master, a replica and three sentinels watching them (quorum 2), all local: the
    ``MSB1_REDIS_URL`` of it is :attr:`url`. :meth:`kill_master` makes the sentinels promote
    the replica within a few seconds."""

    def __init__(self, master_name: str = "msb1", down_after_ms: int = 1000):
        self.name = master_name
        self.master = RedisServer().start()
        self.replica = RedisServer(extra=("--replicaof", "127.0.0.1", str(self.master.port))).start()
        self.dir = Path(tempfile.mkdtemp(prefix="msb1-sentinel-"))
        self.sentinels: list[subprocess.Popen] = []
        self.ports = [free_port() for _ in range(3)]
        for port in self.ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                            f"sentinel monitor {master_name} 127.0.0.1 {self.master.port} 2\n"
                            f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
                            f"sentinel failover-timeout {master_name} 5000\n"
                            f"sentinel parallel-syncs {master_name} 1\n")
            self.sentinels.append(subprocess.Popen(["redis-server", str(conf), "--sentinel"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                                   start_new_session=True))
        self.url = "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + f"/{master_name}/0"
        wait_until(lambda: all(self._knows_replica(p) for p in self.ports), 30,
                   message="three sentinels that know the master and its replica")

    def _ask(self, port: int, *command: str):
        client = redis.Redis(port=port, decode_responses=True, socket_timeout=2)
        try:
            return client.execute_command(*command)
        except redis.RedisError:
            return None
        finally:
            client.close()

    def _knows_replica(self, port: int) -> bool:
        replicas = self._ask(port, "SENTINEL", "REPLICAS", self.name) or []
        return any(r.get("port") == str(self.replica.port) if isinstance(r, dict) else
                   str(self.replica.port) in r for r in replicas)

    def master_port(self) -> int | None:
        for port in self.ports:
            answer = self._ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
            if answer:
                return int(answer[1])
        return None

    def kill_master(self) -> None:
        """SIGKILL the master (no goodbye) and wait until the sentinels promoted the replica."""
        self.master.proc.kill()
        self.master.proc.wait(10)
        wait_until(lambda: self.master_port() == self.replica.port and self.replica.client.role()[0] == "master",
                   30, 0.2, message="the sentinels to promote the replica")

    def close(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        for server in (self.master, self.replica):
            if server.proc and server.proc.poll() is None:
                server.close()
            else:
                shutil.rmtree(server.dir, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
