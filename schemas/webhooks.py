"""Moment's webhook payloads (shape verified for invoices, assumed for the other types).

    {"event": "UPDATE", "customer": {"id": 62788973, "customerNumber": "100001"}}

Only the record's ``id`` is used: a webhook is a hint, the task fetches the record itself.
"""
from __future__ import annotations

from dataclasses import dataclass

from marshmallow import ValidationError, fields, post_load, validate, validates_schema

from .base import MomentSchema
from .datatypes import DATA_TYPES

# payload key → our data type
RECORD_KEYS = {t.webhook_key: name for name, t in DATA_TYPES.items() if t.queued_by is None}


@dataclass(frozen=True)
class WebhookEvent:
    event: str
    data_type: str
    record_id: int


class RecordRefSchema(MomentSchema):
    id = fields.Integer(required=True, strict=True, validate=validate.Range(
        min=1, max=2**63 - 1, error="must be a Moment record id (a whole number from 1 up)"))


class WebhookSchema(MomentSchema):
    # Other event names are not documented; accept any, the sync fetches the record anyway.
    event = fields.String(required=True, validate=validate.Regexp(r"^[A-Z_]{1,40}\Z",
                          error="must be an event name such as CREATE_NEW, UPDATE or DELETE"))
    customer = fields.Nested(RecordRefSchema, load_default=None)
    project = fields.Nested(RecordRefSchema, load_default=None)
    invoice = fields.Nested(RecordRefSchema, load_default=None)

    @validates_schema
    def _one_record(self, data, **kwargs):
        present = [k for k in RECORD_KEYS if data.get(k) is not None]
        if len(present) != 1:
            raise ValidationError(
                f"exactly one of {', '.join(RECORD_KEYS)} must be given (got {len(present)})", "_schema")

    @post_load
    def _make(self, data, **kwargs) -> WebhookEvent:
        key = next(k for k in RECORD_KEYS if data.get(k) is not None)
        return WebhookEvent(data["event"], RECORD_KEYS[key], data[key]["id"])


WEBHOOK = WebhookSchema()
