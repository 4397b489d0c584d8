"""What every request is checked against: the session's user and role, and where a POST
comes from (see ``worker.console.app``)."""
from __future__ import annotations

import hmac
from functools import wraps
from urllib.parse import urlsplit

from flask import abort, g, redirect, request, session, url_for


def refuse_cross_site() -> None:
    """403 for a POST from another site, or without this session's token."""
    origin = request.headers.get("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.host:
        abort(403, "refused: a request from another site")
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        abort(403, "refused: a request from another site")
    sent = request.form.get("csrf_token", "")
    if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
        abort(403, "refused: the form's token is missing or out of date (reload the page)")


def login_required(view):
    @wraps(view)
    def wrapped(*args, **kwargs):
        if g.user is None:
            session.pop("user", None)
            return redirect(url_for("login", next=request.full_path if request.method == "GET" else None))
        return view(*args, **kwargs)
    return wrapped


def operator_required(view):
    @wraps(view)
    def wrapped(*args, **kwargs):
        if g.user is None:
            abort(403, "refused: log in first")
        if not g.user.operator:
            abort(403, "refused: this needs the operator role")
        return view(*args, **kwargs)
    return wrapped
