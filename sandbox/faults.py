"""Fault injection shared by the sandbox apps: latency, random 503/429, slow answers, scripts,
and a true rate limit per company (``company_limit``)."""
from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Request, Response, jsonify, request

ADMIN_PREFIX = "/_sandbox/"
# Never hit by random faults (only by scripted ones): the identity server's endpoints.
RANDOM_EXEMPT_PREFIXES = ("/connect/token", "/.well-known/")
FAULT_BODY = {"Message": "sandbox fault"}
SETTINGS = ("latency", "error_rate", "rate_limit_rate", "slow_rate", "slow_seconds", "lost_write_rate",
            "company_limit")
WRITES = ("POST", "PUT", "DELETE")
COMPANY_PATH = "/companies/"          # Moment's paths: /api/1.0/companies/<company code>/...


@dataclass
class ScriptedFault:
    """One queued answer: the next ``times`` matching requests get ``status``."""

    path_contains: str
    status: int
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    method: str | None = None
    after: bool = False  # True: run the request first, then replace its answer
    query_contains: str | None = None   # only requests whose query string holds this

    def matches(self, method: str, path: str, after: bool, query: str = "") -> bool:
        return (self.times > 0 and self.after == after and self.path_contains in path
                and (self.method is None or self.method.upper() == method.upper())
                and (self.query_contains is None or self.query_contains in query))


class Faults:
    """Thread-safe fault settings for one app; install with :meth:`install`."""

    def __init__(self, seed: int | None = None):
        self.latency: float = 0.0
        self.error_rate: float = 0.0
        self.rate_limit_rate: float = 0.0
        self.slow_rate: float = 0.0
        self.slow_seconds: float = 2.0
        # a write that happened, but whose answer is lost (replaced by a 503): the ambiguous case
        self.lost_write_rate: float = 0.0
        # calls per second per company (SpareBank 1: the CompanyKey header; Moment: the company
        # code in the path), a token bucket holding one second's calls; above it a 429 with
        # Retry-After: 1. 0: no limit
        self.company_limit: float = 0.0
        self._buckets: dict[str, tuple[float, float]] = {}     # company -> (tokens, at)
        # company -> calls answered (not a fault), calls answered 429 (the limit's or at random)
        self.passed: Counter[str] = Counter()
        self.limited: Counter[str] = Counter()
        self.injected: Counter[int] = Counter()  # status -> how many faults were answered
        self._scripts: list[ScriptedFault] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def seed(self, seed: int | None) -> None:
        with self._lock:
            self._rng.seed(seed)

    def script(self, path_contains: str, status: int, times: int = 1,
               headers: dict[str, str] | None = None, method: str | None = None,
               *, after: bool = False, query_contains: str | None = None) -> None:
        """Queue ``status`` for the next ``times`` requests whose path contains ``path_contains``.

        With ``after=True`` the request is processed first and only its answer is replaced
        (an "ambiguous" failure: the write happened but the client sees an error).
        """
        with self._lock:
            self._scripts.append(ScriptedFault(path_contains, int(status), int(times),
                                               dict(headers or {}), method, after, query_contains))

    def configure(self, **settings: Any) -> None:
        """Set any of latency, error_rate, rate_limit_rate, slow_rate, slow_seconds."""
        for name, value in settings.items():
            if name not in SETTINGS:
                raise ValueError(f"unknown fault setting {name!r}")
            value = float(value)
            if value < 0 or (name.endswith("_rate") and value > 1):
                raise ValueError(f"bad value for {name}: {value}")
            setattr(self, name, value)

    def reset(self) -> None:
        """Back to no faults at all (counters of injected faults are kept)."""
        with self._lock:
            self.latency = self.error_rate = self.rate_limit_rate = self.slow_rate = self.lost_write_rate = 0.0
            self.company_limit = 0.0
            self._buckets.clear()
            self.slow_seconds = 2.0
            self._scripts.clear()

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {**{name: getattr(self, name) for name in SETTINGS},
                    "passed": dict(self.passed), "limited": dict(self.limited),
                    "scripts": [vars(s).copy() for s in self._scripts if s.times > 0],
                    "injected": {str(k): v for k, v in self.injected.items()}}

    def _take_script(self, method: str, path: str, after: bool, query: str = "") -> ScriptedFault | None:
        with self._lock:
            for fault in self._scripts:
                if fault.matches(method, path, after, query):
                    fault.times -= 1
                    self._scripts = [s for s in self._scripts if s.times > 0]
                    self.injected[fault.status] += 1
                    return fault
        return None

    @staticmethod
    def _company(req: Request) -> str:
        company = req.headers.get("CompanyKey", "").strip()
        if not company and COMPANY_PATH in req.path:
            company = req.path.split(COMPANY_PATH, 1)[1].split("/", 1)[0].lower()
        return company

    def _over_company_limit(self, company: str) -> bool:
        """Take a token from the company's bucket; True when there is none."""
        with self._lock:
            limit, now = self.company_limit, time.monotonic()
            tokens, at = self._buckets.get(company, (limit, now))
            tokens = min(limit, tokens + (now - at) * limit)
            over = tokens < 1
            self._buckets[company] = (tokens if over else tokens - 1, now)
            if over:
                self.injected[429] += 1
        return over

    def _answer(self, status: int, headers: dict[str, str] | None = None) -> Response:
        return Response(json.dumps(FAULT_BODY), status=status, headers=headers or {},
                        mimetype="application/json")

    def apply(self, req: Request) -> Response | None:
        """Before a request: sleep, then a scripted or random fault answer (or None)."""
        path = req.path
        if path.startswith(ADMIN_PREFIX):
            return None
        if self.latency > 0:
            time.sleep(self.latency)
        scripted = self._take_script(req.method, path, after=False,
                                     query=req.query_string.decode("latin-1"))
        if scripted:
            return self._answer(scripted.status, scripted.headers)
        if path.startswith(RANDOM_EXEMPT_PREFIXES):
            return None
        company = self._company(req)
        if company and self.company_limit > 0 and self._over_company_limit(company):
            self.limited[company] += 1
            return self._answer(429, {"Retry-After": "1"})
        with self._lock:
            fault_roll, slow_roll = self._rng.random(), self._rng.random()
            status = None
            if fault_roll < self.error_rate:
                status = 503
            elif fault_roll < self.error_rate + self.rate_limit_rate:
                status = 429
            if status:
                self.injected[status] += 1
        if status == 503:
            return self._answer(503)
        if status == 429:
            self.limited[company] += 1
            return self._answer(429, {"Retry-After": "1"})
        self.passed[company] += 1
        if slow_roll < self.slow_rate:
            time.sleep(self.slow_seconds)
        return None

    def apply_after(self, req: Request, response: Response) -> Response:
        """After a request: replace the answer if an ``after=True`` script matches."""
        if req.path.startswith(ADMIN_PREFIX):
            return response
        scripted = self._take_script(req.method, req.path, after=True)
        if scripted:
            return self._answer(scripted.status, scripted.headers)
        if (self.lost_write_rate and req.method in WRITES and response.status_code < 400
                and not req.path.startswith(RANDOM_EXEMPT_PREFIXES)):
            with self._lock:
                lost = self._rng.random() < self.lost_write_rate
                if lost:
                    self.injected[-1] += 1         # -1: a lost answer
            if lost:
                return self._answer(503)
        return response

    def install(self, app: Flask) -> None:
        """Hook into ``app`` and add the ``/_sandbox/faults`` admin routes."""
        app.before_request(lambda: self.apply(request))
        app.after_request(lambda response: self.apply_after(request, response))
        app.add_url_rule("/_sandbox/faults", "sandbox_faults", self._admin_set, methods=["POST"])
        app.add_url_rule("/_sandbox/faults", "sandbox_faults_get", self._admin_get, methods=["GET"])
        app.add_url_rule("/_sandbox/reset-faults", "sandbox_reset_faults", self._admin_reset,
                         methods=["POST"])

    def _admin_get(self) -> Response:
        return jsonify(self.to_dict())

    def _admin_set(self) -> Response | tuple[Response, int]:
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            return jsonify({"Message": "expected a JSON object"}), 400
        try:
            if "seed" in body:
                self.seed(body["seed"])
            scripts = body.get("script") or []
            for spec in scripts if isinstance(scripts, list) else [scripts]:
                self.script(spec["path_contains"], spec["status"], spec.get("times", 1),
                            spec.get("headers"), spec.get("method"), after=spec.get("after", False))
            self.configure(**{k: v for k, v in body.items() if k not in ("seed", "script")})
        except (KeyError, TypeError, ValueError) as exc:
            return jsonify({"Message": f"bad fault settings: {exc}"}), 400
        return jsonify(self.to_dict())

    def _admin_reset(self) -> Response:
        self.reset()
        return jsonify(self.to_dict())
