"""The console's pages: the fleet, a company, a record's history, the audit log; and its
actions (pause, resume, replay), each for operators only and written to the audit log."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timezone
from urllib.parse import urlsplit

from flask import abort, current_app, flash, g, redirect, render_template, request, session, url_for

from schemas.datatypes import DATA_TYPES
from worker.console import actions
from worker.console.guard import login_required, operator_required
from worker.store.audit import WHY_MAX, AuditLog
from worker.store.fleet import fleet
from worker.store.records import DeadLetter, same_problem


def _rt():
    return current_app.extensions["msb1"]["rt"]


def when(ts: float | None) -> str:
    return "never" if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def group_id(d: DeadLetter) -> str:
    """A dead letter's problem, as a short stable id (its type, kind and error without the request id)."""
    return hashlib.sha256(f"{d.data_type}|{d.kind}|{same_problem(d.error)}".encode()).hexdigest()[:12]


def matches(d: DeadLetter, q: str, by_number: set[int]) -> bool:
    """A dead letter asked for by Moment id or by its (valid) number."""
    return q == str(d.record_id) or d.what.rsplit(" ", 1)[-1] == q or d.record_id in by_number


def _by_number(rt, integration, q: str) -> set[int]:
    """The Moment ids last synced under number ``q``, of any of the company's types."""
    return {rid for t in integration.data_types if (rid := rt.history.by_number(integration.id, t, q)) is not None}


def _integration(integration_id: str):
    integration = _rt().integrations.get(integration_id)
    if integration is None:
        abort(404, f"no integration {integration_id!r}")
    return integration


def _reason() -> str:
    why = " ".join(request.form.get("reason", "").split())[:WHY_MAX]
    if not why:
        abort(400, "say why (the reason goes to the audit log)")
    return why


def register(app) -> None:
    app.jinja_env.filters.update(when=when, ago=ago)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.route("/login", methods=["GET", "POST"])
    def login():
        error = None
        if request.method == "POST":
            name, password = request.form.get("name", "").strip(), request.form.get("password", "")
            throttle, users = app.extensions["msb1"]["throttle"], app.extensions["msb1"]["users"]
            user = None if throttle.locked(name) else users.login(name, password)
            if user is None:
                throttle.failed(name)
                error = "wrong name or password (or too many tries: wait five minutes)"
            else:
                session.clear()                      # a new session: nothing carried over from before the login
                session.permanent = True
                session.update(user=user.name, csrf=secrets.token_urlsafe(32))
                return redirect(_local(request.args.get("next") or "") or url_for("home"))
        return render_template("login.html", error=error), 401 if error else 200

    @app.post("/logout")
    def logout():
        session.clear()
        return redirect(url_for("login"))

    @app.get("/")
    @login_required
    def home():
        rt = _rt()
        rows = fleet(rt, rt.integrations.values())
        problems_only = request.args.get("problems") == "1"
        shown = [r for r in rows if r.problems] if problems_only else rows
        return render_template("fleet.html", rows=shown, total=len(rows), needing=sum(1 for r in rows if r.problems),
                               problems_only=problems_only, integrations=sorted(rt.integrations),
                               data_types=list(DATA_TYPES))

    @app.get("/company/<integration_id>")
    @login_required
    def company(integration_id: str):
        rt = _rt()
        integration = _integration(integration_id)
        [row] = fleet(rt, [integration])
        letters = rt.dead_letters.list(integration.id)
        q = request.args.get("q", "").strip()
        if q:
            letters = [d for d in letters if matches(d, q, _by_number(rt, integration, q))]
        groups: dict[str, dict] = {}
        for d in sorted(letters, key=lambda d: -d.last_failed_at):
            grp = groups.setdefault(group_id(d), {"id": group_id(d), "data_type": d.data_type, "kind": d.kind,
                                                  "error": same_problem(d.error), "letters": []})
            grp["letters"].append(d)
        stats = rt.stats.get(integration.id)
        counters = []
        for k, v in sorted(stats.items()):
            if ":last_" not in k and ":" in k:
                dt, outcome = k.split(":", 1)
                last = stats.get(f"{dt}:last_{outcome}_at")
                counters.append((dt, outcome, int(v), float(last) if last else None))
        return render_template("company.html", integration=integration, row=row, q=q,
                               groups=sorted(groups.values(), key=lambda grp: -len(grp["letters"])),
                               runs=rt.runs.unfinished(integration.id), counters=counters,
                               audit=AuditLog(rt.redis, rt.keys).read(integration.id, 20))

    @app.post("/company/<integration_id>/pause")
    @operator_required
    def pause(integration_id: str):
        integration = _integration(integration_id)
        flash(actions.pause(_rt(), integration.id, g.user.name, _reason()))
        return redirect(url_for("company", integration_id=integration.id))

    @app.post("/company/<integration_id>/resume")
    @operator_required
    def resume(integration_id: str):
        integration = _integration(integration_id)
        flash(actions.resume(_rt(), integration, g.user.name, _reason()))
        return redirect(url_for("company", integration_id=integration.id))

    @app.post("/company/<integration_id>/replay")
    @operator_required
    def replay(integration_id: str):
        rt = _rt()
        integration = _integration(integration_id)
        why = _reason()
        wanted_group, wanted_record = request.form.get("group"), request.form.get("record")
        letters = [d for d in rt.dead_letters.list(integration.id)
                   if (wanted_group and group_id(d) == wanted_group) or (wanted_record and d.field == wanted_record)]
        q = request.form.get("q", "").strip()
        if q:                           # the group as the page showed it: only the records found
            letters = [d for d in letters if matches(d, q, _by_number(rt, integration, q))]
        if not letters:
            flash("nothing to replay: those dead letters are gone (replayed or purged meanwhile)")
        else:
            flash(actions.replay(rt, integration.id, letters, g.user.name, why))
        return redirect(url_for("company", integration_id=integration.id))

    @app.get("/record")
    @login_required
    def record():
        rt = _rt()
        integration_id = request.args.get("integration", "")
        data_type = request.args.get("data_type", "customers")
        q = request.args.get("q", "").strip()
        integration = _integration(integration_id)
        if data_type not in DATA_TYPES:
            abort(404, f"no data type {data_type!r}")
        record_id = rt.history.by_number(integration.id, data_type, q) if q else None
        if record_id is None and q.isdigit():
            record_id = int(q)
        entries = rt.history.get(integration.id, data_type, record_id) if record_id is not None else []
        letter = next((d for d in rt.dead_letters.list(integration.id)
                       if record_id is not None and d.field == f"{data_type}:{record_id}"), None)
        return render_template("record.html", integration=integration, data_type=data_type, q=q,
                               record_id=record_id, entries=entries, letter=letter,
                               history_days=rt.settings.history_days)

    @app.get("/audit")
    @login_required
    def audit():
        rt = _rt()
        integration_id = request.args.get("integration") or None
        return render_template("audit.html", entries=AuditLog(rt.redis, rt.keys).read(integration_id, 500),
                               integration_id=integration_id, integrations=sorted(rt.integrations))

    @app.errorhandler(400)
    @app.errorhandler(403)
    @app.errorhandler(404)
    def refused(err):
        return render_template("error.html", code=err.code, message=err.description), err.code


def _local(target: str) -> str | None:
    """``next`` after a login only when it is a path of this site: no scheme, no host, and no
    character a browser or werkzeug would drop or turn (``/\t/evil.example`` becomes
    ``//evil.example``)."""
    if not target.startswith("/") or any(ch in target for ch in "\\") or not target.isprintable():
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//") or " " in target:
        return None
    return target
