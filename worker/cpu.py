"""Which CPU a worker process runs on (``MSB1_WORKER_CPU``).

A worker process's threads share Python's interpreter lock, so a process does about one
core's work however many cores it may use; kept on one core, its threads hand the lock to
one another without waking a second core, which costs less CPU and halves the time of a
sync (``bench.customers --float`` against the default; README, *Operations*).

- ``auto`` (the default): the process takes a CPU no other worker process on this machine
  has taken, and keeps to it. The claims are keys in Redis, one per machine and CPU
  (the machine is the kernel's boot ID, the same in every container on it), so worker
  processes in separate containers never share a CPU. A claim expires
  ``CLAIM_TTL`` seconds after its worker stops renewing it (killed); a worker that stops
  cleanly gives it back. No CPU free, or Redis not reachable at start: the worker runs
  wherever the system puts it and tries again every ``RENEW_EVERY`` seconds (so a worker
  restarted after a kill takes a CPU once its old claim expires). A process that may use
  one CPU only does not claim, nor does a worker run with Celery's prefork pool (its
  children would share the one CPU; ours run a thread pool). A worker that takes live
  work only (``--lanes live``) does not claim one either: it is idle most of the time, and
  a core kept for it would be a core the others cannot have.
- a number: that CPU, unconditionally (the operator's choice). It is not claimed, so an
  ``auto`` worker may take the same one: on one machine, give every worker a number or none.
- ``off``: wherever the system puts it.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Callable, NamedTuple

import redis

from .state import Keys, release_lock

log = logging.getLogger(__name__)

AUTO, OFF = "auto", "off"
CLAIM_TTL = 60          # seconds a claim outlives its last renewal
RENEW_EVERY = 15        # seconds between renewals

# Take the first free CPU of KEYS (one key per CPU the process may use, in order): its
# index (1-based), or 0 when every one is taken.
_CLAIM = """
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'EX', tonumber(ARGV[2])) then return i end
end
return 0
"""
# Renew a claim that is still ours, or take it again when Redis lost it (a restart keeps
# nothing): 1; 0 when another worker holds it now.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return 1
"""


def parse(value: str) -> int | str:
    """``auto``, ``off`` or a CPU number (an int); ValueError for anything else."""
    text = value.strip().lower()
    if text in (AUTO, OFF):
        return text
    if text.isascii() and text.isdigit():
        return int(text)
    raise ValueError(value)


def machine_id() -> str:
    """This machine, the same in every container on it: the kernel's boot ID (the host name
    where there is none)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return socket.gethostname()


def allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def pin_to_cpus(cpus: set[int]) -> None:
    """Run this process on these CPUs: every thread it has now, and every thread started
    later (a new thread takes its starter's CPUs)."""
    for tid in sorted(int(t) for t in os.listdir("/proc/self/task")):
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:      # a thread that ended meanwhile
            pass


def pin_to_cpu(cpu: int) -> None:
    """Run this process on one CPU. Raises ValueError for a CPU it may not use."""
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError("MSB1_WORKER_CPU: this system cannot keep a process on one CPU")
    allowed = allowed_cpus()
    if cpu not in allowed:
        raise ValueError(f"MSB1_WORKER_CPU={cpu}: this process may run on CPU "
                         f"{', '.join(map(str, allowed))} only")
    pin_to_cpus({cpu})


class CpuClaim:
    """This process's claim on one CPU of its machine, renewed in the background."""

    def __init__(self, r: redis.Redis, prefix: str, *, machine: str | None = None,
                 ttl: int = CLAIM_TTL, renew_every: float = RENEW_EVERY):
        self.redis, self.ttl, self.renew_every = r, ttl, renew_every
        self.keys, self.machine = Keys(prefix), machine or machine_id()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.cpu: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def key(self, cpu: int) -> str:
        return self.keys.cpu_claim(self.machine, cpu)

    def take(self, cpus: list[int]) -> int | None:
        """Claim the first free CPU of ``cpus``; None when all are taken."""
        if not cpus:
            return None
        index = self.redis.eval(_CLAIM, len(cpus), *(self.key(c) for c in cpus), self.owner, self.ttl)
        self.cpu = cpus[int(index) - 1] if index else None
        return self.cpu

    def renew(self) -> bool:
        """Keep the claim; False when another worker holds the CPU now (Redis lost the
        claims and a worker that started meanwhile took it)."""
        return self.cpu is not None and bool(self.redis.eval(_RENEW, 1, self.key(self.cpu), self.owner, self.ttl))

    def give_back(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)       # its Redis calls give up within seconds
        if self.cpu is not None:
            try:
                release_lock(self.redis, self.key(self.cpu), self.owner)
            except redis.RedisError:
                pass        # it expires by itself
            self.cpu = None

    def keep(self, cpus: list[int], on_taken: Callable[[int], None], on_lost: Callable[[int], None]) -> None:
        """In a daemon thread until :meth:`give_back`, every ``renew_every`` seconds: renew
        the claim, or, holding none, try to take one of ``cpus`` again (a CPU a stopped or
        killed worker held comes free). ``on_taken(cpu)`` runs when it took one,
        ``on_lost(cpu)`` when another worker holds its CPU now."""
        def run() -> None:
            failing = False
            while not self._stop.wait(self.renew_every):
                try:
                    if self.cpu is None:
                        if self.take(cpus) is not None:
                            on_taken(self.cpu)
                    elif not self.renew():
                        lost, self.cpu = self.cpu, None
                        on_lost(lost)
                except redis.RedisError as err:     # Redis away: a claim may expire; try again
                    if not failing:                 # one line per outage, not one per try
                        log.warning("could not renew or take a claim on a CPU (Redis: %s); trying again",
                                    type(err).__name__)
                    failing = True
                    continue
                failing = False
        self._thread = threading.Thread(target=run, name="cpu-claim", daemon=True)
        self._thread.start()


class Placement(NamedTuple):
    cpu: int | None             # None: wherever the system puts it
    claim: CpuClaim | None      # to give back at shutdown (auto only)
    why: str                    # for the worker's ready line

    def describe(self) -> str:
        return f"on CPU {self.cpu} only ({self.why})" if self.cpu is not None else f"on any CPU ({self.why})"


NOWHERE = Placement(None, None, "off")


def choose(setting: int | str, r: redis.Redis, prefix: str, *, takes_bulk: bool,
           forks: bool = False) -> Placement:
    """Pin this process as ``setting`` says (``auto``, ``off`` or a CPU's number).
    ``forks``: Celery's prefork pool, whose children would all inherit the one CPU."""
    if setting == OFF:
        return NOWHERE
    if isinstance(setting, int):
        pin_to_cpu(setting)
        return Placement(setting, None, "MSB1_WORKER_CPU")
    if forks:
        return Placement(None, None, "auto: a pool of processes")
    if not takes_bulk:
        return Placement(None, None, "auto: takes live work only")
    allowed = allowed_cpus()
    if len(allowed) < 2:
        return Placement(None, None, "auto: one CPU only")
    claim = CpuClaim(r, prefix)

    def taken(cpu: int) -> None:
        pin_to_cpus({cpu})
        log.info("CPU %s came free; every thread of this worker runs on it now", cpu)

    def lost(cpu: int) -> None:
        pin_to_cpus(set(allowed))
        log.warning("CPU %s is held by another worker now (Redis lost the claims); this worker runs on "
                    "any CPU until one is free", cpu)
    try:
        cpu = claim.take(allowed)
        why = "auto" if cpu is not None else f"auto: all {len(allowed)} CPUs taken by other workers; trying again"
    except redis.RedisError:        # said in the ready line (logging is not set up yet here)
        cpu, why = None, "auto: Redis not reachable; trying again"
    if cpu is not None:
        pin_to_cpus({cpu})
    claim.keep(allowed, taken, lost)
    return Placement(cpu, claim, why)
