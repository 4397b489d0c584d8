"""One reconciliation (avstemming) of one integration and month: read both sides in bulk,
compare (``worker.reconcile.compare``), repair what Moment owns, keep the run, tell the
company once when something needs a person.

Repairs: a customer or project that is missing or differs in the books is synced again at
once (Moment is master): its remembered fingerprint is dropped so the sync writes even
though Moment did not change, and the sync is queued (``enqueue``). A missing voucher is
posted: the invoice's state forgets "posted" and gets this run's id (``REPOST_FIELD``, part
of the voucher's ``_createguid``, so the new post is not refused as a twin of the deleted
one, and a retried post is), and its sync is queued; the sync looks for a voucher with the
invoice number first, so it posts once. A voucher that differs is never changed.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from redis.exceptions import LockError

from errors import IntegrationError, NotFound, RecordInvalid
from schemas.datatypes import CUSTOMERS, INVOICES, PROJECTS
from schemas.moment import MOMENT_CUSTOMER, MOMENT_INVOICE, MOMENT_PROJECT
from schemas.sb1 import CUSTOMER_EXPAND, customer_fields, project_fields
from schemas.vouchers import INVOICE_FINAL_STATUS
from worker.config.integrations import Integration
from worker.intake.producer import Paused, enqueue
from worker.notices.mail import make_email
from worker.notices.reconcile import email_text
from worker.runtime import Runtime

from . import books
from .compare import (
    DIFFERING,
    KINDS,
    MISSING,
    NEEDS_PERSON,
    POSTED,
    REPAIRED,
    ROUNDING,
    Checked,
    Finding,
    Wanted,
    compare_invoices,
    compare_records,
    month_range,
)
from .history import ReconcileHistory

log = logging.getLogger(__name__)

REPOST_FIELD = "repost"         # the invoice state's mark: post again, with this run's id in the _createguid


@dataclass
class Report:
    integration: str
    month: str
    run_id: str
    started: float
    finished: float = 0.0
    counts: dict[str, Checked] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    calls: int = 0                  # calls to the books
    skipped: dict[str, int] = field(default_factory=dict)   # records the product refuses too (dead letters)
    emailed: bool = False

    @property
    def differences(self) -> list[Finding]:
        return [f for f in self.findings if f.status != ROUNDING]

    @property
    def needs_person(self) -> list[Finding]:
        return [f for f in self.findings if f.status in NEEDS_PERSON]

    def summary(self) -> dict[str, dict[str, int]]:
        out = {}
        for kind in KINDS:
            if kind not in self.counts:
                continue
            mine = [f for f in self.findings if f.kind == kind]
            out[kind] = {"checked": self.counts[kind].checked, "equal": self.counts[kind].equal,
                         "repaired": sum(f.status in (REPAIRED, POSTED) for f in mine),
                         "differing": sum(f.status in NEEDS_PERSON or f.status == MISSING for f in mine),
                         "rounding": sum(f.status == ROUNDING for f in mine)}
        return out

    def as_dict(self) -> dict[str, Any]:
        """The run as --json shows it and the history keeps it (no personal data)."""
        return {"integration": self.integration, "month": self.month, "run_id": self.run_id,
                "started": _iso(self.started), "finished": _iso(self.finished), "books_calls": self.calls,
                "kinds": self.summary(), "differences": [f.public() for f in self.differences],
                "rounding": [f.public() for f in self.findings if f.status == ROUNDING],
                "skipped": self.skipped, "emailed": self.emailed, "ok": not self.differences}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


class ReconcileBusy(RuntimeError):
    """Another reconciliation of this integration's month runs right now."""


RUN_LOCK_SECONDS = 3600         # the longest a run holds its month (a run that died lets go then)


def reconcile(rt: Runtime, integration: Integration, month: str, *, repair: bool = True,
              notify: bool = True) -> Report:
    """Reconcile one integration's month (``YYYY-MM``), one run at a time (``ReconcileBusy``:
    another runs); see the module's docstring."""
    first, last = month_range(month)
    lock = rt.redis.lock(rt.keys.reconcile_lock(integration.id, month), timeout=RUN_LOCK_SECONDS,
                         blocking_timeout=0)
    if not lock.acquire():
        raise ReconcileBusy(f"a reconciliation of {integration.id} for {month} is running now")
    try:
        return _run(rt, integration, month, first, last, repair=repair, notify=notify)
    finally:
        try:
            lock.release()
        except LockError:
            pass


def _run(rt: Runtime, integration: Integration, month: str, first, last, *, repair: bool,
         notify: bool) -> Report:
    report = Report(integration.id, month, uuid.uuid4().hex[:12], time.time())
    sb1, moment = rt.sb1(integration), rt.moment(integration)
    if integration.wants(INVOICES.name):
        _invoices(rt, integration, report, sb1, moment, first, last)
    if integration.wants(CUSTOMERS.name) or integration.wants(PROJECTS.name):
        _records(rt, integration, report, sb1, moment)
    if repair:
        _repair(rt, integration, report)
    report.finished = time.time()
    if notify and report.needs_person:
        try:
            subject, body = email_text(integration.language, month, report.needs_person)
            rt.send_email(make_email(rt.settings, integration.notify_email, subject, body))
            report.emailed = True
        except OSError as err:       # the run and its findings stand; the next run tells again
            log.warning("%s reconcile %s: the email could not be sent (%s)", integration.id, month,
                        type(err).__name__)
    ReconcileHistory(rt.redis, rt.keys).add(report.as_dict())
    log.info("%s reconcile %s: %d difference(s), %d need a person, %d call(s) to the books",
             integration.id, month, len(report.differences), len(report.needs_person), report.calls)
    return report


def _invoices(rt, integration, report: Report, sb1, moment, first, last) -> None:
    invoices = []
    for raw in books.moment_list(moment, INVOICES.moment_route, books.month_start(first)):
        try:
            invoice = MOMENT_INVOICE.load(raw)
        except Exception:           # unreadable: its own sync dead-letters it
            report.skipped["invoices"] = report.skipped.get("invoices", 0) + 1
            continue
        if invoice.status == INVOICE_FINAL_STATUS and first <= invoice.invoice_date <= last:
            invoices.append(invoice)
    rows, calls = books.month_rows(sb1, first, last)
    report.calls += calls
    percents = {r.vat_code: r.vat_percent for r in rows if r.vat_code and r.vat_percent is not None}
    if {ln.vat_code for inv in invoices for ln in inv.lines} - set(percents):
        for row in sb1.query("vattypes", top=books.PAGE_SIZE):
            percents.setdefault(str(row.get("VatCode")), Decimal(str(row.get("VatPercent") or 0)))
        report.calls += 1
    states = rt.state.get_many(integration.id, INVOICES.name, [inv.id for inv in invoices])
    findings, counts = compare_invoices(invoices, rows, revenue_accounts=dict(integration.revenue_accounts),
                                        percents=percents, noted=lambda i: (states.get(i) or {}).get("note"))
    report.findings += findings
    report.counts.update(counts)


def _records(rt, integration, report: Report, sb1, moment) -> None:
    customers_raw = list(books.moment_list(moment, CUSTOMERS.moment_route))
    customers = []
    for raw in customers_raw:
        try:
            customers.append(MOMENT_CUSTOMER.load(raw))
        except Exception:
            report.skipped["customers"] = report.skipped.get("customers", 0) + 1
    book_customers, calls = books.pages(sb1, CUSTOMERS.sb1_route, expand=CUSTOMER_EXPAND)
    report.calls += calls
    customer_number: dict[int, str] = {}
    wanted: list[Wanted] = []
    if integration.wants(CUSTOMERS.name):
        currencies, calls = books.currency_ids(sb1)
        report.calls += calls
    for customer in customers:
        try:
            key = CUSTOMERS.check(customer)
        except RecordInvalid:
            report.skipped["customers"] = report.skipped.get("customers", 0) + 1
            continue
        customer_number[customer.id] = str(key)
        if integration.wants(CUSTOMERS.name):
            fields_ = customer_fields(customer, key)
            wanted.append(Wanted(customer.id, str(key), _customer_body(fields_, currencies.get(fields_["currency_code"])),
                                 {"number": customer.customer_number, "name": customer.name}))
    if integration.wants(CUSTOMERS.name):
        known = _known(rt, integration.id, CUSTOMERS.name, [w.moment_id for w in wanted])
        findings, count = compare_records(CUSTOMERS, wanted, book_customers, known_ids=known)
        report.findings += findings
        report.counts[CUSTOMERS.name] = count
    if not integration.wants(PROJECTS.name):
        return
    by_number = {str(row.get(CUSTOMERS.key_field)): row.get("ID") for row in book_customers}
    customer_known = _known(rt, integration.id, CUSTOMERS.name, list(customer_number))
    projects_wanted: list[Wanted] = []
    for raw in books.moment_list(moment, PROJECTS.moment_route):
        try:
            project = MOMENT_PROJECT.load(raw)
            key = PROJECTS.check(project)
        except (RecordInvalid, Exception):
            report.skipped["projects"] = report.skipped.get("projects", 0) + 1
            continue
        customer_id = by_number.get(customer_number.get(project.customer.id, "")) or customer_known.get(project.customer.id)
        projects_wanted.append(Wanted(project.id, str(key), _project_body(project_fields(project, key), customer_id),
                                      {"number": project.project_number, "name": project.name}))
    book_projects, calls = books.pages(sb1, PROJECTS.sb1_route)
    report.calls += calls
    known = _known(rt, integration.id, PROJECTS.name, [w.moment_id for w in projects_wanted])
    findings, count = compare_records(PROJECTS, projects_wanted, book_projects, known_ids=known)
    report.findings += findings
    report.counts[PROJECTS.name] = count


def _customer_body(wanted: dict, currency_id: int | None):
    return lambda existing: CUSTOMERS.build(wanted, existing=existing, guid=lambda part: "", currency_id=currency_id)


def _project_body(wanted: dict, customer_id: int | None):
    return lambda existing: PROJECTS.build(wanted, existing=existing, guid=lambda part: "", customer_id=customer_id)


def _known(rt, iid: str, data_type: str, ids: list[int]) -> dict[int, int]:
    return {i: s["sb1_id"] for i, s in rt.state.get_many(iid, data_type, ids).items() if s.get("sb1_id")}


def _repair(rt: Runtime, integration: Integration, report: Report) -> None:
    """Queue a sync of each record Moment owns that the books lack or hold otherwise, and of
    each invoice without a voucher (once per record, whatever the number of its findings)."""
    done: dict[tuple[str, int], str] = {}
    for finding in report.findings:
        if finding.moment_id is None:
            continue
        if finding.kind in (CUSTOMERS.name, PROJECTS.name) and finding.status in (MISSING, DIFFERING):
            status = REPAIRED
        elif finding.kind == INVOICES.name and finding.status == MISSING:
            status = POSTED
        else:
            continue
        key = (finding.kind, finding.moment_id)
        if key not in done:
            done[key] = _requeue(rt, integration, finding.kind, finding.moment_id, report.run_id, status,
                                 read_at=report.started)
        if done[key]:
            finding.status = done[key]
        else:
            finding.note = (finding.note + "; " if finding.note else "") + "not queued (see the log)"


def _requeue(rt: Runtime, integration: Integration, data_type: str, record_id: int, run_id: str, status: str,
             read_at: float) -> str:
    lock = rt.record_lock(integration.id, data_type, record_id)
    if not lock.acquire():
        log.warning("%s reconcile: %s %s is being synced right now; the next run looks again",
                    integration.id, data_type, record_id)
        return ""
    try:
        state = rt.state.get(integration.id, data_type, record_id)
        if data_type == INVOICES.name and state and not _voucher_gone(rt, integration, state, read_at):
            log.warning("%s reconcile: invoice with Moment id %s has its voucher after all (posted since the "
                        "books were read, or found by its ID); not posted again", integration.id, record_id)
            return ""
        if state:
            kept = {k: v for k, v in state.items() if k not in ("fingerprint", "synced_at", "posted")}
            if data_type == INVOICES.name:
                kept[REPOST_FIELD] = run_id
            rt.state.save(integration.id, data_type, record_id, **kept)
    finally:
        lock.release()
    try:
        enqueue(integration.id, data_type, record_id, runtime=rt)
    except (Paused, IntegrationError, OSError) as err:
        log.warning("%s reconcile: the sync of %s %s was not queued (%s)", integration.id, data_type, record_id,
                    type(err).__name__)
        return ""
    return status


def _voucher_gone(rt: Runtime, integration: Integration, state: dict[str, Any], read_at: float) -> bool:
    """An invoice's voucher may be posted again only when it is surely gone: its sync did not
    post it after the books were read, and the voucher its state names is not in the books."""
    if float(state.get("synced_at") or 0) >= read_at:
        return False
    voucher = state.get("sb1_id")
    if not voucher:
        return True
    try:
        rt.sb1(integration).get(INVOICES.sb1_route, int(voucher))
    except NotFound:
        return True
    except IntegrationError:
        return False            # not known now: the next run looks again
    return False


PREVIOUS_MONTH_UNTIL_DAY = 10   # the nightly run also does the month before, until this day of the month


def nightly_months(today) -> list[str]:
    """The months the nightly run reconciles: this month so far, and the month before until
    the 10th (late vouchers, credit notes, corrections made early in the month)."""
    months = [today.strftime("%Y-%m")]
    if today.day <= PREVIOUS_MONTH_UNTIL_DAY:
        last = today.replace(day=1).toordinal() - 1
        months.insert(0, type(today).fromordinal(last).strftime("%Y-%m"))
    return months
