"""What a data type's task body works with: the record, its clients and what the books held."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from clients.moment import MomentClient
from clients.sb1 import SB1Client
from schemas.datatypes import DATA_TYPES
from schemas.sb1 import customer_number_ok, looks_like_national_id, project_number_ok
from schemas.text import label, shape
from worker.config.integrations import Integration
from worker.notices import templates
from worker.ops.logs import bind
from worker.runtime import Runtime
from worker.store.batch import Batch
from worker.sync.outcomes import Outcome

_UNREAD = object()


def _project_number_ok(text: str) -> bool:
    return project_number_ok(text) and not looks_like_national_id(text)


def _invoice_number_ok(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18 and not looks_like_national_id(text)


# A record is named by its number outside the company's email only when the number is a
# valid one of its kind (what the rule check accepts) and could not be a national identity
# number; else by its Moment id. A value that is not a valid number may be anything typed
# into the field: an email address, a national identity number.
NUMBER_OK = {"customers": customer_number_ok, "projects": _project_number_ok, "invoices": _invoice_number_ok}


@dataclass
class SyncContext:
    """What a task body works with; it fills in how to name the record once it knows."""
    runtime: Runtime
    integration: Integration
    data_type: str
    record_id: int
    # "customer 100001" or "customer with Moment id 123": safe for logs, Sentry, dead letters
    # and history (no personal data)
    what: str = ""
    # the record's number when it is a valid one of its kind (safe to log), else None
    number: str | None = None
    # the record as a person knows it (number, name, ...): only for the company's own email
    person: dict = field(default_factory=dict)
    dry_run: bool = False       # the CLI's dry run: read everything, remember nothing
    # the lastModifiedDate of the record as fetched: the version this sync handles
    version: datetime | None = None
    changed: list[str] | None = None   # the fields this sync wrote anew (names only), for the history
    error: str | None = None           # why it was dead-lettered, for the history
    # A task's own sync gathers its Redis writes in one batch (the record's state, the
    # number's owner, the locks, counters, history, the follow-up): a try that ends the chain
    # sends it all at the end of the task, one that goes on (a retry, a wait) sends what it
    # has when it lets go of the record. None (a dependency's sync, whose state its caller
    # reads at once): each write is sent at once.
    writes: Batch | None = None
    started: bool = False       # the record's start is marked: its end (``follow_up``) must be too
    # a sync in the bulk lane (a backfill's): it takes what the backfill's page read for it
    # (``worker.store.pages``) instead of reading the services again
    bulk: bool = False
    _clients: dict = field(default_factory=dict)
    _previous: Any = field(default=_UNREAD, repr=False)   # the state, read with the record's lock
    _page: dict | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        noun = DATA_TYPES[self.data_type].noun
        self.what = self.what or f"{noun} with Moment id {self.record_id}"

    def describe(self, number: Any, **person: Any) -> None:
        """Name the record once it is fetched: in logs, dead letters and history by its
        number when that is a valid number of its kind ("customer 100001"), else by its
        Moment id, with the number's shape in the log lines ("number_shape": "11 digits");
        with ``person`` (the number as typed, the name, ...) in the company's email only."""
        text = "" if number is None else str(number)
        if text and NUMBER_OK.get(self.data_type, lambda _: False)(text):
            self.number = text
            bind(number=text, number_shape=None)
            self.what = f"{DATA_TYPES[self.data_type].noun} {text}"
        else:
            self.number = None
            bind(number=None, number_shape=shape(text))
            self.what = f"{DATA_TYPES[self.data_type].noun} with Moment id {self.record_id}"
        self.person = {"number": label(text, 40) if text else "(no number)", **person}

    @property
    def what_for_person(self) -> str:
        """"customer Fjord Bygg AS (customer number 100001)": only for the company's email."""
        return templates.record_name("en", self.data_type, self.person or {"moment_id": self.record_id})

    @property
    def moment(self) -> MomentClient:
        if "moment" not in self._clients:
            self._clients["moment"] = self.runtime.moment(self.integration)
        return self._clients["moment"]

    @property
    def sb1(self) -> SB1Client:
        if "sb1" not in self._clients:
            self._clients["sb1"] = self.runtime.sb1(self.integration)
        return self._clients["sb1"]

    def page_copy(self) -> dict[str, Any]:
        """What a backfill's page read for this record: ``moment`` (the record as listed) and
        ``books`` (what the books held under its number), or {}. Only a bulk-lane sync has
        one, taken once (the first try; a retry reads the services again, unless the service
        refused the try's call with a 429: ``return_page_copy``)."""
        if self._page is None:
            self._page = {}
            if self.bulk and not self.dry_run:
                self._page = self.runtime.pages.take(self.integration.id, self.data_type, self.record_id) or {}
        return self._page

    def return_page_copy(self) -> None:
        """Give the page copy back for the next try: the service refused the call unanswered
        (a 429), so the copy is as good as it was."""
        if self._page and not self.dry_run:
            self.runtime.pages.put(self.integration.id, self.data_type, {self.record_id: self._page})
        self._page = None

    def read_under_lock(self, state: dict[str, Any] | None) -> None:
        """The record's state, as read together with taking its lock: ``previous`` needs no
        round trip of its own."""
        self._previous = state

    def previous(self) -> dict[str, Any] | None:
        """What the books held after this record's last transfer (None: nothing yet)."""
        if self._previous is not _UNREAD:
            return self._previous
        return self.runtime.state.get(self.integration.id, self.data_type, self.record_id)

    def already_done(self, previous: dict[str, Any] | None, digest: str,
                     modified: datetime | None) -> Outcome | None:
        """"unchanged" when the books already hold exactly this, "stale" when Moment
        answered with an older version than the books hold; else None (write it)."""
        if previous and previous.get("fingerprint") == digest:
            return Outcome.UNCHANGED
        if self.is_stale(previous, modified):
            return Outcome.STALE
        return None

    def posted(self, voucher_id: int | None, modified: datetime | None, note: str | None) -> None:
        """Remember that an invoice has its voucher: it is never posted again. With its number
        when that is a valid invoice number (``describe``: safe to keep), which names its
        document without asking Moment again."""
        self.remember(posted=True, sb1_id=voucher_id, modified=modified.isoformat() if modified else None,
                      **({"note": note} if note else {}), **({"number": self.number} if self.number else {}))

    @staticmethod
    def was_posted(previous: dict[str, Any] | None) -> bool:
        # "fingerprint": "posted" is how the state said it before it had a field of its own
        return bool(previous and (previous.get("posted") or previous.get("fingerprint") == "posted"))

    def transferred(self, digest: str, sb1_id: int | None, modified: datetime | None, *,
                    previous: dict[str, Any] | None = None, fields: dict[str, str] | None = None,
                    **extra: Any) -> None:
        """Remember a successful write: what was written, where, which version (and any
        ``extra`` worth keeping with it, such as a VAT rounding note). ``fields``: a digest
        per field, so the next write can name the fields it changes."""
        if fields is not None:
            before = (previous or {}).get("fields") or {}
            self.changed = sorted(name for name, d in fields.items() if before.get(name) != d)
        self.remember(fingerprint=digest, sb1_id=sb1_id, modified=modified.isoformat() if modified else None,
                      **{k: v for k, v in {**extra, "fields": fields}.items() if v is not None})

    def is_stale(self, previous: dict[str, Any] | None, modified: datetime | None) -> bool:
        """True when Moment answered with an older version than the one already in the books
        (a lagging read): writing it would put an older state over a newer one."""
        if not previous or not previous.get("modified") or modified is None:
            return False
        return modified < datetime.fromisoformat(previous["modified"])

    def remember(self, **values: Any) -> None:
        if self.dry_run:
            return
        # what previous() gives from now on: the save may wait in the batch until the task ends
        self._previous = self.runtime.state.save(self.integration.id, self.data_type, self.record_id,
                                                 self.writes.pipe if self.writes else None, **values)


Body = Callable[[SyncContext], Outcome]
