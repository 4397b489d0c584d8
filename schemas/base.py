"""Base schemas: camelCase on Moment's wire, PascalCase on SpareBank 1's, snake_case in Python."""
from __future__ import annotations

from decimal import Decimal

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


def _blank(value: object) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _same_scalar(ours: object, theirs: object) -> bool:
    if _blank(ours) and _blank(theirs):
        return True
    if isinstance(ours, bool) or isinstance(theirs, bool):
        return ours is theirs
    numbers = (int, float, Decimal)
    if (isinstance(ours, numbers) and isinstance(theirs, (*numbers, str))
            or isinstance(theirs, numbers) and isinstance(ours, str)):
        try:
            return Decimal(str(ours)) == Decimal(str(theirs))
        except ArithmeticError:
            return False
    return ours == theirs


def covers(theirs: object, ours: object) -> bool:
    """True when the platform's record ``theirs`` already says everything the body ``ours``
    would write (a PUT of it would change nothing): every field of the body has the same
    value there (a missing field counts as empty; numbers compare by value), each child
    record it names by ``ID`` says the same, and it creates or deletes no child (a child
    with ``ID`` 0 or a ``_createguid``, or ``"Deleted": true``)."""
    if isinstance(ours, dict):
        if ours.get("Deleted") or ("_createguid" in ours and not ours.get("ID")):
            return False
        if not isinstance(theirs, dict):
            return all(_blank(v) for k, v in ours.items() if k != "_createguid")
        return all(covers(theirs.get(k), v) for k, v in ours.items() if k != "_createguid")
    if isinstance(ours, list):
        theirs_by_id = {row.get("ID"): row for row in theirs or [] if isinstance(row, dict)}
        return all(isinstance(item, dict) and item.get("ID") in theirs_by_id
                   and covers(theirs_by_id[item["ID"]], item) for item in ours)
    if isinstance(theirs, (dict, list)):
        return _blank(ours) and _blank(theirs)
    return _same_scalar(ours, theirs)
