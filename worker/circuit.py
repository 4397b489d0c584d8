"""Circuits: an outage is one notice and a wait, not thousands of failed records.

One circuit per integration and service (Moment's API, SpareBank 1's API), and one for
the identity server that every integration shares. It opens

* after ``MSB1_CIRCUIT_THRESHOLD`` syncs in a row failed on it with a transient error,
  with no sync succeeding in between, within ``MSB1_CIRCUIT_WINDOW`` seconds (an outage;
  a steady share of passing errors, 10 % 503s say, does not open it);
* at once when a record's retries run out, or its access is refused, and a probe of the
  service fails too: the service, not the record, is the problem (an outage; the
  integrator's own credentials refused by the identity server; or the company's access,
  its company key or Moment API key, refused).

While it is open, the syncs of that integration wait: each is put back on the queue for
``MSB1_CIRCUIT_PROBE_INTERVAL`` seconds, spending none of its tries and never ending in a
dead letter because of the outage. One of them at a time probes the service with a cheap
read; when that answers, the circuit closes and the waiting syncs run.

Notices, each once: the operator (Sentry and ``MSB1_OPERATOR_EMAIL``) when an outage opens
and when it is over, one per service and host however many companies it stops (a company's
circuit joins the fleet outage of its service, host and reason: ``worker.notices.outages``;
the identity server's one circuit is its own outage); the company when its own access was
refused (at once), or when an outage of its services lasts longer than
``MSB1_OUTAGE_NOTICE_AFTER``, and then when it is over. Credential problems of the
integrator are the operator's alone.

Its Redis keys: ``worker.store.keys`` (outages).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from typing import Any, Callable
from urllib.parse import urlsplit

import redis
import sentry_sdk

from errors import AuthError, IntegrationError
from worker.config.integrations import Integration
from worker.config.settings import Settings
from worker.notices import templates
from worker.notices.mail import mail_operator, make_email
from worker.notices.outages import Outages
from worker.store.keys import Keys

log = logging.getLogger(__name__)

# the service named in an error → the circuit's service
SERVICES = {"Moment": "moment", "SpareBank 1 Regnskap": "sb1", "SpareBank 1 identity server": "identity"}
SHARED = "*"      # the identity server's circuit is every integration's


@dataclass(frozen=True)
class Circuit:
    scope: str
    service: str
    reason: str           # outage | credentials | access
    since: float
    error: str = ""

    @property
    def waiting_for(self) -> str:
        """What a waiting sync waits for, for its log line."""
        return f"{self.service} ({self.reason} since {self.since_text})"

    @property
    def since_text(self) -> str:
        return datetime.fromtimestamp(self.since, timezone.utc).strftime("%d.%m.%Y %H:%M UTC")


def service_of(exc: BaseException) -> str | None:
    return SERVICES.get(getattr(exc, "service", None) or "")


class Circuits:
    """The circuits of every integration, in Redis. Given what they use: ``integrations()``
    (the integrations by id, for a company's notice), ``probe(integration, service)`` (a
    cheap read of the service that raises when it fails) and ``send_email``."""

    def __init__(self, r: redis.Redis, keys: Keys, settings: Settings, *,
                 integrations: Callable[[], Mapping[str, Integration]],
                 probe: Callable[[Integration, str], None], send_email: Callable[[EmailMessage], None]):
        self.redis, self.keys, self.settings = r, keys, settings
        self._integrations, self._probe, self._send_email = integrations, probe, send_email
        self.outages = Outages(r, keys, settings, send_email=send_email,
                               circuit_open=lambda scope, service: bool(self.redis.exists(
                                   self._key("circuit", scope, service))))

    # --- keys and reading ------------------------------------------------------------------

    @staticmethod
    def scope(integration_id: str, service: str) -> str:
        return SHARED if service == "identity" else integration_id

    def _key(self, kind: str, scope: str, service: str) -> str:
        return self.keys.circuit(kind, scope, service)

    def host(self, scope: str, service: str) -> str:
        """The host a company's circuit waits for (its outage is that host's)."""
        integration = self._integrations().get(scope)
        if integration is None:
            return "?"
        url = integration.moment_base_url if service == "moment" else integration.sb1_base_url
        return urlsplit(url).netloc or url

    @staticmethod
    def _services(integration_id: str) -> list[tuple[str, str]]:
        return [(integration_id, "moment"), (integration_id, "sb1"), (SHARED, "identity")]

    def keys_for(self, integration_id: str) -> tuple[str, ...]:
        """The keys of the circuits a sync of this integration needs closed (each exists
        while its circuit is open)."""
        return tuple(self._key("circuit", scope, service) for scope, service in self._services(integration_id))

    def open_for(self, integration_id: str, pipe=None) -> list[Circuit] | Callable[[list], list[Circuit]]:
        """The open circuits a sync of this integration would run into. Given a pipeline,
        queue the reads on it and return how to read the answers (one round trip with
        whatever else the caller asks)."""
        keys = self._services(integration_id)
        own = pipe is None
        pipe = self.redis.pipeline(transaction=False) if own else pipe
        for scope, service in keys:
            pipe.hgetall(self._key("circuit", scope, service))

        def read(answers: list) -> list[Circuit]:
            return self._found(keys, answers)
        return read(pipe.execute()) if own else read

    @staticmethod
    def _found(keys, answers) -> list[Circuit]:
        found = []
        for (scope, service), data in zip(keys, answers):
            if data:
                found.append(Circuit(scope, service, data.get("reason", "outage"), float(data.get("since", 0)),
                                     data.get("error", "")))
        return found

    def all_open(self) -> list[dict[str, Any]]:
        """Every open circuit, for status and metrics."""
        out = []
        for key in self.redis.scan_iter(match=self.keys.open_circuits_pattern(), count=200):
            _, _, scope, service = key.rsplit(":", 3)
            data = self.redis.hgetall(key)
            if data:
                out.append({"scope": scope, "service": service, **data})
        return out

    # --- opening ----------------------------------------------------------------------------

    def succeeded(self, integration_id: str, pipe=None) -> None:
        """A sync went through: the failures in a row start over."""
        (pipe or self.redis).delete(*(self._key("circuit-fails", self.scope(integration_id, s), s)
                                      for s in ("moment", "sb1", "identity")))

    def failed(self, integration_id: str, exc: BaseException) -> Circuit | None:
        """Count a transient failure; the circuit, when it is (now) open."""
        service = service_of(exc)
        if service is None:
            return None
        scope = self.scope(integration_id, service)
        fails = self._key("circuit-fails", scope, service)
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(fails, 0, nx=True, ex=max(1, int(self.settings.circuit_window)))   # a window starts
        pipe.incr(fails)
        _, count = pipe.execute()
        if count >= self.settings.circuit_threshold:
            return self.open(scope, service, "outage", str(exc))
        existing = self.redis.hgetall(self._key("circuit", scope, service))
        return Circuit(scope, service, existing.get("reason", "outage"), float(existing["since"])) if existing else None

    def open(self, scope: str, service: str, reason: str, error: str) -> Circuit:
        """Open the circuit (only the first opener tells anyone)."""
        key = self._key("circuit", scope, service)
        now = time.time()
        if self.redis.hsetnx(key, "since", f"{now:.3f}"):
            host = "" if scope == SHARED else self.host(scope, service)
            self.redis.hset(key, mapping={"reason": reason, "error": error[:300], "host": host})
            circuit = Circuit(scope, service, reason, now, error)
            log.error("circuit open: %s for %s (%s): %s", service, scope, reason, error)
            if scope == SHARED:
                self._tell_operator(circuit, over=False)
            else:
                self.outages.joined(scope, service, reason, host, error)
            if reason == "access" and scope != SHARED:
                self._tell_company(circuit, over=False)
            return circuit
        data = self.redis.hgetall(key)
        return Circuit(scope, service, data.get("reason", reason), float(data.get("since", now)), data.get("error", ""))

    def blame(self, integration, exc: BaseException) -> Circuit | None:
        """A record failed for good (retries ran out, or access was refused): if a probe of
        the service fails too, the service is to blame and its circuit opens; else None."""
        service = service_of(exc)
        if service is None:
            return None
        if service == "identity" and isinstance(exc, AuthError):
            return self.open(SHARED, "identity", "credentials", str(exc))
        try:
            self._probe(integration, service)
        except IntegrationError as probe_exc:
            reason = "access" if isinstance(probe_exc, AuthError) else "outage"
            if service_of(probe_exc) == "identity":
                return self.open(SHARED, "identity", "credentials" if reason == "access" else "outage",
                                 str(probe_exc))
            return self.open(self.scope(integration.id, service), service, reason, str(probe_exc))
        return None

    # --- probing and closing ----------------------------------------------------------------

    def try_probe(self, integration, circuit: Circuit) -> bool:
        """Probe the service if no one else is; True when it answered (the circuit closed)."""
        probe_key = self._key("circuit-probe", circuit.scope, circuit.service)
        if not self.redis.set(probe_key, "1", nx=True, ex=max(1, int(self.settings.circuit_probe_interval))):
            return False
        try:
            self._probe(integration, circuit.service)
        except IntegrationError as exc:
            self.redis.hset(self._key("circuit", circuit.scope, circuit.service), "error", str(exc)[:300])
            log.warning("circuit probe: %s for %s still fails: %s", circuit.service, circuit.scope, exc)
            if circuit.scope != SHARED:
                self.outages.still_out(circuit.service, circuit.reason, self.host(circuit.scope, circuit.service))
            self._late_company_notice(circuit)
            return False
        self.close(circuit)
        return True

    def close(self, circuit: Circuit) -> None:
        key = self._key("circuit", circuit.scope, circuit.service)
        data = self.redis.hgetall(key)
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(key)
        pipe.delete(self._key("circuit-fails", circuit.scope, circuit.service))
        deleted, _ = pipe.execute()
        if not deleted:
            return                      # someone else closed it (and told)
        log.warning("circuit closed: %s for %s answers again (down since %s)", circuit.service, circuit.scope,
                    circuit.since_text)
        if circuit.scope == SHARED:
            self._tell_operator(circuit, over=True)
        else:
            self.outages.left(circuit.scope, circuit.service, data.get("reason", circuit.reason),
                              data.get("host") or self.host(circuit.scope, circuit.service))
        if data.get("company_told") and circuit.scope != SHARED:
            self._tell_company(circuit, over=True)

    # --- notices ----------------------------------------------------------------------------

    def _late_company_notice(self, circuit: Circuit) -> None:
        if circuit.scope == SHARED or circuit.reason != "outage":
            return
        if time.time() - circuit.since < self.settings.outage_notice_after:
            return
        self._tell_company(circuit, over=False)

    def _tell_company(self, circuit: Circuit, *, over: bool) -> None:
        key = self._key("circuit", circuit.scope, circuit.service)
        if not over and not self.redis.hsetnx(key, "company_told", "1"):
            return                      # told already
        integration = self._integrations().get(circuit.scope)
        if integration is None:
            return
        subject, body = templates.outage_notice(integration.language, integration.moment_company, circuit.service,
                                                circuit.reason, circuit.since_text, over)
        try:
            self._send_email(make_email(self.settings, integration.notify_email, subject, body))
        except Exception as exc:
            log.error("%s: could not send the %s notice (%s)", circuit.scope, "recovery" if over else "outage",
                      type(exc).__name__)
            if not over:
                self.redis.hdel(key, "company_told")      # the next probe tries again

    def _tell_operator(self, circuit: Circuit, *, over: bool) -> None:
        subject, body = templates.operator_notice(circuit.scope, circuit.service, circuit.reason,
                                                  circuit.since_text, over, circuit.error)
        try:
            with sentry_sdk.new_scope() as scope:
                scope.set_tag("integration", circuit.scope)
                scope.set_tag("service", circuit.service)
                scope.set_tag("circuit", "closed" if over else "open")
                scope.fingerprint = ["circuit", circuit.scope, circuit.service, "closed" if over else circuit.reason]
                sentry_sdk.capture_message(subject, level="info" if over else "error")
        except Exception:
            log.exception("could not report the circuit to Sentry")
        mail_operator(self.settings, self._send_email, subject, body, "the circuit")
