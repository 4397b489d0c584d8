"""How a sync chain ends: settled (counted, added to the record's history; a dead letter
ends the task as failed), put back to wait (a pause or an outage: no try spent), or given up
(a dead letter, one email to the company, one Sentry event)."""
from __future__ import annotations

import logging
import random
from typing import NoReturn

from celery import Task

from worker.notices import templates
from worker.ops.sentry import report_failure
from worker.store.records import DeadLetter
from worker.sync.context import SyncContext
from worker.sync.outcomes import Outcome

log = logging.getLogger(__name__)


class DeadLettered(Exception):
    """A sync chain that ended in a dead letter. Raised as the task's last word, after the
    dead letter, the email and the counters are settled, so Celery and Flower show the task
    as failed; declared in the task's ``throws``, so it is logged without a traceback and
    never retried (the message is acked)."""


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
                       number=ctx.number, changed=ctx.changed, error=ctx.error)
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
        "what": what, "todo": todo, "group": group, "body": body,
        "detail": getattr(exc, "detail", None), "service": getattr(exc, "service", None)})
    return Outcome.FAILED
