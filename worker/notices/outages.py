"""One outage, one notice: the operator's email and Sentry event of an outage that stops
many companies at once.

A company's circuits (``worker.circuit``) are its own, but what they wait for is often
shared: one SpareBank 1 API host, one Moment, serving every company. So each company
circuit that opens joins the *fleet outage* of its service, host and reason (``outage`` or
``access``), kept in Redis across every worker process, and the operator hears of the
outage, not of each company:

* **opened**: one email and one Sentry event, naming the companies out so far. It is sent
  by the first probe that finds the service still out once the outage is
  ``collect`` seconds old (half a probe interval, at least 1 s), so companies whose
  circuits open together are one notice, and a blip that is over at the first probes
  is not announced as an outage;
* **closed**: one email and one event when the last company's circuit closes, naming
  every company it stopped, with those that joined after the opening notice apart;
* **brief**: an outage over before its opening notice was due is one email and one event
  in all.

Each step is one Lua script, so exactly one process sends each notice, however many
circuits open, probe and close at once. A company's own notices stay with its circuit.

Its Redis keys: ``worker.store.keys`` (fleet outages).
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from email.message import EmailMessage
from typing import Callable

import redis

from worker.config.settings import Settings
from worker.notices import templates
from worker.notices.mail import mail_operator
from worker.ops.sentry import report_outage
from worker.store.keys import Keys

log = logging.getLogger(__name__)

# KEYS: the outage, its companies, those still out; ARGV: company, now, last error
JOIN = """
redis.call('HSETNX', KEYS[1], 'since', ARGV[2])
redis.call('HSET', KEYS[1], 'error', ARGV[3])
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
return redis.call('SADD', KEYS[3], ARGV[1])
"""
# KEYS: the outage, its companies; ARGV: now, the collection window. Marks it told (once).
DUE = """
local since = redis.call('HGET', KEYS[1], 'since')
if not since or redis.call('HEXISTS', KEYS[1], 'told') == 1 then return false end
if tonumber(ARGV[1]) < tonumber(since) + tonumber(ARGV[2]) then return false end
redis.call('HSET', KEYS[1], 'told', ARGV[1])
return {since, redis.call('HGET', KEYS[1], 'error') or '', redis.call('HGETALL', KEYS[2])}
"""
# KEYS: the outage, its companies, those still out; ARGV: company. The last one out ends it.
LEAVE = """
if redis.call('SREM', KEYS[3], ARGV[1]) == 0 then return false end
if redis.call('SCARD', KEYS[3]) > 0 then return false end
local facts = redis.call('HGETALL', KEYS[1])
local companies = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return {facts, companies}
"""


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%d.%m.%Y %H:%M UTC")


def _pairs(flat: list) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2]))


class Outages:
    """Given ``send_email`` and ``circuit_open(company, service)`` (whether the company's
    circuit still exists: a circuit removed by hand leaves its outage too)."""

    def __init__(self, r: redis.Redis, keys: Keys, settings: Settings, *,
                 send_email: Callable[[EmailMessage], None], circuit_open: Callable[[str, str], bool]):
        self.redis, self.keys, self.settings = r, keys, settings
        self._send_email, self._circuit_open = send_email, circuit_open
        self._join, self._due, self._leave = (r.register_script(s) for s in (JOIN, DUE, LEAVE))

    @property
    def collect(self) -> float:
        """How long an outage collects companies before its opening notice may go out."""
        return max(1.0, self.settings.circuit_probe_interval / 2)

    def joined(self, company: str, service: str, reason: str, host: str, error: str) -> None:
        """A company's circuit opened: it joins the outage (which begins if it is the first)."""
        keys = self.keys.outage(service, reason, host)
        self._join(keys=keys, args=[company, f"{time.time():.3f}", error[:300]])
        self.still_out(service, reason, host)

    def still_out(self, service: str, reason: str, host: str) -> None:
        """A probe found the service still out (or one more company joined): the opening
        notice goes out now if it is due and no one sent it."""
        keys = self.keys.outage(service, reason, host)
        due = self._due(keys=keys[:2], args=[f"{time.time():.3f}", self.collect])
        if not due:
            return
        since, error, companies = due
        self._sweep(service, reason, host, keys)
        first = sorted(_pairs(companies))
        log.error("outage: %s at %s (%s) for %d integrations: %s", service, host, reason, len(first), error)
        self._tell("open", service, reason, host, float(since), error, first)

    def left(self, company: str, service: str, reason: str, host: str) -> None:
        """A company's circuit closed: the last one out ends the outage (and tells)."""
        ended = self._leave(keys=self.keys.outage(service, reason, host), args=[company])
        if not ended:
            return
        facts, companies = _pairs(ended[0]), _pairs(ended[1])
        told = float(facts["told"]) if "told" in facts else None
        first = sorted(c for c, at in companies.items() if told is not None and float(at) <= told)
        later = sorted(c for c in companies if c not in first)
        log.warning("outage over: %s at %s (%s) for %d integrations", service, host, reason, len(companies))
        self._tell("closed" if told is not None else "brief", service, reason, host, float(facts.get("since", 0)),
                   facts.get("error", ""), first, later, until=time.time())

    def _sweep(self, service: str, reason: str, host: str, keys: tuple[str, str, str]) -> None:
        """A company whose circuit is gone (removed by hand) leaves the outage, so the
        outage ends when the circuits do."""
        for company in self.redis.smembers(keys[2]):
            if not self._circuit_open(company, service):
                self.left(company, service, reason, host)

    def _tell(self, state: str, service: str, reason: str, host: str, since: float, error: str,
              first: list[str], later: list[str] = (), until: float | None = None) -> None:
        subject, body = templates.fleet_operator_notice(service, host, reason, state, _when(since), error, first,
                                                        later, _when(until) if until else None)
        try:
            report_outage(subject, service=service, host=host, reason=reason, state=state, since=_when(since),
                          integrations=[*first, *later], later=later)
        except Exception:
            log.exception("could not report the outage to Sentry")
        mail_operator(self.settings, self._send_email, subject, body, "the outage")
