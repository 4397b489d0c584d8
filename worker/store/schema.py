"""The version of what the worker keeps in Redis, and the steps from each version to the next.

``{p}:schema`` holds the version. Releases before it wrote none: a Redis with keys of ours
and no version holds version 1; an empty one is stamped with this release's version.

A worker migrates as it starts (``upgrade``, one worker at a time under a lock, each step
written before the version moves on, so a worker killed half-way redoes only what is left:
every step may run twice). A state newer than this release knows is never touched: the
worker, beat and the receiver refuse to start with one line (``check``), exit code 2.

Versions:
  1  the releases before the version key (0.1.0 and earlier). An invoice posted before posting had a field of its
     own says ``"fingerprint": "posted"``; a number lock from before numbers were keyed by
     HMAC names the customer or project number in clear.
  2  the release that brought the version key: an invoice's state says ``"posted": true`` (and keeps no fingerprint "posted");
     no key names a number in clear.
"""
from __future__ import annotations

import json
import re
import time
from typing import Callable

import redis
from redis.exceptions import LockError

from worker.store.keys import Keys

SCHEMA_VERSION = 2
BEFORE_VERSIONS = 1          # what a Redis with our keys and no version holds
LOCK_SECONDS = 600           # a migration's lock (renewed by nobody: the steps are short)
KEYED = re.compile(r"[0-9a-f]{32}")


class SchemaError(RuntimeError):
    """The state cannot be used by this release (one line)."""


def stored_version(r: redis.Redis, keys: Keys) -> int | None:
    """The version Redis holds; None when it holds nothing of ours."""
    raw = r.get(keys.schema())
    if raw is not None:
        return int(raw)
    for _ in r.scan_iter(match=keys.everything(), count=1000):
        return BEFORE_VERSIONS
    return None


def too_new(version: int | None) -> str | None:
    if version is not None and version > SCHEMA_VERSION:
        return (f"Redis holds state of schema version {version}, written by a newer release; this release "
                f"knows version {SCHEMA_VERSION} at most: run the newer release, or restore the backup made "
                f"before the upgrade (docs/operations.md, \"Upgrade\")")
    return None


def check(r: redis.Redis, keys: Keys) -> str | None:
    """Read only (beat, the receiver, check-config): the one line that refuses a state newer
    than this release's, or None."""
    return too_new(stored_version(r, keys))


def upgrade(r: redis.Redis, keys: Keys, wait: float = LOCK_SECONDS) -> list[str]:
    """Bring the state to ``SCHEMA_VERSION``: what was done, one line per step (none: it
    was current). Raises SchemaError (one line) when the state is newer than this release."""
    version = stored_version(r, keys)
    if problem := too_new(version):
        raise SchemaError(problem)
    if version is None:
        # an empty Redis: nothing to migrate; another worker may be stamping it too
        r.set(keys.schema(), SCHEMA_VERSION, nx=True)
        return []
    if version == SCHEMA_VERSION:
        return []
    done = []
    lock = r.lock(keys.schema_lock(), timeout=LOCK_SECONDS, blocking_timeout=wait)
    if not lock.acquire():
        raise SchemaError(f"another worker has been migrating the Redis state for {wait:.0f}s; "
                          f"if none runs, delete {keys.schema_lock()} and start again")
    try:
        version = stored_version(r, keys)          # another worker may have done it meanwhile
        if problem := too_new(version):
            raise SchemaError(problem)
        while version is not None and version < SCHEMA_VERSION:
            started = time.monotonic()
            what = STEPS[version](r, keys)
            version += 1
            r.set(keys.schema(), version)
            done.append(f"Redis state migrated to schema version {version} ({what}) "
                        f"in {time.monotonic() - started:.1f}s")
    finally:
        try:
            lock.release()
        except LockError:       # it expired during a long step: the version is written either way
            pass
    return done


def _to_2(r: redis.Redis, keys: Keys) -> str:
    """An invoice posted as ``"fingerprint": "posted"`` says ``"posted": true``; number locks
    named by the number in clear are deleted (a lock lives seconds: the releases that took
    them are stopped)."""
    posted = 0
    for key in r.scan_iter(match=keys.pattern("state"), count=1000):
        changed = {}
        for record_id, raw in r.hscan_iter(key, count=1000):
            state = json.loads(raw)
            if state.get("fingerprint") == "posted":
                del state["fingerprint"]
                state["posted"] = True
                changed[record_id] = json.dumps(state)
        if changed:
            r.hset(key, mapping=changed)
            posted += len(changed)
    clear = [key for key in r.scan_iter(match=keys.pattern("number-lock"), count=1000)
             if not KEYED.fullmatch(key.rsplit(":", 1)[-1])]
    if clear:
        r.delete(*clear)
    return f"{posted} posted invoice(s) rewritten, {len(clear)} number lock(s) in clear deleted"


STEPS: dict[int, Callable[[redis.Redis, Keys], str]] = {1: _to_2}
assert sorted(STEPS) == list(range(BEFORE_VERSIONS, SCHEMA_VERSION)), "a step for every version"


def at_start(r: redis.Redis, keys: Keys, patience: float = 300.0) -> list[str]:
    """``upgrade`` as a worker starts: waits for Redis (it may be loading its AOF) up to
    ``patience`` seconds; SchemaError (one line) when it cannot go on."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return upgrade(r, keys)
        except (redis.ConnectionError, redis.TimeoutError) as err:
            if time.monotonic() > deadline:
                raise SchemaError(f"Redis did not answer for {patience:.0f}s ({type(err).__name__})") from None
            time.sleep(1)
