"""The webhook receiver: Moment's change notifications in, sync tasks out.

    POST /webhooks/{integration_id}/{secret}          (secret in the path)
    POST /webhooks/{integration_id}                   (secret in the X-Webhook-Secret header)
    GET  /healthz

Answers 202 only once the sync is queued (or the change was folded into one already
queued, or the integration does not transfer that data type); 503 when Redis cannot take
it, so Moment can send it again; a 4xx naming the problem for a bad request. A wrong
secret and an unknown integration get the same 404. No calls to Moment or SpareBank 1
are made here; the receiver answers in milliseconds.

Run it with ``moment-sb1 webhooks`` (waitress). It does not log request paths, which
carry the secret.
"""
from __future__ import annotations

import hmac
import json
import logging
import time

from flask import Flask, jsonify, request
from marshmallow import ValidationError

from schemas.webhooks import WEBHOOK
from .producer import enqueue
from .runtime import Runtime, get_runtime

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

    @app.post("/webhooks/<integration_id>/<secret>")
    def hook_with_path_secret(integration_id: str, secret: str):
        return receive(integration_id, secret)

    @app.post("/webhooks/<integration_id>")
    def hook_with_header_secret(integration_id: str):
        return receive(integration_id, request.headers.get(SECRET_HEADER))

    def receive(integration_id: str, secret: str | None):
        started = time.perf_counter()
        integration = authenticate(integration_id, secret)
        if integration is None:
            log.warning("webhook refused: unknown integration or wrong secret")
            return _error(404, "not found")
        if request.mimetype != "application/json":
            return _error(415, f"Content-Type must be application/json, not {request.mimetype or 'missing'}")
        if request.content_length is None and not request.headers.get("Transfer-Encoding"):
            return _error(411, "Content-Length is required")
        raw = request.get_data(cache=False)         # raises 413 past MAX_CONTENT_LENGTH
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: nested too deep
            return _error(400, f"the body is not valid JSON: {err}")
        if not isinstance(payload, dict):
            return _error(400, "the body must be a JSON object")
        try:
            event = WEBHOOK.load(payload)
        except ValidationError as err:
            return _error(400, "the body is not a Moment webhook", problems=err.normalized_messages())
        if not integration.wants(event.data_type):
            log.info("webhook %s %s %s for %s ignored: the integration does not transfer %s",
                     event.event, event.data_type, event.record_id, integration.id, event.data_type)
            return jsonify({"status": "ignored",
                            "reason": f"this integration does not transfer {event.data_type}"}), 202
        try:
            task_id = enqueue(integration.id, event.data_type, event.record_id, runtime=rt())
        except Exception as err:  # Redis away: say so, so that the sender tries again
            log.error("webhook for %s %s %s not queued: %s", integration.id, event.data_type,
                      event.record_id, type(err).__name__)
            resp = _error(503, "the queue is not available; send the webhook again later")
            resp.headers["Retry-After"] = "5"
            return resp
        log.info("webhook %s %s %s for %s %s in %.1f ms", event.event, event.data_type, event.record_id,
                 integration.id, "queued" if task_id else "folded into a queued sync",
                 (time.perf_counter() - started) * 1000)
        body = {"status": "queued" if task_id else "coalesced", "data_type": event.data_type,
                "id": event.record_id}
        return jsonify(body), 202

    @app.errorhandler(413)
    def too_large(_):
        return _error(413, f"the body is larger than {rt().settings.webhook_max_body} bytes")

    @app.errorhandler(404)
    def not_found(_):
        return _error(404, "not found")

    @app.errorhandler(405)
    def wrong_method(_):
        resp = _error(405, "use POST")
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


def serve(host: str, port: int, threads: int = 16) -> None:
    """Serve the receiver with waitress (no access log: paths carry secrets)."""
    from waitress import serve as waitress_serve
    runtime = get_runtime()
    runtime.integrations                # refuse to start on an invalid integrations file
    waitress_serve(create_app(runtime), host=host, port=port, threads=threads, ident="moment-sb1")
