"""A backfill's page, read once for all its records.

Moment's list pages already hold the records, and the books can be asked about all of a
page's records in a few filtered calls (``SB1Client.rows_for``): customers and projects by
their numbers; invoices for vouchers with their numbers and for their customers' ledger
accounts. What the page read is kept per record (``worker.store.pages``), so each record's
sync in the bulk lane writes without reading: a new record costs one call to SpareBank 1,
and Moment only its list pages.

What cannot be read here is left to the record's own sync, which reads it as a live change
does: a record the schema cannot load (its sync says what is wrong), a number the rules
refuse, a number the books answered for unclearly, or a page of the books that failed.
"""
from __future__ import annotations

import logging
from typing import Any

from marshmallow import ValidationError

from clients.sb1 import ACCOUNTS_ROUTE
from errors import IntegrationError, RecordInvalid
from schemas.datatypes import CUSTOMERS, DATA_TYPES, INVOICES, DataType
from schemas.vouchers import RECEIVABLE_ACCOUNT_FIELD, VOUCHER_KEY_FIELD, VOUCHER_LINES_ROUTE
from worker.config.integrations import Integration

log = logging.getLogger(__name__)


def keep_page(rt, integration: Integration, data_type: str, records: dict[int, dict[str, Any]]) -> int:
    """Keep copies of a page's ``records`` (id → the record as listed) with what the books
    hold for them. Returns how many records have a copy of the books too."""
    dt = DATA_TYPES[data_type]
    copies: dict[int, dict[str, Any]] = {}
    loaded: dict[int, Any] = {}
    for record_id, raw in records.items():
        try:
            loaded[record_id] = dt.moment_schema.load(raw)
        except ValidationError:
            continue            # its sync fetches it and says what is wrong
        copies[record_id] = {"moment": raw}
    try:
        if dt.key_field and dt.check:
            _numbers(rt, integration, dt, loaded, copies)
        elif dt is INVOICES:
            _invoices(rt, integration, loaded, copies)
    except IntegrationError as exc:
        # the syncs read what they need one by one
        log.warning("%s %s: the books could not be read for a page of the backfill (%s); its records "
                    "are looked up one by one", integration.id, data_type, type(exc).__name__)
    rt.pages.put(integration.id, data_type, copies)
    return sum(1 for c in copies.values() if len(c) > 1)


def _numbers(rt, integration: Integration, dt: DataType, loaded: dict[int, Any], copies: dict) -> None:
    """What the books hold under each record's number (customers, projects)."""
    numbers: dict[int, Any] = {}
    for record_id, record in loaded.items():
        try:
            numbers[record_id] = dt.check(record)
        except RecordInvalid:
            pass                # refused by its sync, with its email
    if not numbers:
        return
    found = rt.sb1(integration).find_many(dt.sb1_route, dt.key_field, numbers.values(), expand=dt.expand)
    for record_id, number in numbers.items():
        if str(number) in found:
            copies[record_id]["books"] = {"key": str(number), "row": found[str(number)]}


def _invoices(rt, integration: Integration, loaded: dict[int, Any], copies: dict) -> None:
    """For each invoice: the voucher lines the books hold with its number (posted before?), and
    the ledger account of its customer when the customer is in the books already."""
    sb1 = rt.sb1(integration)
    numbers = {rid: str(inv.invoice_number) for rid, inv in loaded.items() if inv.invoice_number}
    lines = sb1.rows_for(VOUCHER_LINES_ROUTE, VOUCHER_KEY_FIELD, numbers.values(), per_value=2) if numbers else {}
    keep = (VOUCHER_KEY_FIELD, "AccountID", "SubAccountID", "JournalEntryID")
    for record_id, number in numbers.items():
        if number in lines:
            rows = [{k: row.get(k) for k in keep} for row in lines[number]]
            copies[record_id]["vouchers"] = {"key": number, "rows": rows}
    customers = {rid: inv.customer.id for rid, inv in loaded.items() if inv.customer is not None}
    states = rt.state.get_many(integration.id, CUSTOMERS.name, sorted(set(customers.values())))
    in_books = {cid: s["sb1_id"] for cid, s in states.items() if s.get("sb1_id")}
    if not in_books:
        return
    accounts = sb1.find_many(ACCOUNTS_ROUTE, RECEIVABLE_ACCOUNT_FIELD, in_books.values())
    for record_id, customer in customers.items():
        sb1_id = in_books.get(customer)
        row = accounts.get(str(sb1_id)) if sb1_id else None
        if row is not None:
            copies[record_id]["receivable"] = {"customer": sb1_id, "account": int(row["ID"])}
