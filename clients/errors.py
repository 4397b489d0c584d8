"""The error tree shared by both API clients and the sync tasks.

Errors are split by what to do about them:

* ``TransientError`` – try again later (connection trouble, timeouts, 429, 5xx).
* ``PermanentError`` – retrying will not help; tell a person.
  * ``AuthError`` – our credentials were refused.
  * ``RecordInvalid`` – this one record breaks a rule; skip it, tell a person.
* ``NotFound`` – the record is gone (a 404 on a single record).

``str()`` of every error is safe to log and to send to Sentry: it carries the HTTP
method, the path, the status, the platform's own validation messages and a request id,
never a request body, a secret or a customer's personal data. Text meant only for the
company's own notification email lives in ``hint`` and is never logged.
"""
from __future__ import annotations


class IntegrationError(Exception):
    retriable = False

    def __init__(self, message: str, *, status: int | None = None, service: str | None = None,
                 request_id: str | None = None, hint: str | None = None, body: object = None):
        super().__init__(message)
        self.body = body            # the parsed error body, for callers; never in str()
        self.message = message
        self.status = status
        self.service = service
        self.request_id = request_id
        self.hint = hint

    def __str__(self) -> str:
        parts = [self.message]
        if self.request_id:
            parts.append(f"(request id {self.request_id})")
        return " ".join(parts)


class TransientError(IntegrationError):
    """Try again later. ``retry_after`` (seconds) comes from a Retry-After header."""

    retriable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class PermanentError(IntegrationError):
    """Retrying will not help; a person must act."""


class AuthError(PermanentError):
    """The service refused our credentials (401/403 after a token refresh)."""


class RecordInvalid(PermanentError):
    """One record breaks a rule of the target system; the others go on."""


class NotFound(IntegrationError):
    """A single record does not exist (any more)."""
