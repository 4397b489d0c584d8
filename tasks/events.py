"""``events.check``: SpareBank 1 Regnskap said a customer or project the integration wrote was
changed or deleted there (``worker.intake.events``). Moment is the master: when the books
now differ from what Moment says, Moment's values are written back by the record's own sync,
and the company is told once which record and fields, and that changes belong in Moment.

The books are compared with the body a sync would write (the same ``build``, the same
``covers``): no difference (our own write coming back as an event, a field Moment does not
own) means nothing is done, so a write-back does not loop; and should the platform keep a
field its own way (the books differ again after every write-back), a record is written back
at most ``WRITE_BACKS_PER_HOUR`` times an hour.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from errors import IntegrationError, NotFound, RecordInvalid, TransientError
from schemas.base import covers
from schemas.datatypes import DATA_TYPES
from schemas.text import plain
from worker.broker import EVENT_TASK, app
from worker.intake.producer import Paused, enqueue
from worker.notices.events import DELETED, changed_in_books
from worker.notices.mail import make_email
from worker.sync.context import SyncContext
from worker.sync.task import RuntimeTask

from . import customers, projects
from .upsert import fetch

log = logging.getLogger(__name__)

REFERENCES = {"customers": customers.references, "projects": projects.references}
# one email per record in this many seconds, however many events a person's edits make
EVENT_NOTICE_BURST = 3600
WRITE_BACKS_PER_HOUR = 3        # of one record: more would be a loop (see _write_back)
RETRIES = 5


def differing(theirs: Any, ours: dict, depth: int = 0) -> list[str]:
    """The fields of the body ``ours`` that the books' record ``theirs`` does not say
    (``Info.Name``: one level into a nested record)."""
    out: list[str] = []
    for name, value in ours.items():
        if name in ("_createguid", "ID") or covers((theirs or {}).get(name), value):
            continue
        if depth == 0 and isinstance(value, dict) and isinstance((theirs or {}).get(name), dict):
            out += [f"{name}.{inner}" for inner in differing(theirs[name], value, 1)]
        else:
            out.append(name)
    return out


@app.task(name=EVENT_TASK, bind=True, base=RuntimeTask)
def check_event(self, integration_id: str, data_type: str, record_id: int, sb1_id: int, operation: str) -> str:
    rt = self.runtime
    rt.redis.delete(rt.keys.event_pending(integration_id, data_type, sb1_id))   # later events queue anew
    integration = rt.integrations.get(integration_id)
    if integration is None or data_type not in REFERENCES:
        return "ignored"
    try:
        return _check(rt, integration, data_type, int(record_id), int(sb1_id))
    except TransientError as err:
        if self.request.retries >= RETRIES:
            log.warning("%s: gave up checking %s (platform id %s) after a books event: %s; the reconciliation "
                        "checks it", integration_id, data_type, sb1_id, err)
            return "gave-up"
        raise self.retry(countdown=rt.settings.retry_policy.delay(self.request.retries), max_retries=RETRIES)


def _check(rt, integration, data_type: str, record_id: int, sb1_id: int) -> str:
    iid, dt = integration.id, DATA_TYPES[data_type]
    ctx = SyncContext(rt, integration, data_type, record_id)
    state = rt.state.get(iid, data_type, record_id) or {}
    if state.get("sb1_id") != sb1_id:
        return "not-ours"           # the Moment record has moved on to another record in the books
    record = fetch(ctx, dt.moment_schema)
    if record is None:
        return "gone-in-moment"     # deleted in Moment too: the books may keep or lose it
    ctx.describe(dt.number(record), name=plain(getattr(record, "name", None), 80))
    written = state.get("modified")
    if written and record.last_modified_date and record.last_modified_date > datetime.fromisoformat(written):
        return "moment-newer"       # changed in Moment since our write: its own sync settles it
    try:
        key = dt.check(record)
        wanted = dt.wanted(record, key)
        try:
            books = ctx.sb1.get(dt.sb1_route, sb1_id, expand=dt.expand)
        except NotFound:
            books = None
        if books is None:
            fields = [DELETED]
        else:
            refs = REFERENCES[data_type](ctx, record, wanted)
            fields = differing(books, dt.build(wanted, existing=books, guid=lambda part: "", **refs))
    except RecordInvalid:
        return "invalid-in-moment"  # Moment's record cannot be written: its own sync says so
    if not fields:
        return "equal"
    if books is None:
        # reported, not re-created now (a person may have removed it on purpose): the nightly
        # reconciliation or the record's next change in Moment creates it anew
        # (docs/architecture.md, "Moment stays master in the books")
        log.warning("%s: %s was deleted in SpareBank 1 Regnskap; Moment still has it (the company is told)",
                    iid, ctx.what, extra={"integration": iid, "data_type": data_type, "moment_id": record_id})
        _tell(rt, integration, ctx, fields)
        return "deleted-in-books"
    if not _write_back(rt, ctx):
        log.warning("%s: %s still differs in SpareBank 1 Regnskap after %d write-backs this hour (%s): perhaps "
                    "the platform stores these fields its own way; not written back again this hour (the nightly "
                    "reconciliation looks again)", iid, ctx.what, WRITE_BACKS_PER_HOUR, ", ".join(fields),
                    extra={"integration": iid, "data_type": data_type, "moment_id": record_id, "fields": fields})
        return "write-back-held"
    log.info("%s: %s was changed in SpareBank 1 Regnskap (%s); Moment's values are written back", iid, ctx.what,
             ", ".join(fields),
             extra={"integration": iid, "data_type": data_type, "moment_id": record_id, "fields": fields})
    _tell(rt, integration, ctx, fields)
    return "written-back"


def _write_back(rt, ctx: SyncContext) -> bool:
    """Forget the record's fingerprint (under its lock: a running sync finishes first), so
    its sync compares with the books instead of trusting what it wrote last, and queue it.
    False (nothing done) after ``WRITE_BACKS_PER_HOUR`` write-backs of the record this hour:
    books that differ again after each write-back are not a person's edits but a field the
    platform keeps its own way, and writing again would loop."""
    iid, data_type, record_id = ctx.integration.id, ctx.data_type, ctx.record_id
    counted = rt.keys.event_written_back(iid, data_type, record_id)
    _, written = rt.redis.pipeline(transaction=False).set(counted, 0, ex=3600, nx=True).incr(counted).execute()
    if written > WRITE_BACKS_PER_HOUR:
        return False
    lock = rt.record_lock(iid, data_type, record_id)
    if not lock.acquire():
        raise TransientError(f"{ctx.what} is being transferred right now")
    try:
        state = rt.state.get(iid, data_type, record_id)
        if state and state.pop("fingerprint", None) is not None:
            state.pop("synced_at", None)
            rt.state.save(iid, data_type, record_id, **state)
    finally:
        lock.release()
    try:
        enqueue(iid, data_type, record_id, runtime=rt)
    except Paused:
        pass                        # picked up when resumed (its fingerprint is gone: it compares)
    return True


def _tell(rt, integration, ctx: SyncContext, fields: list[str]) -> None:
    """One email per record and burst of changes."""
    told = rt.keys.event_told(integration.id, ctx.data_type, ctx.record_id)
    if not rt.redis.set(told, "1", nx=True, ex=EVENT_NOTICE_BURST):
        return
    subject, body = changed_in_books(integration.language, integration.moment_company, ctx.data_type,
                                     ctx.person, ctx.number, fields)
    try:
        rt.send_email(make_email(rt.settings, integration.notify_email, subject, body))
    except (OSError, IntegrationError) as err:
        rt.redis.delete(told)
        log.error("%s: could not email the company about %s changed in the books (%s)", integration.id, ctx.what,
                  type(err).__name__)
