"""``sync.customer``: one Moment customer into SpareBank 1 Regnskap."""
from __future__ import annotations

from marshmallow import ValidationError

from clients.errors import NotFound, RecordInvalid
from schemas.moment import MOMENT_CUSTOMER, MomentCustomer
from schemas.sb1 import (CUSTOMER_EXPAND, check_customer, create_guid, customer_body,
                         customer_fields, fingerprint)
from worker.app import app
from worker.sync import SyncContext, run_sync

ROUTE = "customers"


@app.task(name="sync.customer", bind=True)
def sync_customer(self, integration_id: str, customer_id: int) -> str:
    return run_sync(self, "customers", integration_id, customer_id, upsert_customer)


def fetch_customer(ctx: SyncContext) -> MomentCustomer | None:
    try:
        raw = ctx.moment.get("customers", ctx.record_id)
    except NotFound:
        return None
    try:
        customer = MOMENT_CUSTOMER.load(raw)
    except ValidationError as err:
        fields = ", ".join(sorted(err.normalized_messages()))
        raise RecordInvalid(f"Moment returned a customer we cannot read (fields: {fields})") from None
    ctx.describe(f"customer {customer.customer_number or '(no number)'}",
                 f"customer {customer.name} (customer number {customer.customer_number or 'missing'})")
    return customer


def upsert_customer(ctx: SyncContext) -> str:
    customer = fetch_customer(ctx)
    if customer is None:
        return "gone"       # deleted in Moment; the books keep the customer
    number = check_customer(customer)
    wanted = customer_fields(customer, number)
    digest = fingerprint(wanted)
    previous = ctx.previous()
    if previous and previous.get("fingerprint") == digest:
        return "unchanged"
    if ctx.is_stale(previous, customer.last_modified_date):
        return "stale"

    sb1 = ctx.sb1
    currency_id = None
    if wanted["currency_code"]:
        currency_id = sb1.lookup_id("currencycodes", "Code", wanted["currency_code"])
        if currency_id is None:
            raise RecordInvalid(
                f"currency code {wanted['currency_code']!r} does not exist in SpareBank 1 Regnskap",
                hint="Use a currency that SpareBank 1 Regnskap knows, or set it up there first.")

    existing = None
    if previous and previous.get("sb1_id"):
        try:
            existing = sb1.get(ROUTE, previous["sb1_id"], expand=CUSTOMER_EXPAND)
        except NotFound:
            existing = None     # deleted in the books: find by number or create anew
    if existing is None:
        existing = sb1.find_by(ROUTE, "CustomerNumber", number, expand=CUSTOMER_EXPAND, what="customer")

    def guid(part: str) -> str:
        return create_guid(ctx.integration.id, ROUTE, ctx.record_id, customer.last_modified_date, part)

    if existing is None:
        try:
            created = sb1.create(ROUTE, customer_body(wanted, currency_id=currency_id, existing=None, guid=guid))
            outcome, sb1_id = "created", created["ID"]
        except RecordInvalid:
            # A create that went through before (the worker died before the ack) is
            # refused for its _createguid: find what it made and bring it up to date.
            existing = sb1.find_by(ROUTE, "CustomerNumber", number, expand=CUSTOMER_EXPAND, what="customer")
            if existing is None:
                raise
    if existing is not None:
        sb1.update(ROUTE, existing["ID"], customer_body(wanted, currency_id=currency_id,
                                                        existing=existing, guid=guid))
        outcome, sb1_id = "updated", existing["ID"]
    ctx.remember(fingerprint=digest, sb1_id=sb1_id,
                 modified=customer.last_modified_date.isoformat() if customer.last_modified_date else None)
    return outcome
