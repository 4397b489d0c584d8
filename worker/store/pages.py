"""Page copies: what a backfill read a page at a time, kept for the records' own syncs.

A backfill lists Moment's records a page at a time and reads the books' records with the
page's numbers in a few filtered calls (``worker.intake.pages``). It keeps, per record,
the record as Moment listed it and what the books held under its number, so the record's
sync in the bulk lane needs neither Moment's GET nor the look-up by number: a backfill
spends one write per new record. The message still carries only the record's id.

A copy is the record's personal data: it is encrypted (Fernet, with a key derived from the
integrator's credentials, as the token and the digests are), lives an hour at most, and is
taken (read and deleted at once) by the first sync that uses it, so a retry, a follow-up or
a second message reads the services again. Only a sync in the bulk lane takes one: a live
change always reads the record as it is now.

Which Moment record wrote which number (``numbers``): a copy that says "the books have no
record with this number" is only as fresh as its page. Every sync that writes a number
says so here, under the number's lock, before it lets go of the lock; a sync that finds
another record's mark for its number asks the books again instead of trusting the copy.
"""
from __future__ import annotations

import base64
import json
from typing import Any, Callable

import redis
from cryptography.fernet import Fernet, InvalidToken

from worker.store.keys import Keys

KEEP = 3600                 # seconds a page copy waits for its sync


class PageCopies:
    def __init__(self, r: redis.Redis, keys: Keys, key: Callable[[], bytes], keep: int = KEEP):
        """``key``: 32 bytes for the encryption, asked for when first needed."""
        self.redis, self.keys, self._key, self.keep = r, keys, key, keep
        self._fernet: Fernet | None = None

    @property
    def fernet(self) -> Fernet:
        if self._fernet is None:
            self._fernet = Fernet(base64.urlsafe_b64encode(self._key()))
        return self._fernet

    def put(self, integration_id: str, data_type: str, copies: dict[int, dict[str, Any]]) -> None:
        """Keep each record's copy (``{"moment": record, "books": {...}}``), one round trip."""
        if not copies:
            return
        pipe = self.redis.pipeline(transaction=False)
        for record_id, copy in copies.items():
            sealed = self.fernet.encrypt(json.dumps(copy, separators=(",", ":")).encode())
            pipe.set(self.keys.page_copy(integration_id, data_type, record_id), sealed, ex=self.keep)
        pipe.execute()

    def take(self, integration_id: str, data_type: str, record_id: int) -> dict[str, Any] | None:
        """The record's copy, deleted as it is read; None when there is none (or it does not
        decrypt: another deployment's key, or tampered)."""
        raw = self.redis.getdel(self.keys.page_copy(integration_id, data_type, record_id))
        if not raw:
            return None
        try:
            copy = json.loads(self.fernet.decrypt(raw if isinstance(raw, bytes) else raw.encode()))
        except (InvalidToken, ValueError):
            return None
        return copy if isinstance(copy, dict) else None

    def drop(self, integration_id: str, data_type: str, record_ids: list[int]) -> None:
        if record_ids:
            self.redis.delete(*(self.keys.page_copy(integration_id, data_type, i) for i in record_ids))

    # --- who wrote which number

    def wrote_number(self, integration_id: str, data_type: str, keyed: str, record_id: int, pipe=None) -> None:
        (pipe or self.redis).hset(self.keys.numbers(integration_id, data_type), keyed, str(record_id))

    def number_writer(self, integration_id: str, data_type: str, keyed: str) -> int | None:
        raw = self.redis.hget(self.keys.numbers(integration_id, data_type), keyed)
        return int(raw) if raw else None
