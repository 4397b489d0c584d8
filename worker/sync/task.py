"""The one mechanism every data type shares: lock, run the body, retry, or give up loudly.

A data type's task body (in ``tasks/``) fetches, maps, checks and upserts one record and
returns an outcome. Everything around it lives here:

* a per-record Redis lock, so two workers never write one record at once;
* transient errors → ``task.retry`` with exponential backoff, jitter and Retry-After;
* permanent errors, exhausted retries and bugs → a dead letter in Redis, one email to the
  company's notification address, one Sentry event; the task then ends normally so
  the queue goes on;
* success → the dead letter (if any) is cleared and the outcome counted.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from celery import Task
from celery.exceptions import Retry
from redis.exceptions import RedisError

from errors import AuthError, IntegrationError, TransientError
from schemas.datatypes import DATA_TYPES
from worker.broker import publish_sync
from worker.circuit import Circuit
from worker.config.queues import BULK, BULK_QUEUE, LIVE
from worker.intake.producer import refill_bulk
from worker.ops.logs import record_context
from worker.ops.metrics import SYNC_SECONDS
from worker.runtime import Runtime, UnknownIntegration, get_runtime
from worker.store.batch import Batch, new_token, release_lock
from worker.store.coalescer import Gate
from worker.sync.context import Body, SyncContext
from worker.sync.ending import DeadLettered, give_up, settle, wait
from worker.sync.outcomes import Outcome

log = logging.getLogger(__name__)

QUICK_429_TRIES = 3     # tries whose 429 is retried after its Retry-After, not the backoff


class RuntimeTask(Task):
    """Base of every task: gives the body the process's runtime (clients, Redis).

    ``max_retries = None``: how often a chain tries is ours to decide
    (``MSB1_RETRY_MAX_ATTEMPTS``); Celery's own default of 3 retries would otherwise end a
    longer chain early, with neither a dead letter nor an email.
    """

    abstract = True
    typing = True
    max_retries = None

    @property
    def runtime(self) -> Runtime:
        return get_runtime()


@dataclass
class Try:
    """What one try of a chain came to: an outcome that ends it, or a retry, or a wait."""
    attempt: int                        # the chain's next try number when it goes on
    outcome: Outcome | None = None
    retry_in: float | None = None       # a passing failure: try again in this many seconds
    outage: Circuit | None = None       # a service is out: wait for it (no try spent)
    error: BaseException | None = None

    @property
    def ends_chain(self) -> bool:
        return self.retry_in is None and self.outage is None


class RecordSync(RuntimeTask):
    """The sync mechanism as a task class: one record of one data type, named by its
    ``data_type`` and written by its ``body`` (both set by ``worker.sync.registry.sync_task``).

    ``attempt`` counts the tries of a chain (the first is 1): a passing failure or a busy
    record spends one, and at ``MSB1_RETRY_MAX_ATTEMPTS`` the chain ends in a dead letter.
    While a service it needs is out (an open circuit, ``worker.circuit``) it waits instead,
    spending no tries. Every chain ends written, unchanged or dead-lettered. The steps:
    ``begin`` → ``lock`` (``wait_while_held`` when something holds it back) → ``attempt`` →
    ``end``."""

    abstract = True
    throws = (DeadLettered,)
    data_type: str = ""
    body: Body

    def sync(self, integration_id: str, record_id: int, attempt: int = 1) -> str:
        """One try. Its Redis bookkeeping takes two round trips (besides a number's lock):
        the start (the lane's count, pauses, circuits, the record's lock and state), and the
        end (state, owner, locks, counters, history, the follow-up, the lane: one
        ``SyncContext.writes`` batch)."""
        lane = BULK if (self.request.delivery_info or {}).get("routing_key") == BULK_QUEUE else LIVE
        rt = self.runtime
        writes = Batch(rt.redis)
        settled = requeued = False
        try:
            with record_context(integration=integration_id, data_type=self.data_type, moment_id=record_id):
                outcome = self._sync(integration_id, record_id, attempt, lane, writes)
            settled = True
            return outcome
        except Retry:
            requeued = True
            raise
        except DeadLettered:
            settled = True
            raise
        finally:
            try:
                rt.lanes.ended(integration_id, lane, settled=settled, requeued=requeued, pipe=writes.pipe)
                writes.execute()
            except Exception as exc:
                log.warning("%s %s %s: the end of the sync (its state and locks, counters, history, follow-up) "
                            "was not recorded (%s)", integration_id, self.data_type, record_id, type(exc).__name__)
                if isinstance(exc, RedisError):
                    # as any Redis failure mid-sync: the message is handed out again, or the
                    # poll finds the change (its version is unfinished); the write is idempotent
                    raise
            if lane == BULK:
                try:
                    refill_bulk(rt)
                except Exception as exc:    # the poll and the next bulk sync refill too
                    log.warning("the bulk lane was not refilled (%s)", type(exc).__name__)

    def _sync(self, integration_id: str, record_id: int, attempt: int, lane: str, writes: Batch) -> str:
        ctx = self.begin(integration_id, record_id)
        if isinstance(ctx, Outcome):
            self.runtime.lanes.started(integration_id, lane)
            return str(ctx)
        ctx.writes, ctx.bulk = writes, lane == BULK
        ended = False
        try:
            token = self.lock(ctx, attempt, lane)
            outcome = self.end(ctx, self.attempt(ctx, token, attempt))
            ended = True
            return outcome
        except DeadLettered:
            ended = True
            raise
        finally:
            if ctx.started:
                self.follow_up(ctx, ended)

    def follow_up(self, ctx: SyncContext, ended: bool) -> None:
        """The record is let go: a change that came while this sync ran is queued now (a
        retry covers it itself). Rides on the sync's batch."""
        rt = ctx.runtime

        def queue(countdown: float | None) -> None:
            if countdown is None or ctx.dry_run:
                return
            try:
                publish_sync(ctx.data_type, ctx.integration.id, ctx.record_id, countdown=countdown, quick=False)
                rt.lanes.queued(ctx.integration.id, LIVE)
            except Exception as exc:     # the poll finds the change (its version is unfinished)
                log.warning("%s %s: the follow-up of a change made during the sync was not queued (%s)",
                            ctx.integration.id, ctx.what, type(exc).__name__)
        rt.coalescer.finished(ctx.integration.id, ctx.data_type, ctx.record_id, ended=ended, batch=ctx.writes,
                              then=queue)

    def begin(self, integration_id: str, record_id: int) -> SyncContext | Outcome:
        """The record's context, or why there is nothing to do (unknown, not selected)."""
        rt = self.runtime
        try:
            integration = rt.integration(integration_id)
        except UnknownIntegration:
            log.error("%s %s: unknown integration %r; dropped (is the integrations file current?)",
                      self.name, record_id, integration_id)
            return Outcome.UNKNOWN_INTEGRATION
        if not integration.wants(self.data_type):
            log.info("%s: integration %s does not transfer %s; ignored", self.name, integration_id, self.data_type)
            rt.stats.incr(integration_id, self.data_type, Outcome.IGNORED)
            return Outcome.IGNORED
        return SyncContext(rt, integration, self.data_type, int(record_id))

    def wait_while_held(self, ctx: SyncContext, attempt: int) -> None:
        """Wait (no try spent) while an operator paused the integration (``moment-sb1
        pause``) or a service it needs is out (probing each open circuit)."""
        rt, iid = ctx.runtime, ctx.integration.id
        pipe = rt.redis.pipeline(transaction=False)
        pipe.hget(rt.keys.paused(), iid)
        read_circuits = rt.circuits.open_for(iid, pipe)
        paused, *circuit_answers = pipe.execute()
        if paused:
            wait(self, ctx, attempt, "the integration is paused")
        circuits = rt.circuits
        still_open = [c for c in read_circuits(circuit_answers) if not circuits.try_probe(ctx.integration, c)]
        if still_open:
            wait(self, ctx, attempt, still_open[0].waiting_for)

    def lock(self, ctx: SyncContext, attempt: int, lane: str) -> str:
        """Start: count it in its lane, check that nothing holds it back (a pause, an open
        circuit: then :meth:`wait_while_held`), take the record's lock (its token) and read
        the record's state, in one round trip. Busy (another worker writes the record): wait
        a while, then come back, as a try."""
        rt, iid = ctx.runtime, ctx.integration.id
        policy = rt.settings.retry_policy
        token = new_token()
        start = dict(state_key=rt.keys.state(iid, ctx.data_type),
                     lock=(rt.keys.lock(iid, ctx.data_type, ctx.record_id), token, rt.settings.lock_timeout))
        # from here on, a new change to this record needs (and gets) a sync of its own
        began = rt.coalescer.started(iid, ctx.data_type, ctx.record_id, **start, gate=Gate(
            rt.lanes.started_field(iid, lane), rt.keys.paused(), rt.circuits.keys_for(iid)))
        if began.held:
            self.wait_while_held(ctx, attempt)      # waits (raises) unless a probe closed the circuit
            began = rt.coalescer.started(iid, ctx.data_type, ctx.record_id, **start)
        ctx.started = True
        if began.locked:
            ctx.read_under_lock(rt.state.parse(began.state))
            return token
        if rt.record_lock(iid, ctx.data_type, ctx.record_id).acquire(token=token):
            return token
        busy = TransientError(f"another transfer of this {DATA_TYPES[ctx.data_type].noun} held it for "
                              f"{rt.settings.lock_wait:g}s at every try")
        if attempt < policy.max_attempts:
            countdown = max(1 + random.random() * 2, policy.delay(attempt - 1))
            log.info("%s %s/%s: busy elsewhere; try %d of %d in %.1fs", self.name, ctx.integration.id,
                     ctx.record_id, attempt + 1, policy.max_attempts, countdown)
            rt.coalescer.requeued(ctx.integration.id, ctx.data_type, ctx.record_id, countdown)
            raise self.retry(countdown=countdown, kwargs={"attempt": attempt + 1})
        settle(ctx, give_up(ctx, busy, kind="busy", error=f"{busy} (gave up after {attempt} tries)"), attempt)

    def attempt(self, ctx: SyncContext, token: str, attempt: int) -> Try:
        """Run the body under the lock and say what the try came to."""
        done: Try | None = None
        try:
            done = self.classify(ctx, attempt)
            return done
        finally:
            self.release(ctx, token, finished=done is not None and done.ends_chain)

    def classify(self, ctx: SyncContext, attempt: int) -> Try:
        rt, iid = ctx.runtime, ctx.integration.id
        circuits, policy = rt.circuits, rt.settings.retry_policy
        started = time.perf_counter()
        try:
            outcome = type(self).body(ctx)
        except TransientError as exc:
            if exc.status == 429:
                ctx.return_page_copy()      # refused unanswered: nothing was written
            outage = circuits.failed(iid, exc)
            if policy.should_retry(exc, attempt - 1):
                # this try is spent; while the service is out the next one waits for it
                if outage is not None:
                    return Try(attempt + 1, outage=outage, error=exc)
                retry_in = policy.delay(attempt - 1, exc.retry_after)
                if exc.status == 429 and exc.retry_after is not None and attempt <= QUICK_429_TRIES:
                    # the service said when: come back then (the shared rate limit spaces the call);
                    # 429s that go on fall back to the backoff above
                    retry_in = min(policy.max_delay,
                                   exc.retry_after + random.random() * min(1.0, max(0.1, exc.retry_after)))
                log.warning("%s %s: %s; try %d of %d in %.1fs", iid, ctx.what, exc, attempt + 1,
                            policy.max_attempts, retry_in)
                return Try(attempt + 1, retry_in=retry_in, error=exc)
            outage = outage or circuits.blame(ctx.integration, exc)
            if outage is not None:
                return Try(attempt, outage=outage, error=exc)
            exc.params = {**exc.params, "tries": attempt}
            return Try(attempt, give_up(ctx, exc, kind="retries-exhausted",
                                        error=f"{exc} (gave up after {attempt} tries)"))
        except AuthError as exc:
            # access refused: the service's (every record waits) unless a probe of it works
            outage = circuits.blame(ctx.integration, exc)
            if outage is not None:
                return Try(attempt, outage=outage, error=exc)
            return Try(attempt, give_up(ctx, exc, kind=type(exc).__name__))
        except IntegrationError as exc:
            return Try(attempt, give_up(ctx, exc, kind=type(exc).__name__))
        except RedisError as exc:
            # Redis itself went away (a restart, a failover): nothing can be recorded now; the
            # message is handed out again or, if it is lost, the poll finds the change again
            log.warning("%s %s: Redis is not reachable mid-sync (%s); the change is synced when the message "
                        "is handed out again or the poll finds it", iid, ctx.what, type(exc).__name__)
            raise
        except Exception as exc:  # a bug or an unexpected answer: still never dropped silently
            log.exception("%s %s: unexpected error", iid, ctx.what)
            return Try(attempt, give_up(ctx, exc, kind="unexpected",
                                        error=f"an unexpected error in the integration ({type(exc).__name__})"))
        finally:
            seconds = time.perf_counter() - started
            SYNC_SECONDS.labels(ctx.data_type).observe(seconds)
        writes = ctx.writes
        since = writes.mark()
        circuits.succeeded(iid, writes.pipe)
        rt.dead_letters.resolve(iid, ctx.data_type, ctx.record_id, writes.pipe)

        def cleared(answers: list) -> None:
            if answers[-1]:
                log.info("%s %s: transferred after an earlier failure; dead letter cleared", iid, ctx.what)
        writes.then(since, cleared)
        log.info("%s %s: %s", iid, ctx.what, outcome, extra={"seconds": round(seconds, 4)})
        return Try(attempt, outcome)

    @staticmethod
    def release(ctx: SyncContext, token: str, *, finished: bool) -> None:
        """Remember which version a finished chain handled (the poll's cursor waits for
        unfinished ones), and let go of the record, with what the try wrote: at the end of
        the task when the chain is finished, else now (before a retry is queued)."""
        rt, writes = ctx.runtime, ctx.writes
        if finished and ctx.version is not None and not ctx.dry_run:
            rt.state.mark_handled(ctx.integration.id, ctx.data_type, ctx.record_id, ctx.version, writes.pipe)

        def released(still_ours: bool) -> None:
            if not still_ours:
                log.warning("%s %s: the record lock expired while working", ctx.integration.id, ctx.what)
        release_lock(rt.redis, rt.keys.lock(ctx.integration.id, ctx.data_type, ctx.record_id), token, writes,
                     then=released)
        if not finished:
            writes.execute()

    def end(self, ctx: SyncContext, done: Try) -> str:
        """Wait for an outage, retry a passing failure, or settle the chain's outcome."""
        rt = ctx.runtime
        if done.outage is not None:
            wait(self, ctx, done.attempt, done.outage.waiting_for)
        if done.retry_in is not None:
            rt.stats.incr(ctx.integration.id, ctx.data_type, Outcome.RETRIED)
            rt.history.add(ctx.integration.id, ctx.data_type, ctx.record_id, outcome=str(Outcome.RETRIED),
                           attempt=done.attempt - 1, number=ctx.number, error=str(done.error))
            rt.coalescer.requeued(ctx.integration.id, ctx.data_type, ctx.record_id, done.retry_in)
            raise self.retry(countdown=done.retry_in, exc=done.error, kwargs={"attempt": done.attempt})
        return settle(ctx, done.outcome, done.attempt)
