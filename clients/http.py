"""One place that turns a `requests` call into a parsed body or a typed error."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests

from errors import AuthError, DuplicateCreate, NotFound, PermanentError, RecordInvalid, TransientError
from .retry import is_retriable_status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 30.0

    def as_tuple(self) -> tuple[float, float]:
        return (self.connect, self.read)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def validation_messages(body: Any) -> list[str]:
    """Readable messages out of the platform's error bodies.

    A 400 carries ``_validationResults`` (lists of ``{Message, EntityType, ...}``) nested
    anywhere in the entity, sometimes a top-level ``Message`` or ``Messages``.
    """
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_validationResults":
                    collect(value)
                elif key in ("Message", "message") and isinstance(value, str):
                    found.append(value)
                elif key in ("Messages", "messages"):
                    collect(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    def collect(node: Any) -> None:
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, dict):
            msg = node.get("Message") or node.get("message")
            if isinstance(msg, str):
                prop = node.get("PropertyName")
                found.append(f"{prop}: {msg}" if prop else msg)
            else:
                for value in node.values():
                    collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)

    walk(body)
    unique: list[str] = []
    for msg in found:
        if msg not in unique:
            unique.append(msg)
    return unique


DUPLICATE_FIELD = "_createguid"


def validation_fields(body: Any) -> list[str]:
    """The names of the fields a 400 complains about (``PropertyName`` and the keys of
    ``_validationResults``): our words to log, unlike the messages, which may quote values."""
    found: list[str] = []

    def add(name: Any) -> None:
        if isinstance(name, str) and name and len(name) <= 80 and name.replace(".", "").replace("_", "").isalnum() \
                and name not in found:
            found.append(name)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_validationResults" and isinstance(value, dict):
                    for prop in value:
                        add(prop)
                if key == "PropertyName":
                    add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(body)
    return found[:10]


def _path(url: str) -> str:
    return urlsplit(url).path


def send(session: requests.Session, method: str, url: str, *, service: str,
         timeouts: Timeouts, **kwargs: Any) -> requests.Response:
    """Make one HTTP call; return the response when it is a 2xx, else raise a typed error.

    The error message names the service, method, path and status, and the platform's
    validation messages; never the request body, query values or headers.
    """
    where = f"{service} {method} {_path(url)}"
    try:
        resp = session.request(method, url, timeout=timeouts.as_tuple(), **kwargs)
    except requests.Timeout as exc:
        raise TransientError(f"{where}: timed out", service=service) from exc
    except requests.ConnectionError as exc:
        raise TransientError(f"{where}: could not connect", service=service) from exc
    if resp.status_code < 400:
        return resp
    request_id = resp.headers.get("X-Request-Id") or resp.headers.get("Request-Id")
    status = resp.status_code
    try:
        body = resp.json()
    except ValueError:
        body = None
    details = "; ".join(validation_messages(body))[:500]
    props = validation_fields(body)
    msg = f"{where}: HTTP {status}" + (f" (fields: {', '.join(props)})" if props else "")
    common = dict(status=status, service=service, request_id=request_id, body=body, detail=details or None,
                  fields=props)
    if status == 429 or is_retriable_status(status):
        raise TransientError(msg, retry_after=parse_retry_after(resp.headers.get("Retry-After")), **common)
    if status in (401, 403):
        raise AuthError(msg, **common)
    if status == 404:
        raise NotFound(msg, **common)
    if status in (400, 409, 422):
        # the platform's answer to a _createguid it has seen: the create happened before
        raise (DuplicateCreate if DUPLICATE_FIELD in props else RecordInvalid)(msg, **common)
    raise PermanentError(msg, **common)
