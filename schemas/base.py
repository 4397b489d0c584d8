"""Base schemas: camelCase on Moment's wire, PascalCase on SpareBank 1's, snake_case in Python."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, post_dump


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
    """Outbound to SpareBank 1: PascalCase keys (``currency_code_id`` → ``CurrencyCodeID``);
    fields left as None are not sent, so a PUT never blanks what we do not manage."""

    def on_bind_field(self, field_name, field_obj):
        field_obj.data_key = field_obj.data_key or pascal(field_name)

    @post_dump
    def _drop_none(self, data, **kwargs):
        return {k: v for k, v in data.items() if v is not None}
