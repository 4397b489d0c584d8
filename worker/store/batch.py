"""Redis commands sent together in one round trip, and locks let go only by their owner."""
from __future__ import annotations

import uuid
from typing import Callable

import redis


class Batch:
    """Redis commands that go together in one round trip, each with what to do with its
    answers. A sync gathers its writes in one of these (``SyncContext.writes``) instead of a
    round trip for each: py-spy put a third of a sync's CPU in redis-py's cost per command.

    ``pipe``: add commands to it; ``then(since, fn)``, called right after adding them:
    after :meth:`execute`, ``fn`` gets the answers of the commands added since ``mark()``.
    """

    def __init__(self, r: redis.Redis):
        self.pipe = r.pipeline(transaction=False)
        self._then: list[tuple[int, int, Callable[[list], None]]] = []

    def mark(self) -> int:
        return len(self.pipe)

    def then(self, since: int, fn: Callable[[list], None]) -> None:
        self._then.append((since, len(self.pipe), fn))

    def execute(self) -> None:
        """Send everything (if anything); then each ``then`` in the order they were given."""
        if not len(self.pipe):
            return
        then, self._then = self._then, []
        answers = self.pipe.execute()
        errors = []
        for since, end, fn in then:
            try:
                fn(answers[since:end])
            except Exception as exc:     # one failing must not keep the others from running
                errors.append(exc)
        if errors:
            raise errors[0]


# Let go of a lock only if it is still ours (it may have expired and gone to another).
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def new_token() -> str:
    """A lock owner's token (redis-py's own is a uuid1, slower to make)."""
    return uuid.uuid4().hex


def release_lock(r: redis.Redis, name: str, token: str, batch: Batch | None = None,
                 then: Callable[[bool], None] | None = None) -> None:
    """Release a lock taken with ``token``, now or with ``batch``. ``then(released)``: False
    when it had expired meanwhile. EVAL, not EVALSHA: a pipeline with a registered script
    first asks Redis whether it knows it, a round trip of its own."""
    if batch is None:
        released = bool(r.eval(_RELEASE, 1, name, token))
        if then:
            then(released)
        return
    since = batch.mark()
    batch.pipe.eval(_RELEASE, 1, name, token)
    if then:
        batch.then(since, lambda answers: then(bool(answers[0])))
