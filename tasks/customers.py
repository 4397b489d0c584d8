"""``sync.customer``: one Moment customer into SpareBank 1 Regnskap."""
from __future__ import annotations

from errors import RecordInvalid
from schemas.datatypes import CUSTOMERS
from schemas.moment import MomentCustomer
from schemas.sb1 import (check_customer, create_guid, customer_body,
                         customer_fields, fingerprint)
from schemas.text import plain, shown
from worker.app import app
from worker.outcomes import Outcome
from worker.sync import SyncContext, run_sync
from .upsert import fetch, upsert

TYPE = CUSTOMERS


@app.task(name=TYPE.task, bind=True)
def sync_customer(self, integration_id: str, customer_id: int, attempt: int = 1) -> str:
    return run_sync(self, TYPE.name, integration_id, customer_id, upsert_customer, attempt)


def fetch_customer(ctx: SyncContext) -> MomentCustomer | None:
    customer = fetch(ctx, TYPE.moment_schema)
    if customer is not None:
        ctx.describe(customer.customer_number, name=plain(customer.name, 80))
    return customer


def upsert_customer(ctx: SyncContext) -> Outcome:
    customer = fetch_customer(ctx)
    if customer is None:
        return Outcome.GONE       # deleted in Moment; the books keep the customer
    number = check_customer(customer)
    wanted = customer_fields(customer, number)
    digest = fingerprint(wanted)
    previous = ctx.previous()
    done = ctx.already_done(previous, digest, customer.last_modified_date)
    if done:
        return done

    sb1 = ctx.sb1
    currency_id = sb1.lookup_id("currencycodes", "Code", wanted["currency_code"])
    if currency_id is None:
        raise RecordInvalid(
            f"currency code {shown(wanted['currency_code'], 10)} does not exist in SpareBank 1 Regnskap",
            hint="Use a currency that SpareBank 1 Regnskap knows, or set it up there first.",
            code="currency-unknown", params={"value": shown(wanted['currency_code'], 10)})

    def guid(part: str) -> str:
        return create_guid(ctx.integration.id, TYPE.sb1_route, ctx.record_id, customer.last_modified_date, part)

    outcome, sb1_id = upsert(
        ctx, TYPE.sb1_route, previous,
        lambda existing: customer_body(wanted, currency_id=currency_id, existing=existing, guid=guid),
        key_field=TYPE.key_field, key=number, expand=TYPE.expand, what=TYPE.noun)
    ctx.transferred(digest, sb1_id, customer.last_modified_date)
    return outcome
