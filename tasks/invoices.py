"""``sync.invoice``: a finalized Moment invoice posted once as a voucher in the journal."""
from __future__ import annotations

import logging
import time
from decimal import Decimal

from clients.sb1 import (
    ACCOUNTS_ROUTE,
    CURRENCIES_ROUTE,
    EXCHANGE_RATE_ACTION,
    EXCHANGE_RATES_ROUTE,
    VAT_TYPES_ROUTE,
    quote,
)
from errors import AuthError, DuplicateCreate, NotFound, PermanentError, RecordInvalid, TransientError
from schemas.datatypes import CUSTOMERS, INVOICES, PROJECTS
from schemas.moment import MomentInvoice
from schemas.sb1 import DEFAULT_CURRENCY, create_guid
from schemas.text import kroner, label, named
from schemas.vouchers import (
    INVOICE_FINAL_STATUS,
    RECEIVABLE_ACCOUNT_FIELD,
    VAT_CODE,
    VOUCHER_KEY_FIELD,
    VOUCHER_LINES_ROUTE,
    Currency,
    VatRate,
    Voucher,
    check_invoice,
    in_nok,
    invoice_named,
    unknown_currency,
    voucher_body,
)
from worker.sync.context import SyncContext
from worker.sync.outcomes import Outcome
from worker.sync.registry import sync_task

from .customers import upsert_customer
from .documents import queue_document
from .projects import upsert_project
from .upsert import ensure_in_books, fetch

log = logging.getLogger(__name__)

BOOK = "book-journal-entries"         # the platform's action that books vouchers


TYPE = INVOICES


def fetch_invoice(ctx: SyncContext) -> MomentInvoice | None:
    invoice = fetch(ctx, TYPE.moment_schema)
    if invoice is not None:
        net = sum((ln.amount_excl_vat for ln in invoice.lines), Decimal(0))
        ctx.describe(invoice.invoice_number, customer_number=label(invoice.customer.customer_number),
                     net=str(net.quantize(Decimal("0.01"))))
    return invoice


def lookups(ctx: SyncContext, invoice: MomentInvoice) -> tuple[dict[str, int], dict[str, VatRate]]:
    """Every account and VAT type the voucher needs, all looked up before anything is
    posted; what is missing is named in one error. The VAT accounts are the platform's
    own: each VAT type books its VAT on its account."""
    sb1, integration = ctx.sb1, ctx.integration
    no_accounts: list[tuple[int, str]] = []       # (account number, product type) not in the books
    revenue: dict[str, int] = {}
    for product_type in sorted({ln.product_type for ln in invoice.lines}):
        number = integration.revenue_accounts[product_type]
        found = sb1.lookup_id(ACCOUNTS_ROUTE, "AccountNumber", number)
        if found is None:
            no_accounts.append((number, product_type))
        else:
            revenue[product_type] = found
    no_codes: list[str] = []          # as the company's email shows them
    no_codes_safe: list[str] = []     # as our own words name them (a code of another form by its shape)
    vat: dict[str, VatRate] = {}
    for code in sorted({ln.vat_code for ln in invoice.lines}):
        row = sb1.lookup(VAT_TYPES_ROUTE, "VatCode", code)
        if row is None:
            no_codes.append(label(code))
            no_codes_safe.append(named(code, VAT_CODE))
        else:
            vat[code] = VatRate(int(row["ID"]), Decimal(str(row.get("VatPercent") or 0)))
    if no_accounts or no_codes:
        missing = [f"account {n} (revenue for {kind.lower()})" for n, kind in no_accounts]
        missing += [f"VAT code {code}" for code in no_codes_safe]
        raise RecordInvalid(
            f"nothing was posted: SpareBank 1 Regnskap has no {', no '.join(missing)}",
            hint="Set these up in SpareBank 1 Regnskap with the same numbers and codes as in Moment, "
                 "then ask the operator of the integration to transfer the invoice again.",
            code="lookups-missing", params={"accounts": no_accounts, "vat_codes": no_codes})
    return revenue, vat


# A day's rate, as the books answered it, per company: invoices of one day in one currency ask
# once per process (a backfill of a month of EUR invoices asks about 30 times, not thousands)
_RATES: dict[tuple, tuple[Decimal, Decimal, float]] = {}
RATE_TTL, RATES_KEPT = 3600.0, 5000


def invoice_currency(ctx: SyncContext, invoice: MomentInvoice) -> Currency | None:
    """None for an invoice in NOK. Else its currency as the books know it (refused when they
    do not) and the rate: Moment's, when the invoice carries one, else the platform's for the
    invoice date (Norges Bank's: NOK = amount x ExchangeRate / Factor)."""
    if in_nok(invoice):
        return None
    sb1, code = ctx.sb1, str(invoice.currency_code)
    currency_id = sb1.lookup_id(CURRENCIES_ROUTE, "Code", code)
    if currency_id is None:
        raise unknown_currency(invoice)
    if invoice.exchange_rate is not None:
        return Currency(code, currency_id, invoice.exchange_rate)
    nok_id = sb1.lookup_id(CURRENCIES_ROUTE, "Code", DEFAULT_CURRENCY)
    if nok_id is None:
        raise PermanentError(f"SpareBank 1 Regnskap has no currency code {DEFAULT_CURRENCY}",
                             service=sb1.service)
    day = invoice.invoice_date.isoformat()
    key = (sb1.base, sb1.company_key, currency_id, nok_id, day)
    known = _RATES.get(key)
    if known and known[2] > time.monotonic():
        return Currency(code, currency_id, known[0], known[1], source=sb1.service)
    answer = sb1.request("GET", EXCHANGE_RATES_ROUTE, params={
        "action": EXCHANGE_RATE_ACTION, "fromCurrencyCodeID": currency_id, "toCurrencyCodeID": nok_id,
        "currencyDate": day}).json()
    try:
        rate = Decimal(str(answer["ExchangeRate"]))
        factor = Decimal(str(answer.get("Factor") or 1))
    except (TypeError, KeyError, ArithmeticError, AttributeError):
        rate = factor = Decimal(0)
    if not (rate.is_finite() and factor.is_finite() and rate > 0 and factor > 0):
        # Norges Bank's rate of the day may not be downloaded yet: try again later
        raise TransientError(f"SpareBank 1 Regnskap has no exchange rate for {code} on {day}", service=sb1.service)
    if len(_RATES) > RATES_KEPT:
        _RATES.clear()
    _RATES[key] = (rate, factor, time.monotonic() + RATE_TTL)
    return Currency(code, currency_id, rate, factor, source=sb1.service)


def receivable_account(ctx: SyncContext, customer_id: int) -> int:
    copy = ctx.page_copy().get("receivable")      # as the backfill's page read it
    if isinstance(copy, dict) and copy.get("customer") == customer_id and copy.get("account"):
        return int(copy["account"])
    row = ctx.sb1.find_by(ACCOUNTS_ROUTE, RECEIVABLE_ACCOUNT_FIELD, customer_id, what="customer ledger account")
    if row is None:
        raise RecordInvalid("the customer has no ledger account (receivable) in SpareBank 1 Regnskap",
                            code="receivable-missing")
    return int(row["ID"])


def posted_voucher(ctx: SyncContext, invoice: MomentInvoice, receivable: int, fresh: bool = False,
                   strict: bool = False) -> int | None:
    """The journal entry that already holds this invoice: a line with its invoice number on
    the customer's ledger account (the platform keeps it as AccountID, or as SubAccountID
    under 1500). Not ``fresh``: as the backfill's page read it, if it did (a voucher posted
    since then by another sync of this invoice is in the state, read under its lock)."""
    number = str(invoice.invoice_number)
    copy = None if fresh else ctx.page_copy().get("vouchers")
    if isinstance(copy, dict) and copy.get("key") == number and isinstance(copy.get("rows"), list):
        rows = copy["rows"]
    else:
        try:
            rows = ctx.sb1.query(VOUCHER_LINES_ROUTE, filter=f"{VOUCHER_KEY_FIELD} eq {quote(number)}", top=100)
        except (NotFound, AuthError) as exc:
            if strict:
                raise TransientError(f"cannot look up posted vouchers (HTTP {exc.status}) before posting "
                                     "again", service=ctx.sb1.service) from None
            # a platform without this route: the state and the _createguid still stop a twin
            log.warning("%s %s: cannot look up posted vouchers (HTTP %s); relying on the _createguid",
                        ctx.integration.id, ctx.what, exc.status)
            return None
    for row in rows:        # the platform ignores a filter it does not understand: check
        if str(row.get(VOUCHER_KEY_FIELD)) == number and receivable in (row.get("AccountID"),
                                                                          row.get("SubAccountID")):
            return int(row.get("JournalEntryID") or 0) or None
    return None


def check_vat(ctx: SyncContext, invoice: MomentInvoice, voucher: Voucher) -> str | None:
    """Refuse a voucher whose VAT the platform would book more than an øre per line away
    from Moment's; a smaller difference is posted and reported (returned as a note)."""
    off = [c for c in voucher.vat if not c.acceptable]
    if off:
        parts = "; ".join(f"VAT code {c.code}: Moment {kroner(c.moment)}, SpareBank 1 Regnskap would book "
                          f"{kroner(c.platform)}" for c in off)
        raise RecordInvalid(
            f"{invoice_named(invoice)} was not posted: its VAT does not match what SpareBank 1 "
            f"Regnskap computes ({parts})",
            hint="Check the VAT codes and amounts of the invoice in Moment, and that the VAT codes have the "
                 "same rates in SpareBank 1 Regnskap. Post the invoice by hand if Moment is right.",
            code="vat-mismatch", params={"number": invoice.invoice_number,
                                         "checks": [(c.code, c.moment, c.platform) for c in off]})
    notes = [f"VAT code {c.code}: Moment {kroner(c.moment)}, booked {kroner(c.platform)} "
             f"({c.difference:+.2f}, rounding per line)" for c in voucher.vat if c.difference]
    if notes:
        log.info("%s %s: VAT rounding differs from Moment's: %s", ctx.integration.id, ctx.what, "; ".join(notes))
    return "; ".join(notes) or None


def post_invoice(ctx: SyncContext) -> Outcome:
    invoice = fetch_invoice(ctx)
    if invoice is None:
        return Outcome.GONE
    if invoice.status != INVOICE_FINAL_STATUS:
        return Outcome.NOT_FINALIZED    # drafts are not transferred; finalizing sends a webhook
    if ctx.was_posted(ctx.previous()):
        return Outcome.ALREADY_POSTED   # a voucher is posted once; later edits are not carried over
    check_invoice(invoice)
    revenue, vat = lookups(ctx, invoice)
    currency = invoice_currency(ctx, invoice)
    # one voucher per invoice, whatever its version: the platform refuses a twin; a voucher
    # deleted in the books is posted again with the reconciliation's run id (worker.reconcile)
    repost = (ctx.previous() or {}).get("repost")
    guid = create_guid(ctx.integration.id, TYPE.name, invoice.id, *([f"repost-{repost}"] if repost else []))
    # amounts and VAT checked before anything is written (the customer and project included)
    note = check_vat(ctx, invoice, voucher_body(invoice, receivable_id=0, revenue_ids=revenue, vat=vat,
                                                project_id=None, guid=guid, currency=currency))
    customer_id = ensure_in_books(ctx, CUSTOMERS.name, invoice.customer.id, upsert_customer)
    project_id = ensure_in_books(ctx, PROJECTS.name, invoice.project.id, upsert_project) if invoice.project else None
    receivable = receivable_account(ctx, customer_id) if customer_id else 0    # 0: a dry run's new customer
    voucher = voucher_body(invoice, receivable_id=receivable, revenue_ids=revenue, vat=vat,
                           project_id=project_id, guid=guid, currency=currency)
    if currency is not None:
        log.info("%s %s: in %s, booked in NOK at %s per unit (%s's rate)", ctx.integration.id, ctx.what,
                 currency.code, currency.unit_rate, currency.source)
    sb1 = ctx.sb1
    # a voucher the reconciliation found deleted (``repost``) is looked for in the books as they
    # are now, and a look-up that cannot be made holds the post back: its guid is a new one
    posted = posted_voucher(ctx, invoice, receivable, fresh=bool(repost), strict=bool(repost)) if receivable else None
    outcome = Outcome.ALREADY_POSTED
    if posted is None:
        try:
            posted = sb1.action(TYPE.sb1_route, BOOK, [voucher.body])[0].get("ID")
            outcome = Outcome.POSTED
        except DuplicateCreate:
            # posted before, and the answer was lost (the worker died, a timeout)
            posted = posted_voucher(ctx, invoice, receivable, fresh=True)
    ctx.posted(posted, invoice.last_modified_date, note)
    queue_document(ctx)         # its PDF on the voucher: a task of its own (tasks/documents.py)
    return outcome


sync_invoice = sync_task(TYPE, post_invoice)
