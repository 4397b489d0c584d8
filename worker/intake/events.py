"""SpareBank 1 Regnskap's events in: a signed webhook for a customer or project the books
changed, created or deleted, turned into one queued check (``tasks.events``).

    POST /sb1/events/{integration_id}     (the receiver, ``worker.intake.receiver``)

The body is the platform's event (``EventType``, ``EntityName``, ``EntityID``, ``CompanyKey``,
...), signed with the subscription's key: ``Softrig-Signature: t=<unix>,v1=<hex>``, the hex
HMAC-SHA256 of ``t + "." + body``. The key is derived from the company's webhook secret
(``signing_key``), so the receiver holds it and nothing is kept at rest; compared in constant
time, and ``t`` must be within ``TOLERANCE`` of now (a replay later is refused).

Answers 401 for a wrong, missing or old signature (and an unknown integration: they look
the same), 400 for a body that is not an event, 202 otherwise: queued, folded into a queued
check, or ignored (another entity, a record the integration did not write). Only IDs are
queued; no call to either service is made here.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from worker.broker import publish_event_check
from worker.config.integrations import Integration
from worker.runtime import Runtime

log = logging.getLogger(__name__)

ROUTE = "/sb1/events/<integration_id>"
# the header's name: the developer guide's (its two pages name it differently)
SIGNATURE_HEADER = "Softrig-Signature"
TOLERANCE = 300                 # seconds between the signature's t and now, either way
SIGNING_KEY_INFO = b"moment-sb1/sb1-event-signing/v1"
# the platform's entity names -> our data types
ENTITIES = {"customer": "customers", "project": "projects"}
# EventType as the platform names it (assumed: Create, Update, Delete; any case)
DELETE_EVENTS = ("delete", "deleted", "d")
# a check queued for a record folds in the record's next events for this long at most
PENDING_TTL = 120
_DUMMY_KEY = "0" * 64


def signing_key(integration: Integration) -> str:
    """The subscription's signing key (64 hex digits), derived from the company's webhook
    secret: the receiver and ``events subscribe`` compute the same key, and it changes with
    the secret. None of it is stored."""
    secret = integration.secret("webhook_secret")
    if not secret:
        raise ValueError(f"{integration.id} has no webhook_secret: event plans need one (their signing key "
                         "is derived from it)")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"moment-sb1:" + integration.id.encode(),
                info=SIGNING_KEY_INFO).derive(secret.encode()).hex()


def endpoint(events_url: str, integration_id: str) -> str:
    """The company's own URL on the receiver."""
    return f"{events_url.rstrip('/')}/{integration_id}"


def sign(key: str, body: bytes, t: int | None = None) -> str:
    """The header's value for ``body`` (the sandbox signs with it too)."""
    t = int(time.time()) if t is None else t
    mac = hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def check_signature(key: str, header: str | None, body: bytes, now: float | None = None) -> str | None:
    """Why the signature is refused, or None when it is good."""
    if not header:
        return f"no {SIGNATURE_HEADER} header"
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(name, []).append(value)
    stamps = parts.get("t") or []
    if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit()) or len(stamps[0]) > 12 \
            or not parts.get("v1"):
        return f"the {SIGNATURE_HEADER} header is not t=<unix time>,v1=<signature>"
    t = int(stamps[0])
    expected = hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    good = False
    for given in parts["v1"]:
        good |= hmac.compare_digest(expected.encode(), given.strip().lower().encode())
    if not good:
        return "the signature does not match"
    if abs((time.time() if now is None else now) - t) > TOLERANCE:
        return f"the signature is older than {TOLERANCE} seconds (or from the future)"
    return None


def parse(payload: Any) -> tuple[str, int, str, str] | str:
    """(entity name, entity ID, operation "delete" or "change", company key), or why not."""
    if not isinstance(payload, dict):
        return "the body must be a JSON object"
    name, entity_id = payload.get("EntityName"), payload.get("EntityID")
    event_type, company = payload.get("EventType"), payload.get("CompanyKey")
    if not isinstance(name, str) or not name or len(name) > 100:
        return "EntityName is missing"
    if isinstance(entity_id, bool) or not isinstance(entity_id, (int, str)) or not str(entity_id).isdigit() \
            or len(str(entity_id)) > 18:
        return "EntityID must be a whole number"
    if not isinstance(event_type, str) or not event_type or len(event_type) > 40:
        return "EventType is missing"
    if not isinstance(company, str):
        return "CompanyKey is missing"
    operation = "delete" if event_type.strip().lower() in DELETE_EVENTS else "change"
    return name, int(entity_id), operation, company


def receive(rt: Runtime, integration_id: str, request) -> dict[str, Any]:
    """One event: what the receiver answers (``answer``'s arguments)."""
    integration = rt.integrations.get(integration_id)
    key = _DUMMY_KEY
    if integration is not None and integration.webhook_secret:
        key = signing_key(integration)
    raw = request.get_data(cache=False)           # raises 413 past the receiver's limit
    # checked even for an unknown integration: the two take the same time and look the same
    why = check_signature(key, request.headers.get(SIGNATURE_HEADER), raw)
    if integration is None or not integration.webhook_secret or why:
        known = integration is not None
        return dict(status=401, decision="refused", reason="signature not valid", level=logging.WARNING,
                    body={"error": "signature not valid"}, integration_id=integration_id if known else None,
                    why=why if known else "unknown integration or signature not valid", route="sb1-events")
    iid = integration.id
    try:
        event = parse(json.loads(raw))
    except (ValueError, UnicodeDecodeError, RecursionError):
        event = "the body is not valid JSON"
    if isinstance(event, str):
        return dict(status=400, decision="refused", reason=event, integration_id=iid, route="sb1-events")
    name, sb1_id, operation, company = event
    if not hmac.compare_digest(company.lower().encode(), integration.company_key.lower().encode()):
        return dict(status=400, decision="refused", reason="the event is for another company", integration_id=iid,
                    route="sb1-events")
    data_type = ENTITIES.get(name.lower())
    what = {"route": "sb1-events", "data_type": data_type, "sb1_id": sb1_id, "event": operation}

    def ignored(reason: str) -> dict[str, Any]:
        return dict(status=202, decision="ignored", reason=reason, integration_id=iid,
                    body={"status": "ignored", "reason": reason}, **what)
    if data_type is None:
        return ignored("not a customer or project")
    if not integration.wants(data_type):
        return ignored(f"this integration does not transfer {data_type}")
    try:
        owner = rt.state.owner(iid, data_type, sb1_id)
        if owner is None:
            return ignored("a record the integration did not write")
        if rt.pauses.is_paused(iid):
            return ignored("the integration is paused; the reconciliation finds the change")
        what["moment_id"] = owner
        pending = rt.keys.event_pending(iid, data_type, sb1_id)
        if not rt.redis.set(pending, "1", nx=True, ex=PENDING_TTL):
            return dict(status=202, decision="coalesced", reason="folded into a queued check", integration_id=iid,
                        body={"status": "coalesced"}, **what)
        try:
            what["task_id"] = publish_event_check(iid, data_type, owner, sb1_id, operation)
        except BaseException:
            rt.redis.delete(pending)
            raise
    except Exception as err:      # Redis away: the platform may send it again
        return dict(status=503, decision="not-queued", reason=f"the queue is not available ({type(err).__name__})",
                    integration_id=iid, body={"error": "the queue is not available"}, level=logging.ERROR, **what)
    return dict(status=202, decision="queued", reason="queued", integration_id=iid,
                body={"status": "queued"}, **what)
