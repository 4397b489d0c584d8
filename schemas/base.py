"""Base schemas: camelCase on Moment's wire, PascalCase on SpareBank 1's, snake_case in Python."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, post_dump


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def pascal(name: str) -> str:
    if name.startswith("_"):
        return name                       # platform-reserved names such as _createguid
    return "".join("ID" if part == "id" else part.title() for part in name.split("_"))


class MomentSchema(Schema):
    """Inbound from Moment: camelCase keys; new upstream fields are ignored."""

    class Meta:
        unknown = EXCLUDE

    def on_bind_field(self, field_name, field_obj):
        field_obj.data_key = field_obj.data_key or camel(field_name)


class SB1Schema(Schema):
    """Outbound to SpareBank 1: PascalCase keys (``currency_code_id`` → ``CurrencyCodeID``).

    A schema lists only fields the integration manages, and Moment is their master: a
    value field that is None is sent as null, so a value cleared in Moment is cleared in
    the books. Relations (nested objects, lists) and bookkeeping fields marked
    ``omit_none`` (ID, _createguid, Deleted) are left out when None: a PUT leaves a
    relation it does not send untouched, and a child record is removed the platform's
    way, with ``"Deleted": true``. Fields the body does not mention are not sent at all.
    """

    def on_bind_field(self, field_name, field_obj):
        field_obj.data_key = field_obj.data_key or pascal(field_name)

    @post_dump
    def _drop_unset_relations(self, data, **kwargs):
        omit = {f.data_key for f in self.dump_fields.values()
                if isinstance(f, (fields.Nested, fields.List)) or f.metadata.get("omit_none")}
        return {k: v for k, v in data.items() if v is not None or k not in omit}
