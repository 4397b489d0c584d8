"""``sync.document``: a posted invoice's PDF from Moment, uploaded to the company's Files
host and linked to its voucher (its documentation, "bilag"), once.

The invoice's sync queues it once the voucher is in the books (``queue_document``); the
record id is the invoice's Moment id. A voucher is never held back by its document: this is
a sync of its own (``worker.sync.task``: lock, tries with backoff, rate limits, a dead letter
and one email of its own, history, replay), and its failures open no circuit of the
company's services (``clients.moment.DOCUMENT_SERVICE``, ``clients.files.FILES_SERVICE``).

Once, across retries and crashes:

1. the state says linked: nothing to do;
2. the voucher's files hold ours (by its name, ``file_name``): linked before (the state
   was lost with the worker): remembered now;
3. an upload was begun before (marked in the state before the upload, its file's ID kept
   right after it): the stored file, by that ID or else by its name, is linked, not
   uploaded again;
4. else the PDF is read from Moment, uploaded (marked first) and linked.

What is left: a file stored whose answer never came, on a platform that ignores the
filter on ``Name`` and holds more than 50 files, is not found by its name (the client
checks the names it gets): uploaded again, the first copy stays unlinked in the company's
files.
"""
from __future__ import annotations

import logging

from celery import Task

from clients.files import FILES_SERVICE
from clients.moment import DOCUMENT_SERVICE
from errors import AuthError, IntegrationError, NotFound, PermanentError, TransientError
from schemas.datatypes import DOCUMENTS, INVOICES
from worker.broker import app, publish_sync
from worker.config.integrations import AUTO
from worker.config.queues import LIVE
from worker.intake.producer import enqueue_bulk
from worker.sync.context import SyncContext
from worker.sync.outcomes import Outcome
from worker.sync.task import RecordSync

log = logging.getLogger(__name__)

TYPE = DOCUMENTS
# seconds between the voucher's post and its document's first try: the invoice's sync
# writes its state (the voucher's ID) at its end (a try that comes too early is retried)
DOCUMENT_DELAY = 2.0
CONTENT_TYPE = "application/pdf"


def file_name(invoice_number: object, invoice_id: int) -> str:
    """The document's name in the books: the same on every try (it is how a stored file is
    found again), and unique per invoice (its Moment id)."""
    number = str(invoice_number or "")
    number = number if number.isascii() and number.isdigit() and len(number) <= 18 else ""
    return f"Faktura-{number}-moment-{int(invoice_id)}.pdf" if number else f"Faktura-moment-{int(invoice_id)}.pdf"


def queue_document(ctx: SyncContext) -> None:
    """After the invoice's voucher is posted (or found in the books): queue its PDF, in the
    invoice's lane. Never fails the invoice: a document that is not queued is logged (and
    can be queued with ``moment-sb1 enqueue <integration> documents <id>``)."""
    integration = ctx.integration
    if ctx.dry_run or not integration.attaches_invoices or not (ctx.previous() or {}).get("sb1_id"):
        return
    rt = ctx.runtime
    try:
        if ctx.bulk:        # its turn in the company's bulk list, the refill looking at once
            enqueue_bulk(integration.id, TYPE.name, [ctx.record_id], runtime=rt)
        else:
            publish_sync(TYPE.name, integration.id, ctx.record_id, countdown=DOCUMENT_DELAY, quick=False)
            rt.lanes.queued(integration.id, LIVE)
    except Exception as exc:
        log.warning("%s %s: its PDF was not queued for the voucher (%s)", integration.id, ctx.what,
                    type(exc).__name__)


def attach_document(ctx: SyncContext) -> Outcome:
    previous = ctx.previous() or {}
    if previous.get("linked"):
        return Outcome.UNCHANGED
    try:
        return _attach(ctx, previous)
    except IntegrationError as exc:
        _said(exc)
        raise


def _attach(ctx: SyncContext, previous: dict) -> Outcome:
    rt, integration = ctx.runtime, ctx.integration
    invoice_state = rt.state.get(integration.id, INVOICES.name, ctx.record_id)
    voucher = (invoice_state or {}).get("sb1_id") if ctx.was_posted(invoice_state) else None
    if not voucher:
        raise TransientError("the invoice's voucher is not recorded yet (is the invoice posted?)")
    number = invoice_state.get("number")        # kept when the voucher was posted
    if not number:
        try:
            invoice = ctx.moment.get(INVOICES.moment_route, ctx.record_id)
        except NotFound:
            return Outcome.GONE
        number = invoice.get("invoiceNumber") if isinstance(invoice, dict) else None
    ctx.describe(number)
    name = file_name(number, ctx.record_id)
    files = rt.files(integration)
    if any(f.get("Name") == name for f in files.linked(voucher)):
        ctx.remember(linked=True, voucher=voucher)
        return Outcome.UNCHANGED
    file_id = previous.get("file_id") if previous.get("voucher") == voucher else None
    if file_id is None and previous.get("uploading"):
        found = files.named(name)       # stored before, its answer lost: link it
        file_id = found[0]["ID"] if found else None
    if file_id is not None and _link(files, file_id, voucher, ctx):
        return Outcome.CREATED
    pdf = _document(ctx)
    if pdf is None:
        return Outcome.IGNORED
    if ctx.dry_run:
        return Outcome.CREATED
    mark = {"uploading": True, "voucher": voucher}
    rt.state.save(integration.id, TYPE.name, ctx.record_id, **mark)        # now, before the upload
    file_id = files.upload(name, pdf, CONTENT_TYPE)
    rt.state.save(integration.id, TYPE.name, ctx.record_id, **mark, file_id=file_id)
    if not _link(files, file_id, voucher, ctx):
        raise TransientError(f"{FILES_SERVICE}: the file just stored was not found to link")
    return Outcome.CREATED


def _link(files, file_id: int, voucher: int, ctx: SyncContext) -> bool:
    """Link a stored file; False when the platform has no such file (upload it again)."""
    if ctx.dry_run:
        return True
    try:
        files.link(file_id, voucher)
    except NotFound:
        return False
    ctx.remember(linked=True, sb1_id=file_id, voucher=voucher)
    return True


def _document(ctx: SyncContext) -> bytes | None:
    """The invoice's PDF from Moment; None when Moment has none and the integration attaches
    only when there is one (``attach_invoices = "auto"``)."""
    try:
        return ctx.moment.document(ctx.record_id)
    except NotFound as exc:
        if ctx.integration.attach_invoices == AUTO:
            log.warning("%s %s: Moment has no PDF of the invoice (%s); the voucher stays without",
                        ctx.integration.id, ctx.what, exc)
            return None
        raise PermanentError(f"{exc} (Moment has no PDF of the invoice)", status=exc.status,
                             service=DOCUMENT_SERVICE, code="document-missing") from None


# the company's email says what failed in words of its own (worker.notices.problems)
_HINTS = {
    "document-fetch": "Nothing is needed for the invoice itself: it is posted. The operator of the "
                      "integration can attach the PDF again when Moment answers.",
    "document-attach": "Nothing is needed for the invoice itself: it is posted. The operator of the "
                       "integration can attach the PDF again.",
    "document-missing": "Check the invoice in Moment; the operator of the integration can attach the PDF "
                        "again when Moment has it.",
    "document-not-pdf": "Forward this email to the operator of the integration.",
    "document-not-stored": "Forward this email to the operator of the integration.",
}


def _said(exc: IntegrationError) -> IntegrationError:
    """Name a failure as a document's (its code and English hint), so the company's email
    says the invoice is posted and only its PDF is missing. Access refused stays as it is."""
    if not exc.code and not isinstance(exc, AuthError):
        exc.code = "document-fetch" if exc.service in (DOCUMENT_SERVICE, "Moment") else "document-attach"
    if exc.code in _HINTS:
        exc.hint = exc.hint or _HINTS[exc.code]
        exc.params = {"status": exc.status, **exc.params}
    return exc


class DocumentSync(RecordSync):
    """A document's sync: selected by the integration's ``attach_invoices``, not its data types."""

    abstract = True

    def begin(self, integration_id: str, record_id: int) -> SyncContext | Outcome:
        integration = self.runtime.integrations.get(integration_id)
        if integration is None or not integration.attaches_invoices:
            return super().begin(integration_id, record_id)     # unknown, or ignored: said there
        return SyncContext(self.runtime, integration, self.data_type, int(record_id))


@app.task(bind=True, base=DocumentSync, name=TYPE.task, data_type=TYPE.name, body=staticmethod(attach_document))
def sync_document(self: Task, integration_id: str, record_id: int, attempt: int = 1) -> str:
    return self.sync(integration_id, record_id, attempt)
