"""The operator console's Flask app: sessions, roles, protection against cross-site requests,
and the headers every page carries. The pages are in ``worker.console.views``.

- A session is Flask's signed cookie (``MSB1_CONSOLE_SECRET``), HttpOnly, SameSite=Strict,
  Secure unless ``MSB1_CONSOLE_SECURE_COOKIES`` is false, valid ``MSB1_CONSOLE_SESSION_HOURS``.
  It holds the user's name and a random token, nothing else; the role is read from the users
  file at every request, so a user removed or demoted loses access at once.
- Every POST must carry the session's token (``csrf_token``) and may not come from another
  site (``Origin`` and ``Sec-Fetch-Site``, when the browser sends them); else 403.
- Every action needs the operator role (403 for a viewer, whatever the form says).
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from datetime import timedelta

from flask import Flask, g, request, session

from worker.console.auth import Users, UsersError
from worker.console.guard import refuse_cross_site

log = logging.getLogger(__name__)
MIN_SECRET = 32
COOKIE = "msb1_console"
# after this many wrong passwords for one name in LOCK_WINDOW seconds, that name waits out the window
MAX_FAILURES, LOCK_WINDOW = 10, 300.0


class ConsoleError(RuntimeError):
    """The console cannot start (said in one line)."""


def check(settings) -> Users:
    """The users, or ``ConsoleError`` naming what is missing."""
    if not settings.console_secret:
        raise ConsoleError("MSB1_CONSOLE_SECRET (or MSB1_CONSOLE_SECRET_FILE) must be set: it signs the sessions")
    if len(settings.console_secret) < MIN_SECRET:
        raise ConsoleError(f"MSB1_CONSOLE_SECRET must have at least {MIN_SECRET} characters")
    users = Users(settings.console_users_file)
    try:
        if not users.check():
            raise ConsoleError(f"{settings.console_users_file} has no user; add one with "
                               "`moment-sb1 console add-user NAME --role operator`")
    except UsersError as err:
        raise ConsoleError(str(err)) from None
    return users


class Throttle:
    """Wrong passwords per user name, in this process."""

    def __init__(self):
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def locked(self, name: str) -> bool:
        with self._lock:
            recent = [t for t in self._failures.get(name, []) if t > time.monotonic() - LOCK_WINDOW]
            self._failures[name] = recent
            return len(recent) >= MAX_FAILURES

    def failed(self, name: str) -> None:
        with self._lock:
            self._failures.setdefault(name, []).append(time.monotonic())


def create_app(rt, users: Users | None = None) -> Flask:
    settings = rt.settings
    users = users or check(settings)
    app = Flask("worker.console", root_path=__file__.rsplit("/", 1)[0])
    app.config.update(
        SECRET_KEY=settings.console_secret, SESSION_COOKIE_NAME=COOKIE, SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_SECURE=settings.console_secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.console_session_hours),
        MAX_CONTENT_LENGTH=64 * 1024, TEMPLATES_AUTO_RELOAD=False)
    app.extensions["msb1"] = {"rt": rt, "users": users, "throttle": Throttle()}

    @app.before_request
    def who_and_where():
        if request.method == "POST":
            refuse_cross_site()             # before anything is written to the session (or its cookie)
        elif "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        g.user = users.get(session["user"]) if session.get("user") else None

    @app.after_request
    def headers(resp):
        resp.headers["Content-Security-Policy"] = ("default-src 'none'; style-src 'self'; img-src 'self'; "
                                                   "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.context_processor
    def common():
        return {"user": g.get("user"), "csrf_token": session.get("csrf", "")}

    from worker.console import views
    views.register(app)
    return app


def serve(settings, host: str, port: int, say=print) -> None:
    """Serve the console with waitress (as the webhook receiver is served)."""
    from worker.intake.server import create_server
    from worker.ops.logs import configure_logging
    from worker.runtime import get_runtime
    rt = get_runtime()
    users = check(settings)
    configure_logging(settings, "console")
    rt.integrations                       # refuse to start on an invalid integrations file
    server = create_server(create_app(rt, users), request_timeout=30.0, host=host, port=port, threads=8,
                           ident="moment-sb1-console", connection_limit=100, channel_timeout=30,
                           cleanup_interval=1, asyncore_use_poll=True, expose_tracebacks=False)
    say(f"moment-sb1 console on http://{host}:{port}/ ({users.check()} user(s) in {settings.console_users_file})")
    server.run()
