"""Logging and Sentry, set up so that neither carries secrets nor personal data.

Sentry is a third-party processor: it gets what our logs get and no more. Our own log lines
and exception messages name a record by type, Moment id and (a valid) number, and a
refused value by its shape (``schemas.text.shape``). Sentry is told not to collect local
variables, request bodies or PII, and ``scrub_event`` strips what an integration might
still add (HTTP breadcrumb data with query strings, request headers) and the message of
any exception that is not one of ours (``errors``: their ``str()`` is written to be safe;
another library's may quote any value it was given, a ``ValueError`` the text it could
not parse).
"""
from __future__ import annotations

import logging
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.logging import LoggingIntegration

from worker.config.settings import Settings

log = logging.getLogger(__name__)

_SCRUB_HEADERS = {"authorization", "companykey", "cookie", "proxy-authorization"}
# the module of our own error tree (errors/): the only exceptions whose message Sentry gets
_OUR_ERRORS = "errors"
WITHHELD = "(message withheld: it may quote a value)"


def scrub_event(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)
        request.pop("cookies", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            for name in list(headers):
                if name.lower() in _SCRUB_HEADERS:
                    headers[name] = "[Filtered]"
    for exc in (event.get("exception") or {}).get("values") or []:
        if exc.get("module") != _OUR_ERRORS and exc.get("value"):
            exc["value"] = WITHHELD
        for frame in (exc.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    crumbs = event.get("breadcrumbs")
    values = crumbs.get("values") if isinstance(crumbs, dict) else crumbs
    for crumb in values or []:
        data = crumb.get("data")
        if isinstance(data, dict):
            data.pop("http.query", None)
            data.pop("http.fragment", None)
    event.pop("extra", None)
    return event


def init_sentry(settings: Settings) -> bool:
    if not settings.sentry_dsn:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        # error logs become breadcrumbs, not events: report_failure sends the one event
        integrations=[LoggingIntegration(level=logging.INFO, event_level=None)],
        # no sentry-trace / baggage headers on our calls to Moment and SpareBank 1
        trace_propagation_targets=[],
    )
    return True


def report_failure(error: BaseException, *, integration_id: str, data_type: str, record_id: int,
                   kind: str) -> None:
    """One Sentry event for a record that could not be transferred, grouped by integration,
    data type and kind of problem (not by record): one issue with a count per problem."""
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("integration", integration_id)
        scope.set_tag("data_type", data_type)
        scope.set_tag("failure_kind", kind)
        scope.set_context("record", {"moment_id": record_id})
        scope.fingerprint = ["record-failed", integration_id, data_type, kind]
        sentry_sdk.capture_exception(error)


def report_outage(subject: str, *, service: str, host: str, reason: str, state: str, since: str,
                  integrations: list[str], later: list[str] | tuple = ()) -> None:
    """One Sentry event for a fleet outage's beginning or end (``state``: open, closed or
    brief), whatever the number of integrations it stops: they are named in its context."""
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("service", service)
        scope.set_tag("host", host)
        scope.set_tag("circuit", "open" if state == "open" else "closed")
        scope.set_tag("integrations", len(integrations))
        scope.set_context("outage", {"service": service, "host": host, "reason": reason, "since": since,
                                     "integrations": sorted(integrations), "stopped_later": sorted(later)})
        scope.fingerprint = ["outage", service, host, reason, state]
        sentry_sdk.capture_message(subject, level="error" if state == "open" else "info")
