"""``sync.invoice``: a finalized Moment invoice posted once as a voucher in the journal."""
from __future__ import annotations

from decimal import Decimal

from clients.errors import RecordInvalid
from schemas.moment import MOMENT_INVOICE, MomentInvoice
from schemas.sb1 import (INVOICE_FINAL_STATUS, RECEIVABLE_ACCOUNT_FIELD, VAT_AS_SEPARATE_LINES,
                         VatRate, check_invoice, create_guid, voucher_body)
from worker.app import app
from worker.sync import SyncContext, run_sync
from .customers import upsert_customer
from .projects import upsert_project
from .upsert import ensure_in_books, fetch

ROUTE = "journalentries"
BOOK = "book-journal-entries"
POSTED = "posted"          # the state's fingerprint of an invoice that has its voucher


@app.task(name="sync.invoice", bind=True)
def sync_invoice(self, integration_id: str, invoice_id: int) -> str:
    return run_sync(self, "invoices", integration_id, invoice_id, post_invoice)


def fetch_invoice(ctx: SyncContext) -> MomentInvoice | None:
    invoice = fetch(ctx, MOMENT_INVOICE)
    if invoice is not None:
        net = sum((ln.amount_excl_vat for ln in invoice.lines), Decimal(0))
        ctx.describe(f"invoice {invoice.invoice_number}",
                     f"invoice {invoice.invoice_number} (customer number {invoice.customer.customer_number}, "
                     f"NOK {net:.2f} excluding VAT)")
    return invoice


def lookups(ctx: SyncContext, invoice: MomentInvoice) -> tuple[dict[str, int], dict[str, VatRate], int | None]:
    """Every account and VAT type the voucher needs, all looked up before anything is
    posted; what is missing is named in one error."""
    sb1, integration = ctx.sb1, ctx.integration
    missing: list[str] = []
    revenue: dict[str, int] = {}
    for product_type in sorted({ln.product_type for ln in invoice.lines}):
        number = integration.revenue_accounts[product_type]
        found = sb1.lookup_id("accounts", "AccountNumber", number)
        if found is None:
            missing.append(f"account {number} (revenue for {product_type.lower()})")
        else:
            revenue[product_type] = found
    vat: dict[str, VatRate] = {}
    for code in sorted({ln.vat_code for ln in invoice.lines}):
        row = sb1.lookup("vattypes", "VatCode", code)
        if row is None:
            missing.append(f"VAT code {code}")
        else:
            vat[code] = VatRate(int(row["ID"]), Decimal(str(row.get("VatPercent") or 0)))
    vat_account = None
    if VAT_AS_SEPARATE_LINES and any(rate.percent for rate in vat.values()):
        vat_account = sb1.lookup_id("accounts", "AccountNumber", integration.vat_account)
        if vat_account is None:
            missing.append(f"account {integration.vat_account} (output VAT)")
    if missing:
        raise RecordInvalid(
            f"nothing was posted: SpareBank 1 Regnskap has no {', no '.join(missing)}",
            hint="Set these up in SpareBank 1 Regnskap with the same numbers and codes as in Moment, "
                 "then ask the operator to replay the invoice (moment-sb1 replay).")
    return revenue, vat, vat_account


def receivable_account(ctx: SyncContext, customer_id: int) -> int:
    row = ctx.sb1.find_by("accounts", RECEIVABLE_ACCOUNT_FIELD, customer_id, what="customer ledger account")
    if row is None:
        raise RecordInvalid("the customer has no ledger account (receivable) in SpareBank 1 Regnskap")
    return int(row["ID"])


def post_invoice(ctx: SyncContext) -> str:
    invoice = fetch_invoice(ctx)
    if invoice is None:
        return "gone"
    if invoice.status != INVOICE_FINAL_STATUS:
        return "not-finalized"          # drafts are not transferred; finalizing sends a webhook
    previous = ctx.previous()
    if previous and previous.get("fingerprint") == POSTED:
        return "already-posted"         # a voucher is posted once; later edits are not carried over
    check_invoice(invoice)
    revenue, vat, vat_account = lookups(ctx, invoice)
    customer_id = ensure_in_books(ctx, "customers", invoice.customer.id, upsert_customer)
    project_id = ensure_in_books(ctx, "projects", invoice.project.id, upsert_project) if invoice.project else None
    receivable = receivable_account(ctx, customer_id) if customer_id else 0    # 0: a dry run's new customer
    body = voucher_body(invoice, receivable_id=receivable, revenue_ids=revenue,
                        vat=vat, vat_account_id=vat_account, project_id=project_id,
                        # one voucher per invoice, whatever its version: the platform refuses a twin
                        guid=create_guid(ctx.integration.id, "invoices", invoice.id))
    sb1 = ctx.sb1
    posted = sb1.find_by(ROUTE, "Description", body["Description"], what="voucher")
    if posted is None:
        try:
            posted = sb1.action(ROUTE, BOOK, [body])[0]
        except RecordInvalid as exc:
            if "_createguid" not in str(exc):
                raise
            # posted before, and the answer was lost (the worker died, a timeout)
            posted = sb1.find_by(ROUTE, "Description", body["Description"], what="voucher") or {}
            outcome = "already-posted"
        else:
            outcome = "posted"
    else:
        outcome = "already-posted"
    ctx.transferred(POSTED, posted.get("ID"), invoice.last_modified_date)
    return outcome
