"""The webhook receiver: Moment's change notifications in, sync tasks out.

    POST /webhooks/{integration_id}/{secret}          (secret in the path)
    POST /webhooks/{integration_id}                   (secret in the X-Webhook-Secret header)
    POST /sb1/events/{integration_id}                 (SpareBank 1 Regnskap's signed events: worker.intake.events)
    GET  /healthz

Its Prometheus figures name every integration, so they are never served here (where a wrong
secret and an unknown integration must look the same) but on a port of their own,
``MSB1_WEBHOOK_METRICS_PORT`` on ``MSB1_METRICS_HOST`` (this machine only by default).

Answers 202 only once the sync is queued (or the change was folded into one already
queued, or the integration does not transfer that data type); 503 when Redis cannot take
it, so Moment can send it again; a 4xx naming the problem for a bad request. A wrong
secret and an unknown integration get the same 404. No calls to Moment or SpareBank 1
are made here; the receiver answers in milliseconds.

Run it with ``moment-sb1 webhooks`` (waitress, with a deadline for each request:
``worker.intake.server``). It does not log request paths, which carry the secret.
"""
from __future__ import annotations

import hmac
import json
import logging
import time

from flask import Flask, g, jsonify, request
from marshmallow import ValidationError

from schemas.text import plain, shape
from schemas.webhooks import WEBHOOK
from worker.intake import events
from worker.intake.producer import Paused, enqueue
from worker.ops.logs import configure_logging
from worker.ops.metrics import WEBHOOKS, serve_worker_metrics
from worker.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Webhook-Secret"
_DUMMY_SECRET = "x" * 32


def _error(status: int, message: str, **extra):
    resp = jsonify({"error": message, **extra})
    resp.status_code = status
    return resp


def create_app(runtime: Runtime | None = None) -> Flask:
    app = Flask("moment-sb1-webhooks")
    # Flask would log the request path with an unhandled error; the path holds the secret
    app.log_exception = lambda exc_info: log.error("webhook receiver error: %s", exc_info[0].__name__)

    def rt() -> Runtime:
        return runtime or get_runtime()

    app.config["MAX_CONTENT_LENGTH"] = rt().settings.webhook_max_body

    def authenticate(integration_id: str, secret: str | None):
        integration = rt().integrations.get(integration_id)
        expected = (integration.webhook_secret if integration else None) or _DUMMY_SECRET
        # compare in constant time, and compare even for an unknown integration
        ok = hmac.compare_digest(expected.encode(), (secret or "").encode())
        if integration is None or not integration.webhook_secret or not ok:
            return None
        return integration

    def answer(status: int, decision: str, reason: str, integration_id: str | None = None,
               body: dict | None = None, level: int = logging.INFO, **fields):
        """One log line and one count per webhook, whatever became of it (never the path)."""
        started = g.get("started")
        ms = (time.perf_counter() - started) * 1000 if started else 0.0
        WEBHOOKS.labels(integration_id or "unknown", decision).inc()
        log.log(level, "webhook %s (%d): %s", decision, status, reason,
                extra={"decision": decision, "status": status, "duration_ms": round(ms, 2),
                       **({"integration": integration_id} if integration_id else {}), **fields})
        resp = jsonify(body if body is not None else {"error": reason})
        resp.status_code = status
        return resp

    @app.before_request
    def start_clock():
        g.started = time.perf_counter()

    @app.post("/webhooks/<integration_id>/<secret>")
    def hook_with_path_secret(integration_id: str, secret: str):
        return receive(integration_id, secret)

    @app.post("/webhooks/<integration_id>")
    def hook_with_header_secret(integration_id: str):
        return receive(integration_id, request.headers.get(SECRET_HEADER))

    def receive(integration_id: str, secret: str | None):
        integration = authenticate(integration_id, secret)
        if integration is None:
            # a configured id is named; anything else by its shape: a secret sent where the id
            # goes (a webhook URL set up the wrong way round) must not reach the log
            known = integration_id in rt().integrations
            return answer(404, "refused", "not found", level=logging.WARNING,
                          claimed=integration_id if known else f"(unknown: {shape(integration_id)})",
                          why="unknown integration or wrong secret")
        iid = integration.id
        if request.mimetype != "application/json":
            return answer(415, "refused", f"Content-Type must be application/json, not "
                          f"{plain(request.mimetype, 60) or 'missing'}", iid)
        if request.content_length is None and not request.headers.get("Transfer-Encoding"):
            return answer(411, "refused", "Content-Length is required", iid)
        raw = request.get_data(cache=False)         # raises 413 past MAX_CONTENT_LENGTH
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: nested too deep
            return answer(400, "refused", f"the body is not valid JSON: {plain(str(err), 200)}", iid)
        if not isinstance(payload, dict):
            return answer(400, "refused", "the body must be a JSON object", iid)
        try:
            event = WEBHOOK.load(payload)
        except ValidationError as err:
            problems = err.normalized_messages()
            return answer(400, "refused", "the body is not a Moment webhook", iid,
                          body={"error": "the body is not a Moment webhook", "problems": problems},
                          fields=sorted(map(str, problems)) if isinstance(problems, dict) else None)
        what = {"data_type": event.data_type, "moment_id": event.record_id, "event": event.event}
        if not integration.wants(event.data_type):
            reason = f"this integration does not transfer {event.data_type}"
            return answer(202, "ignored", reason, iid, body={"status": "ignored", "reason": reason}, **what)
        try:
            task_id = enqueue(iid, event.data_type, event.record_id, runtime=rt())
        except Paused:
            reason = "the integration is paused; the change is picked up when it is resumed"
            return answer(202, "paused", reason, iid, body={"status": "paused", "reason": reason}, **what)
        except Exception as err:  # Redis away: say so, so that the sender tries again
            resp = answer(503, "not-queued", f"the queue is not available ({type(err).__name__})", iid,
                          body={"error": "the queue is not available; send the webhook again later"},
                          level=logging.ERROR, **what)
            resp.headers["Retry-After"] = "5"
            return resp
        status = "queued" if task_id else "coalesced"
        return answer(202, status, "queued" if task_id else "folded into a queued sync", iid,
                      body={"status": status, "data_type": event.data_type, "id": event.record_id},
                      **({"task_id": task_id} if task_id else {}), **what)   # the sync's lines carry it too

    @app.post(events.ROUTE)
    def sb1_event(integration_id: str):
        """SpareBank 1 Regnskap's signed events (``worker.intake.events``)."""
        return answer(**events.receive(rt(), integration_id, request))

    @app.errorhandler(413)
    def too_large(_):
        return answer(413, "refused", f"the body is larger than {rt().settings.webhook_max_body} bytes")

    @app.errorhandler(404)
    def not_found(_):
        return answer(404, "refused", "not found")

    @app.errorhandler(405)
    def wrong_method(_):
        resp = answer(405, "refused", "use POST")
        resp.headers["Allow"] = "POST"
        return resp

    @app.get("/healthz")
    def healthz():
        try:
            rt().redis.ping()
        except Exception:
            return _error(503, "redis unavailable")
        return {"status": "ok"}

    return app


def serve(host: str, port: int, threads: int | None = None) -> None:
    """Serve the receiver with waitress: no access log (paths carry secrets), a connection
    limit, a short timeout for idle or stalled connections, a deadline for each request
    however steadily its bytes drip in, and the body limit enforced before a body is read.
    The Prometheus figures on their own port, when ``MSB1_WEBHOOK_METRICS_PORT`` is set."""
    from worker.intake.server import create_server
    runtime = get_runtime()
    settings = runtime.settings
    configure_logging(settings, "webhooks", capture_output=True)
    runtime.integrations                # refuse to start on an invalid integrations file
    server = create_server(create_app(runtime), request_timeout=settings.webhook_request_timeout,
                           host=host, port=port, threads=threads or settings.webhook_threads,
                           ident="moment-sb1", connection_limit=settings.webhook_connection_limit,
                           channel_timeout=settings.webhook_channel_timeout,
                           max_request_body_size=settings.webhook_max_body,
                           cleanup_interval=1, asyncore_use_poll=True, expose_tracebacks=False)
    serve_worker_metrics(settings.webhook_metrics_port, lambda: runtime, settings.metrics_host)
    log.info("webhook receiver on %s:%d (%d threads, at most %d connections, %gs per request)", host, port,
             threads or settings.webhook_threads, settings.webhook_connection_limit,
             settings.webhook_request_timeout)
    server.run()
