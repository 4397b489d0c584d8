"""``sync.customer``: one Moment customer into SpareBank 1 Regnskap."""
from __future__ import annotations

from clients.sb1 import CURRENCIES_ROUTE
from errors import RecordInvalid
from schemas.datatypes import CUSTOMERS
from schemas.moment import MomentCustomer
from schemas.sb1 import CURRENCY_CODE
from schemas.text import named, shown
from worker.sync.context import SyncContext
from worker.sync.registry import sync_task

from .upsert import record_body

TYPE = CUSTOMERS


def references(ctx: SyncContext, customer: MomentCustomer, wanted: dict) -> dict:
    """The platform's ID of the customer's currency (the company's own when Moment has none)."""
    currency_id = ctx.sb1.lookup_id(CURRENCIES_ROUTE, "Code", wanted["currency_code"])
    if currency_id is None:
        raise RecordInvalid(
            f"currency code {named(wanted['currency_code'], CURRENCY_CODE)} does not exist in SpareBank 1 Regnskap",
            hint="Use a currency that SpareBank 1 Regnskap knows, or set it up there first.",
            code="currency-unknown", params={"value": shown(wanted["currency_code"], 10)})
    return {"currency_id": currency_id}


upsert_customer = record_body(TYPE, references)
sync_customer = sync_task(TYPE, upsert_customer)
