"""Create-or-update of one platform record, shared by every data type.

Idempotent by design: the record we wrote before is looked up by its ID, else by its
number (checking what comes back, as the platform ignores a filter it does not
understand); a create carries a deterministic ``_createguid``, and a create the platform
refuses because it already happened (the worker died before the ack) turns into an update.
A record found by number is written only when it is this Moment record's (see ``upsert``).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, NoReturn

from marshmallow import Schema, ValidationError

from clients.moment import MODIFIED_FIELD
from errors import DuplicateCreate, IntegrationError, NotFound, RecordInvalid, TransientError
from schemas.base import covers
from schemas.datatypes import DATA_TYPES, DataType
from schemas.sb1 import create_guid, field_digests, fingerprint
from schemas.text import label, plain
from worker.notices.templates import record_name
from worker.ops.logs import record_context
from worker.store.batch import new_token, release_lock
from worker.sync.context import SyncContext
from worker.sync.outcomes import Outcome

Build = Callable[[dict | None], dict]


def fetch(ctx: SyncContext, schema: Schema) -> Any | None:
    """The record as Moment has it now, loaded with ``schema``; None when it is gone."""
    raw = ctx.page_copy().get("moment")      # as a backfill's page listed it, if it did
    if raw is None:
        try:
            raw = ctx.moment.get(ctx.data_type, ctx.record_id)
        except NotFound:
            return None
    try:
        record = schema.load(raw)
    except ValidationError as err:
        ctx.version = _version_of(raw)
        fields = ", ".join(sorted(err.normalized_messages()))
        raise RecordInvalid(f"Moment returned a {DATA_TYPES[ctx.data_type].noun} we cannot read "
                            f"(fields: {fields})", code="moment-unreadable",
                            params={"noun": ctx.data_type, "fields": fields}) from None
    ctx.version = record.last_modified_date
    return record


def _version_of(raw: Any) -> datetime | None:
    """The lastModifiedDate of a record the schema refused, if it has a readable one."""
    try:
        value = datetime.fromisoformat(raw[MODIFIED_FIELD])
    except (TypeError, KeyError, ValueError):
        return None
    return value if value.tzinfo else None


References = Callable[[SyncContext, Any, dict], dict]


def record_body(dt: DataType, references: References) -> Callable[[SyncContext], Outcome]:
    """The sync body of a record that is created and updated (customers, projects), driven
    by its declaration: fetch it, name it, check it, skip it when the books hold it already,
    resolve what it refers to (``references`` returns the IDs ``dt.build`` needs), write it,
    remember it."""
    def body(ctx: SyncContext) -> Outcome:
        record = fetch(ctx, dt.moment_schema)
        if record is None:
            return Outcome.GONE         # deleted in Moment; the books keep it
        ctx.describe(dt.number(record), name=plain(getattr(record, "name", None), 80))
        key = dt.check(record)
        wanted = dt.wanted(record, key)
        digest = fingerprint(wanted, ctx.runtime.digest_key)
        previous = ctx.previous()
        done = ctx.already_done(previous, digest, record.last_modified_date)
        if done:
            return done
        refs = references(ctx, record, wanted)

        # a record deleted in the books since we wrote it is created anew: under a guid of its own
        # (the platform refuses the first create's guid as a twin however long ago it was)
        before = (previous or {}).get("sb1_id")

        def guid(part: str) -> str:
            if before:
                return create_guid(ctx.integration.id, dt.sb1_route, ctx.record_id, record.last_modified_date,
                                   f"after {before}", part)
            return create_guid(ctx.integration.id, dt.sb1_route, ctx.record_id, record.last_modified_date, part)
        outcome, sb1_id = upsert(
            ctx, dt.sb1_route, previous, lambda existing: dt.build(wanted, existing=existing, guid=guid, **refs),
            key_field=dt.key_field, key=key, expand=dt.expand, what=dt.noun)
        ctx.transferred(digest, sb1_id, record.last_modified_date, previous=previous,
                        fields=field_digests(wanted, ctx.runtime.digest_key))
        return outcome
    body.__name__ = body.__qualname__ = f"upsert_{dt.name}"
    return body


def upsert(ctx: SyncContext, route: str, previous: dict | None, build: Build, *, key_field: str,
           key: Any, expand: str | None, what: str) -> tuple[Outcome, int]:
    """Write the record; ``build(existing)`` makes the POST (None) or PUT body.
    Returns the outcome (created or updated) and the platform ID.

    One Moment record, one record in the books: the record we wrote before is found by
    its ID; else by its number, and then it must not belong to another Moment record.
    A number another record already holds is refused, never overwritten. Writes to one
    number are serialized, so two Moment records with the same number cannot both create.
    """
    rt, iid = ctx.runtime, ctx.integration.id
    lock, token = rt.number_lock(iid, ctx.data_type, key), new_token()
    if not lock.acquire(token=token):
        raise TransientError(f"another sync is writing {what} number {ctx.number or '(this number)'} right now")
    try:
        sb1 = ctx.sb1
        existing, from_page = _written_before(ctx, route, previous, key, expand)
        if existing is not None and str(existing.get(key_field)) != str(key):
            # the number changed in Moment: it must be free in the books
            holder, _ = _by_number(ctx, route, key_field, key, expand, what)
            if holder is not None and holder["ID"] != existing["ID"]:
                _refuse_shared_number(ctx, holder, key)
        if existing is None:
            existing, from_page = _found_by_number(ctx, route, key_field, key, expand, what)
        if existing is None:
            try:
                outcome, sb1_id = Outcome.CREATED, sb1.create(route, build(None))["ID"]
            except DuplicateCreate:
                # a create that already happened (the answer was lost) is refused as a twin
                existing, from_page = _found_by_number(ctx, route, key_field, key, expand, what, fresh=True)
                if existing is None:
                    raise
        if existing is not None:
            outcome, sb1_id = _update(ctx, route, existing, build(existing), from_page), existing["ID"]
        if not ctx.dry_run:
            pipe = ctx.writes.pipe if ctx.writes else None
            rt.state.own(iid, ctx.data_type, sb1_id, ctx.record_id, pipe)
            rt.pages.wrote_number(iid, ctx.data_type, rt.keyed(key), ctx.record_id, pipe)
        return outcome, sb1_id
    finally:
        # after the owner (both in the sync's batch, in this order); if it expired
        # meanwhile, the write is done either way
        release_lock(rt.redis, lock.name, token, ctx.writes)


def _update(ctx: SyncContext, route: str, existing: dict, body: dict, from_page: bool) -> Outcome:
    """Write ``body`` over the books' record, unless the record already says all of it."""
    if covers(existing, body):
        return Outcome.UNCHANGED
    try:
        ctx.sb1.update(route, existing["ID"], body)
    except NotFound:
        if not from_page:
            raise
        # deleted in the books since the backfill's page was read: the next try looks again
        raise TransientError(f"the {DATA_TYPES[ctx.data_type].noun} in SpareBank 1 Regnskap changed since "
                             "the backfill read it", service=ctx.sb1.service) from None
    return Outcome.UPDATED


def _written_before(ctx: SyncContext, route: str, previous: dict | None, key: Any,
                    expand: str | None) -> tuple[dict | None, bool]:
    """The books' record this Moment record wrote before (None: none, or deleted in the
    books), and whether it comes from the backfill's page copy."""
    if previous and previous.get("sb1_id"):
        known, row = _page_row(ctx, key)
        if known and row is not None and row.get("ID") == previous["sb1_id"]:
            return row, True
        try:
            return ctx.sb1.get(route, previous["sb1_id"], expand=expand), False
        except NotFound:
            pass                # deleted in the books: find by number or create anew
    return None, False


def _page_row(ctx: SyncContext, key: Any) -> tuple[bool, dict | None]:
    """What the backfill's page read held under this number: (known, the record or None)."""
    books = ctx.page_copy().get("books")
    if isinstance(books, dict) and books.get("key") == str(key):
        row = books.get("row")
        return True, row if isinstance(row, dict) else None
    return False, None


def _by_number(ctx: SyncContext, route: str, key_field: str, key: Any, expand: str | None, what: str,
               fresh: bool = False) -> tuple[dict | None, bool]:
    """The books' record with this number (or None), and whether it comes from the page copy.
    The copy's "none" is trusted only while no other Moment record has written the number
    since (``PageCopies.number_writer``, read under the number's lock)."""
    if not fresh:
        known, row = _page_row(ctx, key)
        if known and row is not None:
            return row, True
        if known:
            rt = ctx.runtime
            writer = rt.pages.number_writer(ctx.integration.id, ctx.data_type, rt.keyed(key))
            if writer is None or writer == ctx.record_id:
                return None, True
    return ctx.sb1.find_by(route, key_field, key, expand=expand, what=what), False


def _found_by_number(ctx: SyncContext, route: str, key_field: str, key: Any, expand: str | None,
                     what: str, fresh: bool = False) -> tuple[dict | None, bool]:
    """The books' record with this number, when it is this Moment record's to write: one it
    wrote, or one nobody did (made by hand, or before the integration kept track)."""
    found, from_page = _by_number(ctx, route, key_field, key, expand, what, fresh)
    if found is None:
        return None, from_page
    state, iid = ctx.runtime.state, ctx.integration.id
    owner = state.owner(iid, ctx.data_type, found["ID"])
    if owner is None or owner == ctx.record_id:
        return found, from_page
    theirs = state.get(iid, ctx.data_type, owner)
    if theirs and theirs.get("sb1_id") != found["ID"]:
        return found, from_page    # that Moment record has moved on to another record in the books
    _refuse_shared_number(ctx, found, key, owner)


def _refuse_shared_number(ctx: SyncContext, holder: dict, key: Any, owner: int | None = None) -> NoReturn:
    rt, iid, noun = ctx.runtime, ctx.integration.id, DATA_TYPES[ctx.data_type].noun
    owner = owner if owner is not None else rt.state.owner(iid, ctx.data_type, holder["ID"])
    safe = ctx.number or "(this number)"       # our own words name a number only when it is a safe one
    if owner is None:
        raise RecordInvalid(
            f"SpareBank 1 Regnskap already has another {noun} with {noun} number {safe}; nothing was "
            "written", hint=f"Give the {noun} another number in Moment, or change the number of the "
                            f"other {noun} in SpareBank 1 Regnskap if it should not be there.",
            code="number-taken", params={"noun": ctx.data_type, "number": key})
    other = _name_in_moment(ctx, owner, key)
    raise RecordInvalid(
        f"two {noun}s in Moment share {noun} number {safe} (Moment ids {owner} and {ctx.record_id}); "
        f"SpareBank 1 Regnskap keeps one {noun} per number, and it belongs to Moment id {owner}. "
        "Nothing was written",
        hint=f"In Moment, {ctx.what_for_person} and {record_name('en', ctx.data_type, other)} have the "
             f"same {noun} number {key}. Give one of them another number in Moment; the {noun} already in "
             "SpareBank 1 Regnskap stays as it is.",
        code="number-shared", params={"noun": ctx.data_type, "number": key, "this": ctx.person,
                                      "other": other})


def _name_in_moment(ctx: SyncContext, record_id: int, number: Any) -> dict[str, Any]:
    """The other record as a person knows it (its name from Moment, if it answers), for
    the company's email only."""
    try:
        raw = ctx.moment.get(ctx.data_type, record_id)
    except IntegrationError:
        raw = None
    name = plain(raw.get("name"), 80) if isinstance(raw, dict) else ""
    return {"number": label(number), "name": name or f"(Moment id {record_id})"}


def ensure_in_books(ctx: SyncContext, data_type: str, moment_id: int,
                    body: Callable[[SyncContext], str]) -> int:
    """The platform ID of a record this one depends on (a project's customer, an
    invoice's project), transferring it first when it is not in the books yet, under its
    own lock, as its own sync would. Whether the integration selected that data type
    does not matter: a project never lands without its customer."""
    rt = ctx.runtime
    iid = ctx.integration.id
    noun = DATA_TYPES[data_type].noun
    known = rt.state.get(iid, data_type, moment_id)
    if known and known.get("sb1_id"):
        return known["sb1_id"]
    sub = SyncContext(rt, ctx.integration, data_type, moment_id, dry_run=ctx.dry_run, _clients=ctx._clients)
    lock = rt.record_lock(iid, data_type, moment_id)
    if not lock.acquire():
        raise TransientError(f"its {noun} (Moment id {moment_id}) is being transferred right now")
    try:
        # its own log context: the dependency's number does not stay on this sync's lines
        with record_context(integration=iid, data_type=data_type, moment_id=moment_id):
            outcome = body(sub)
    except RecordInvalid as err:
        raise RecordInvalid(f"its {noun} could not be transferred first: {err}",
                            hint=err.hint or f"Correct the {noun} in Moment first.", detail=err.detail,
                            code="dependency", params={"noun": data_type, "inner": err}) from None
    finally:
        lock.release()
    if ctx.dry_run and outcome != Outcome.GONE:
        return 0                # a dry run wrote nothing, so there is no ID yet
    known = rt.state.get(iid, data_type, moment_id)
    if outcome == Outcome.GONE or not known:
        raise RecordInvalid(f"its {noun} (Moment id {moment_id}) does not exist in Moment",
                            hint=f"Give it an existing {noun} in Moment.", code="dependency-missing",
                            params={"noun": data_type})
    return known["sb1_id"]
