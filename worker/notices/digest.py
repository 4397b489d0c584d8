"""Failure emails to a company: the first at once, the rest as one digest per window.

* The first failure of an integration is mailed at once, and opens a window
  (``MSB1_DIGEST_WINDOW``, 15 minutes). Failures inside the window are collected in Redis
  and sent as one email when it ends, grouped by problem; that email opens the next window.
  So 2,000 records failing the same rule within a minute give two emails.
* An email that could not be sent (the mail server is down) stays collected and goes out
  with the next digest, which tries again until it is sent.
* Delivery: at least once. The items leave Redis only after the mail server took the
  email, so a worker killed between the two sends that email once more (at most one
  duplicate per crash); none is lost.
* A collected item is the company's email in the making: it names the record as the
  company knows it and the value refused. It is kept in Redis encrypted (Fernet, with a key
  the worker processes hold and Redis does not, handed in as ``key``), so anything that
  reads Redis (Flower, a dump) sees no personal data. An item that no longer decrypts (the
  key changed) is still told, by the record's Moment id.

Its Redis keys: ``worker.store.keys`` (notices).
"""
from __future__ import annotations

import base64
import json
import logging
import time
from email.message import EmailMessage
from functools import cached_property
from typing import Any, Callable

import redis
from cryptography.fernet import Fernet, InvalidToken
from redis.exceptions import LockError

from worker.config.integrations import Integration
from worker.config.settings import Settings
from worker.notices import templates
from worker.notices.mail import make_email
from worker.store.keys import Keys
from worker.store.records import DeadLetter, DeadLetters

log = logging.getLogger(__name__)



class Notices:
    """Given what it uses: the dead letters (to mark them told), ``send_email``,
    ``publish_digest(integration_id, countdown)`` to schedule a digest's send, and ``key()``:
    the 32 bytes that encrypt the collected items (asked for when an item is first kept or
    read, so a process that only counts them needs no key)."""

    def __init__(self, r: redis.Redis, keys: Keys, settings: Settings, dead_letters: DeadLetters, *,
                 send_email: Callable[[EmailMessage], None], publish_digest: Callable[[str, float], None],
                 key: Callable[[], bytes]):
        self.redis, self.keys, self.settings, self.dead_letters = r, keys, settings, dead_letters
        self._send_email, self._publish_digest, self._key_source = send_email, publish_digest, key

    @cached_property
    def _fernet(self) -> Fernet:
        return Fernet(base64.urlsafe_b64encode(self._key_source()))

    def _seal(self, item: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(item).encode()).decode()

    def _open(self, integration: Integration, field: str, raw: str) -> dict[str, Any]:
        """A collected item; one that does not decrypt is named by its Moment id."""
        try:
            return json.loads(self._fernet.decrypt(raw.encode()))
        except (InvalidToken, ValueError):
            lang, (data_type, _, record_id) = integration.language, field.partition(":")
            log.warning("%s: a collected failure notice (%s) could not be decrypted (the key changed); it is "
                        "told by its Moment id", integration.id, field)
            what, todo = templates.problem(lang, Exception(), "unexpected", "an unexpected error in the integration")
            record = templates.record_name(lang, data_type, {"moment_id": record_id})
            return {"field": field, "data_type": data_type, "group": "unreadable", "what": what, "todo": todo,
                    "record": record, "at": 0, "body": templates.failure_body(
                        lang, integration.moment_company, record, what, todo, None, None)}

    def _key(self, name: str, integration_id: str) -> str:
        return self.keys.notice(name, integration_id)

    def failure(self, integration: Integration, letter: DeadLetter, item: dict[str, Any]) -> None:
        """Tell the company about one failed record: now if no window is open, else in the
        window's digest. Never raises: the dead letter is kept whatever happens here."""
        settings = self.settings
        window = max(1, int(settings.digest_window))
        item = {**item, "at": time.time(), "field": letter.field}
        try:
            if self.redis.set(self._key("notice-window", integration.id), "1", nx=True, ex=window):
                lang = integration.language
                msg = make_email(settings, integration.notify_email,
                                 templates.failure_subject(lang, letter.data_type, item.get("number")),
                                 item["body"])
                try:
                    self._send_email(msg)
                except Exception as exc:   # the mail server is away: the digest sends it later
                    log.error("%s %s: could not send the failure email (%s); it goes with the next digest",
                              integration.id, letter.what, type(exc).__name__)
                else:
                    self.dead_letters.mark_notified(letter)
                    return
            self.redis.hset(self._key("digest", integration.id), letter.field, self._seal(item))
            self.schedule(integration.id)
        except Exception:
            log.exception("%s %s: the failure notice could not be prepared; the dead letter is kept",
                          integration.id, letter.what)

    def schedule(self, integration_id: str, countdown: float | None = None) -> None:
        """Make sure one digest send is due: at the end of the open window (or in
        ``countdown`` seconds)."""
        if countdown is None:
            ttl = self.redis.ttl(self._key("notice-window", integration_id))
            countdown = max(1, ttl if ttl and ttl > 0 else 1)
        hold = int(countdown) + 300        # a lost send message frees the mark by itself
        if self.redis.set(self._key("digest-due", integration_id), "1", nx=True, ex=hold):
            self._publish_digest(integration_id, countdown)

    def pending(self, integration_id: str) -> int:
        return self.redis.hlen(self._key("digest", integration_id))

    def collected(self, integration_id: str) -> set[str]:
        """The dead letters waiting in the next digest."""
        return set(self.redis.hkeys(self._key("digest", integration_id)))

    def send_digest(self, integration: Integration) -> int:
        """Send what was collected as one email; returns how many records it named. Raises
        when the mail server did not take it (the items stay for the next try)."""
        # one sender at a time (a send message can be delivered twice)
        lock = self.redis.lock(self._key("digest-lock", integration.id), timeout=120, blocking_timeout=0)
        if not lock.acquire():
            return 0
        try:
            return self._send_digest(integration)
        finally:
            try:
                lock.release()
            except LockError:
                pass

    def _send_digest(self, integration: Integration) -> int:
        settings = self.settings
        key = self._key("digest", integration.id)
        self.redis.delete(self._key("digest-due", integration.id))
        raw = self.redis.hgetall(key)
        if not raw:
            return 0
        lang = integration.language
        items = [self._open(integration, field, value) for field, value in raw.items()]
        if len(items) == 1:
            [item] = items
            subject = templates.failure_subject(lang, item["data_type"], item.get("number"))
            body = item["body"]
        else:
            subject = templates.digest_subject(lang, len(items))
            body = templates.digest_body(lang, integration.moment_company,
                                         max(1, round(settings.digest_window / 60)), items)
        self._send_email(make_email(settings, integration.notify_email, subject, body))
        # sent: forget exactly what was sent (new items may have come meanwhile), open a window
        self.redis.hdel(key, *raw.keys())
        self.redis.set(self._key("notice-window", integration.id), "1", ex=max(1, int(settings.digest_window)))
        self.dead_letters.mark_notified_fields(integration.id, [item["field"] for item in items])
        groups = sorted({i["group"] for i in items})
        log.info("%s: one email for %d failed records (%s)", integration.id, len(items), ", ".join(groups))
        if self.pending(integration.id):
            self.schedule(integration.id)
        return len(items)
