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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, NoReturn

from celery import Task
from celery.exceptions import Retry
from redis.exceptions import RedisError

from errors import AuthError, IntegrationError, TransientError
from clients.moment import MomentClient
from clients.sb1 import SB1Client
from .integrations import Integration
from schemas.text import label
from . import templates
from .notify import DATA_TYPE_NAMES
from .outcomes import Outcome
from .observability import report_failure
from .circuit import Circuit
from .lanes import BULK, BULK_QUEUE, LIVE, LIVE_QUEUE
from .logs import bind, record_context
from .metrics import SYNC_SECONDS
from .runtime import Runtime, UnknownIntegration, get_runtime
from .state import Batch, DeadLetter, Gate, new_token, release_lock

log = logging.getLogger(__name__)

_UNREAD = object()


@dataclass
class SyncContext:
    """What a task body works with; it fills in how to name the record once it knows."""
    runtime: Runtime
    integration: Integration
    data_type: str
    record_id: int
    # "customer 100001": safe for logs, Sentry and dead letters (no personal data)
    what: str = ""
    # the record as a person knows it (number, name, ...): only for the company's own email
    person: dict = field(default_factory=dict)
    dry_run: bool = False       # the CLI's dry run: read everything, remember nothing
    # the lastModifiedDate of the record as fetched: the version this sync handles
    version: datetime | None = None
    changed: list[str] | None = None   # the fields this sync wrote anew (names only), for the history
    error: str | None = None           # why it was dead-lettered, for the history
    # A task's own sync gathers its Redis writes in one batch (the record's state, the
    # number's owner, the locks, counters, history, the follow-up): a try that ends the chain
    # sends it all at the end of the task, one that goes on (a retry, a wait) sends what it
    # has when it lets go of the record. None (a dependency's sync, whose state its caller
    # reads at once): each write is sent at once.
    writes: Batch | None = None
    started: bool = False       # the record's start is marked: its end (``follow_up``) must be too
    _clients: dict = field(default_factory=dict)
    _previous: Any = field(default=_UNREAD, repr=False)   # the state, read with the record's lock

    def __post_init__(self) -> None:
        noun = DATA_TYPE_NAMES[self.data_type]
        self.what = self.what or f"{noun} with Moment id {self.record_id}"

    def describe(self, number: Any, **person: Any) -> None:
        """Name the record once it is fetched: by its number in logs ("customer 100001"),
        and with ``person`` (name, ...) in the company's email."""
        shown_number = label(number) if number not in (None, "") else "(no number)"
        bind(number=shown_number)
        self.what = f"{DATA_TYPE_NAMES[self.data_type]} {shown_number}"
        self.person = {"number": shown_number, **person}

    @property
    def what_for_person(self) -> str:
        """"customer Fjord Bygg AS (customer number 100001)": only for the company's email."""
        return templates.record_name("en", self.data_type, self.person or {"moment_id": self.record_id})

    @property
    def moment(self) -> MomentClient:
        if "moment" not in self._clients:
            self._clients["moment"] = self.runtime.moment(self.integration)
        return self._clients["moment"]

    @property
    def sb1(self) -> SB1Client:
        if "sb1" not in self._clients:
            self._clients["sb1"] = self.runtime.sb1(self.integration)
        return self._clients["sb1"]

    def read_under_lock(self, state: dict[str, Any] | None) -> None:
        """The record's state, as read together with taking its lock: ``previous`` needs no
        round trip of its own."""
        self._previous = state

    def previous(self) -> dict[str, Any] | None:
        """What the books held after this record's last transfer (None: nothing yet)."""
        if self._previous is not _UNREAD:
            return self._previous
        return self.runtime.state.get(self.integration.id, self.data_type, self.record_id)

    def already_done(self, previous: dict[str, Any] | None, digest: str,
                     modified: datetime | None) -> Outcome | None:
        """"unchanged" when the books already hold exactly this, "stale" when Moment
        answered with an older version than the books hold; else None (write it)."""
        if previous and previous.get("fingerprint") == digest:
            return Outcome.UNCHANGED
        if self.is_stale(previous, modified):
            return Outcome.STALE
        return None

    def posted(self, voucher_id: int | None, modified: datetime | None, note: str | None) -> None:
        """Remember that an invoice has its voucher: it is never posted again."""
        self.remember(posted=True, sb1_id=voucher_id, modified=modified.isoformat() if modified else None,
                      **({"note": note} if note else {}))

    @staticmethod
    def was_posted(previous: dict[str, Any] | None) -> bool:
        # "fingerprint": "posted" is how the state said it before it had a field of its own
        return bool(previous and (previous.get("posted") or previous.get("fingerprint") == "posted"))

    def transferred(self, digest: str, sb1_id: int | None, modified: datetime | None, *,
                    previous: dict[str, Any] | None = None, fields: dict[str, str] | None = None,
                    **extra: Any) -> None:
        """Remember a successful write: what was written, where, which version (and any
        ``extra`` worth keeping with it, such as a VAT rounding note). ``fields``: a digest
        per field, so the next write can name the fields it changes."""
        if fields is not None:
            before = (previous or {}).get("fields") or {}
            self.changed = sorted(name for name, d in fields.items() if before.get(name) != d)
        self.remember(fingerprint=digest, sb1_id=sb1_id, modified=modified.isoformat() if modified else None,
                      **{k: v for k, v in {**extra, "fields": fields}.items() if v is not None})

    def is_stale(self, previous: dict[str, Any] | None, modified: datetime | None) -> bool:
        """True when Moment answered with an older version than the one already in the books
        (a lagging read): writing it would put an older state over a newer one."""
        if not previous or not previous.get("modified") or modified is None:
            return False
        return modified < datetime.fromisoformat(previous["modified"])

    def remember(self, **values: Any) -> None:
        if self.dry_run:
            return
        # what previous() gives from now on: the save may wait in the batch until the task ends
        self._previous = self.runtime.state.save(self.integration.id, self.data_type, self.record_id,
                                                 self.writes.pipe if self.writes else None, **values)


Body = Callable[[SyncContext], Outcome]


class SyncTask(Task):
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


class DeadLettered(Exception):
    """A sync chain that ended in a dead letter. Raised as the task's last word, after the
    dead letter, the email and the counters are settled, so Celery and Flower show the task
    as failed; declared in the task's ``throws``, so it is logged without a traceback and
    never retried (the message is acked)."""


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


class RecordSync(SyncTask):
    """The sync mechanism as a task class: one record of one data type, named by its
    ``data_type`` and written by its ``body`` (both set by ``worker.app.sync_task``).

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
                    from .producer import refill_bulk   # the producer publishes through the app
                    refill_bulk(rt)
                except Exception as exc:    # the poll and the next bulk sync refill too
                    log.warning("the bulk lane was not refilled (%s)", type(exc).__name__)

    def _sync(self, integration_id: str, record_id: int, attempt: int, lane: str, writes: Batch) -> str:
        ctx = self.begin(integration_id, record_id)
        if isinstance(ctx, Outcome):
            self.runtime.lanes.started(integration_id, lane)
            return str(ctx)
        ctx.writes = writes
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
                self.app.send_task(self.name, args=[ctx.integration.id, ctx.record_id], queue=LIVE_QUEUE,
                                   countdown=countdown or None)
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
        busy = TransientError(f"another transfer of this {DATA_TYPE_NAMES[ctx.data_type]} held it for "
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
            outage = circuits.failed(iid, exc)
            if policy.should_retry(exc, attempt - 1):
                # this try is spent; while the service is out the next one waits for it
                if outage is not None:
                    return Try(attempt + 1, outage=outage, error=exc)
                retry_in = policy.delay(attempt - 1, exc.retry_after)
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
            SYNC_SECONDS.labels(iid, ctx.data_type).observe(seconds)
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
                           attempt=done.attempt - 1, number=ctx.person.get("number"), error=str(done.error))
            rt.coalescer.requeued(ctx.integration.id, ctx.data_type, ctx.record_id, done.retry_in)
            raise self.retry(countdown=done.retry_in, exc=done.error, kwargs={"attempt": done.attempt})
        return settle(ctx, done.outcome, done.attempt)


def wait(task: Task, ctx: SyncContext, attempt: int, why: str) -> NoReturn:
    """Put the sync back for a while: a service it needs is out, or an operator paused the
    integration. Spends no try."""
    rt = ctx.runtime
    countdown = rt.settings.circuit_probe_interval * (0.8 + random.random() * 0.4)
    log.info("%s %s: waits: %s", ctx.integration.id, ctx.what, why)
    rt.stats.incr(ctx.integration.id, ctx.data_type, Outcome.WAITING)
    rt.coalescer.requeued(ctx.integration.id, ctx.data_type, ctx.record_id, countdown)
    raise task.retry(countdown=countdown, kwargs={"attempt": attempt})


def settle(ctx: SyncContext, outcome: Outcome, attempt: int) -> str:
    """Count the chain's outcome and add it to the record's history; a dead letter ends the
    task as failed (``DeadLettered``). The task's result is the outcome's word ("created")."""
    rt, iid = ctx.runtime, ctx.integration.id
    batch = ctx.writes        # counters, history, run: with the sync's end
    since = batch.mark()
    rt.stats.incr(iid, ctx.data_type, outcome, batch.pipe)
    if not ctx.dry_run:
        rt.history.add(iid, ctx.data_type, ctx.record_id, batch.pipe, outcome=str(outcome), attempt=attempt,
                       number=ctx.person.get("number"), changed=ctx.changed, error=ctx.error)
    batch.then(since, rt.runs.settle(iid, ctx.data_type, ctx.record_id, str(outcome), batch.pipe))
    if outcome == Outcome.FAILED:
        raise DeadLettered(f"{ctx.integration.id} {ctx.what}: not transferred; kept as a dead letter")
    return str(outcome)


def give_up(ctx: SyncContext, exc: BaseException, *, kind: str, error: str | None = None) -> Outcome:
    """Dead-letter the record; report it and tell the company when the failure is new.

    The dead letter comes first and nothing after it can undo it: the Sentry event and the
    email are each built and sent inside a guard."""
    rt, integration = ctx.runtime, ctx.integration
    error = error or str(exc)
    ctx.error = error
    letter, news = rt.dead_letters.record(DeadLetter(
        integration.id, ctx.data_type, ctx.record_id, what=ctx.what, error=error, kind=kind))
    log.error("%s %s: not transferred (%s): %s", integration.id, ctx.what, kind, error)
    if not news and letter.notified:
        return Outcome.FAILED
    group = templates.group_of(exc, kind)
    try:
        report_failure(exc, integration_id=integration.id, data_type=ctx.data_type,
                       record_id=ctx.record_id, kind=group)
    except Exception:
        log.exception("%s %s: could not report to Sentry", integration.id, ctx.what)
    lang = integration.language
    try:
        what, todo = templates.problem(lang, exc, kind, error)
    except Exception:
        log.exception("%s %s: no text for this problem; a plain one is used", integration.id, ctx.what)
        what, todo = templates.problem(lang, Exception(), "unexpected", error)
    record = templates.record_name(lang, ctx.data_type, ctx.person or {"moment_id": ctx.record_id})
    body = templates.failure_body(lang, integration.moment_company, record, what, todo,
                                  getattr(exc, "detail", None), getattr(exc, "service", None))
    rt.notices.failure(integration, letter, {
        "data_type": ctx.data_type, "number": ctx.person.get("number"), "record": record,
        "what": what, "todo": todo, "group": group, "body": body})
    return Outcome.FAILED
