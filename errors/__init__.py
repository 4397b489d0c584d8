"""The error tree shared by the API clients, the schemas' rule checks and the sync tasks.

Errors are split by what to do about them:

* ``TransientError`` – try again later (connection trouble, timeouts, 429, 5xx).
* ``PermanentError`` – retrying will not help; tell a person.
  * ``AuthError`` – our credentials were refused.
  * ``RecordInvalid`` – this one record breaks a rule; skip it, tell a person. ``fields``
    names the properties the other system complained about.
    * ``DuplicateCreate`` – the platform refused a ``_createguid`` it already has: the
      create happened before (its answer was lost); find the record instead.
* ``NotFound`` – the record is gone (a 404 on a single record).

``str()`` of every error is safe to log and to send to Sentry: it carries the HTTP
method, the path, the status, the names of the fields the other system complained about
and a request id, never a request body, a secret, a customer's personal data or the other
system's own wording (which can quote names, emails and phone numbers). What only the
company's own notification email may carry lives apart and is never logged: ``hint`` (what
to do, naming the record), ``detail`` (the other system's own messages).

``code`` and ``params`` name the problem for the notice templates (``worker.notices.templates``),
which say it in the company's language; ``str()`` stays in our own English words.
"""
from __future__ import annotations


class IntegrationError(Exception):
    retriable = False

    def __init__(self, message: str, *, status: int | None = None, service: str | None = None,
                 request_id: str | None = None, hint: str | None = None, body: object = None,
                 detail: str | None = None, code: str | None = None, params: dict | None = None,
                 fields: list[str] | None = None):
        super().__init__(message)
        self.body = body            # the parsed error body, for callers; never in str()
        self.message = message
        self.status = status
        self.service = service
        self.request_id = request_id
        self.hint = hint
        self.detail = detail        # the other system's own words: the company's email only
        self.code = code            # the problem, for the notice templates
        self.params = params or {}
        self.fields = list(fields or ())   # the properties a 400 complained about

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r}, code={self.code!r})"

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


class DuplicateCreate(RecordInvalid):
    """The platform already has an entity with this ``_createguid``: a create that happened."""


class NotFound(IntegrationError):
    """A single record does not exist (any more)."""
