"""Create-or-update of one platform record, shared by every data type.

Idempotent by design: the record we wrote before is looked up by its ID, else by its
number (checking what comes back, as the platform ignores a filter it does not
understand); a create carries a deterministic ``_createguid``, and a create the platform
refuses because it already happened (the worker died before the ack) turns into an update.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from marshmallow import Schema, ValidationError

from clients.errors import NotFound, RecordInvalid, TransientError
from worker.notify import DATA_TYPE_NAMES
from worker.sync import SyncContext

Build = Callable[[dict | None], dict]


def fetch(ctx: SyncContext, schema: Schema) -> Any | None:
    """The record as Moment has it now, loaded with ``schema``; None when it is gone."""
    try:
        raw = ctx.moment.get(ctx.data_type, ctx.record_id)
    except NotFound:
        return None
    try:
        record = schema.load(raw)
    except ValidationError as err:
        ctx.version = _version_of(raw)
        fields = ", ".join(sorted(err.normalized_messages()))
        raise RecordInvalid(f"Moment returned a {DATA_TYPE_NAMES[ctx.data_type]} we cannot read "
                            f"(fields: {fields})") from None
    ctx.version = record.last_modified_date
    return record


def _version_of(raw: Any) -> datetime | None:
    """The lastModifiedDate of a record the schema refused, if it has a readable one."""
    try:
        value = datetime.fromisoformat(raw["lastModifiedDate"])
    except (TypeError, KeyError, ValueError):
        return None
    return value if value.tzinfo else None


def find_existing(ctx: SyncContext, route: str, previous: dict | None, *, key_field: str, key: Any,
                  expand: str | None, what: str) -> dict | None:
    sb1 = ctx.sb1
    if previous and previous.get("sb1_id"):
        try:
            return sb1.get(route, previous["sb1_id"], expand=expand)
        except NotFound:
            pass                # deleted in the books: find by number or create anew
    return sb1.find_by(route, key_field, key, expand=expand, what=what)


def upsert(ctx: SyncContext, route: str, previous: dict | None, build: Build, *, key_field: str,
           key: Any, expand: str | None, what: str) -> tuple[str, int]:
    """Write the record; ``build(existing)`` makes the POST (None) or PUT body.
    Returns the outcome ("created" or "updated") and the platform ID."""
    sb1 = ctx.sb1
    existing = find_existing(ctx, route, previous, key_field=key_field, key=key, expand=expand, what=what)
    if existing is None:
        try:
            return "created", sb1.create(route, build(None))["ID"]
        except RecordInvalid:
            existing = sb1.find_by(route, key_field, key, expand=expand, what=what)
            if existing is None:
                raise
    sb1.update(route, existing["ID"], build(existing))
    return "updated", existing["ID"]


def ensure_in_books(ctx: SyncContext, data_type: str, moment_id: int,
                    body: Callable[[SyncContext], str]) -> int:
    """The platform ID of a record this one depends on (a project's customer, an
    invoice's project), transferring it first when it is not in the books yet, under its
    own lock, as its own sync would. Whether the integration selected that data type
    does not matter: a project never lands without its customer."""
    rt = ctx.runtime
    iid = ctx.integration.id
    noun = DATA_TYPE_NAMES[data_type]
    known = rt.state.get(iid, data_type, moment_id)
    if known and known.get("sb1_id"):
        return known["sb1_id"]
    sub = SyncContext(rt, ctx.integration, data_type, moment_id, dry_run=ctx.dry_run, _clients=ctx._clients)
    lock = rt.record_lock(iid, data_type, moment_id)
    if not lock.acquire():
        raise TransientError(f"its {noun} (Moment id {moment_id}) is being transferred right now")
    try:
        outcome = body(sub)
    except RecordInvalid as err:
        raise RecordInvalid(f"its {noun} could not be transferred first: {err}",
                            hint=err.hint or f"Correct the {noun} in Moment first.") from None
    finally:
        lock.release()
    if ctx.dry_run and outcome != "gone":
        return 0                # a dry run wrote nothing, so there is no ID yet
    known = rt.state.get(iid, data_type, moment_id)
    if outcome == "gone" or not known:
        raise RecordInvalid(f"its {noun} (Moment id {moment_id}) does not exist in Moment",
                            hint=f"Give it an existing {noun} in Moment.")
    return known["sb1_id"]
