"""A backfill's page, read once for all its records.

Moment's list pages already hold the records, and the books can be asked for all of a
page's numbers in a few filtered calls (``SB1Client.find_many``). What the page read is
kept per record (``worker.store.pages``), so each record's sync in the bulk lane writes
without reading: a new record costs one call to SpareBank 1, and Moment only its list pages.

What cannot be read here is left to the record's own sync, which reads it as a live change
does: a record the schema cannot load (its sync says what is wrong), a number the rules
refuse, a number the books answered for unclearly, or a page of the books that failed.
"""
from __future__ import annotations

import logging
from typing import Any

from marshmallow import ValidationError

from errors import IntegrationError, RecordInvalid
from schemas.datatypes import DATA_TYPES
from worker.config.integrations import Integration

log = logging.getLogger(__name__)


def keep_page(rt, integration: Integration, data_type: str, records: dict[int, dict[str, Any]]) -> int:
    """Keep copies of a page's ``records`` (id → the record as listed) with what the books
    hold under their numbers. Returns how many records have a copy of the books too."""
    dt = DATA_TYPES[data_type]
    copies: dict[int, dict[str, Any]] = {}
    numbers: dict[int, Any] = {}
    for record_id, raw in records.items():
        try:
            record = dt.moment_schema.load(raw)
        except ValidationError:
            continue            # its sync fetches it and says what is wrong
        copies[record_id] = {"moment": raw}
        if dt.key_field and dt.check:
            try:
                numbers[record_id] = dt.check(record)
            except RecordInvalid:
                pass            # refused by its sync, with its email
    if numbers:
        try:
            found = rt.sb1(integration).find_many(dt.sb1_route, dt.key_field, numbers.values(), expand=dt.expand)
        except IntegrationError as exc:
            # the syncs look their numbers up one by one
            log.warning("%s %s: the books could not be read for a page of the backfill (%s); its records "
                        "are looked up one by one", integration.id, data_type, type(exc).__name__)
            found = {}
        for record_id, number in numbers.items():
            if str(number) in found:
                copies[record_id]["books"] = {"key": str(number), "row": found[str(number)]}
    rt.pages.put(integration.id, data_type, copies)
    return sum(1 for c in copies.values() if "books" in c)
