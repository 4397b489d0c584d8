"""Deployment settings, read once from the environment (documented in `.env.example`).

The names, types and defaults are the fields of :class:`Settings` (``redis_url`` is read
from ``MSB1_REDIS_URL``); environs (marshmallow) parses and validates them, so ``maybe`` is
not a boolean and ``twenty-five`` is not a port. :func:`unknown_variables` names the
``MSB1_*`` variables that are set but mean nothing (usually a typo).
"""
from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, Mapping

from environs import EnvError
from marshmallow.validate import OneOf, Range

from clients.http import Timeouts
from clients.retry import RetryPolicy
from clients.sb1 import DEFAULT_IDENTITY_URL, TOKEN_PATH
from worker.config.env import SettingsError, _MappingEnv
from worker.config.rules import (HTTP_ONLY_TO, address_problem, http_hosts, is_loopback, one_line, quoted, redacted,
                                 text_problem, url_problem)

PREFIX = "MSB1_"
__all__ = ["Settings", "SettingsError", "secret_settings", "unknown_variables"]    # SettingsError: from .env


# validation beyond the type, by field name: every number has a range that makes sense
# (a zero timeout, a refresh margin longer than a token lives, a limit past what one
# machine serves are refused at start with the range in the message)
HOUR, DAY = 3600, 86400
_POSITIVE = {"min": 0, "min_inclusive": False}
_VALIDATE = {
    "smtp_tls": OneOf(("none", "starttls", "ssl")),
    "smtp_port": Range(1, 65535),
    "metrics_port": Range(0, 65535),
    "webhook_metrics_port": Range(0, 65535),
    "log_level": OneOf(("DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error")),
    "log_format": OneOf(("json", "text")),
    # a token lives an hour: one replaced more than half an hour early is never used
    "token_refresh_margin": Range(0, HOUR / 2),
    "retry_max_attempts": Range(1, 100),
    "retry_base_delay": Range(max=HOUR, **_POSITIVE),
    "retry_max_delay": Range(max=DAY, **_POSITIVE),
    "visibility_timeout": Range(1, DAY),
    "restore_interval": Range(1, HOUR),
    "restore_lock_timeout": Range(1, HOUR),
    "lock_timeout": Range(1, HOUR),
    "lock_wait": Range(0, 600),
    "sb1_rate_limit": Range(0, 10000),
    "sb1_host_rate_limit": Range(0, 10000),
    "moment_rate_limit": Range(0, 10000),
    "http_connect_timeout": Range(max=300, **_POSITIVE),
    "http_read_timeout": Range(max=HOUR, **_POSITIVE),
    "concurrency": Range(1, 1000),
    "bulk_queue_target": Range(2, 100000),
    "coalesce_window": Range(0, HOUR),
    "coalesce_max_per_window": Range(1, 1000),
    "pending_ttl": Range(10, 7 * DAY),
    "poll_interval": Range(1, DAY),
    "poll_overlap": Range(0, DAY),
    "poll_max_hold": Range(1, 30 * DAY),
    "webhook_max_body": Range(1024, 16 * 1024 * 1024),
    "webhook_connection_limit": Range(10, 65535),
    "webhook_channel_timeout": Range(1, HOUR),
    "webhook_request_timeout": Range(1, 300),
    "webhook_threads": Range(1, 256),
    "history_days": Range(0, 3650),
    "digest_window": Range(0, DAY),
    "circuit_threshold": Range(1, 100000),
    "circuit_window": Range(max=DAY, **_POSITIVE),
    "circuit_probe_interval": Range(max=DAY, **_POSITIVE),
    "outage_notice_after": Range(0, 30 * DAY),
    "reconcile_hour": Range(0, 23),
    "console_port": Range(1, 65535),
    "console_session_hours": Range(max=7 * 24, **_POSITIVE),
}
# text settings with a rule of their own (every text setting refuses control characters)
_KEY_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")
_URL_SETTINGS = ("sb1_identity_url", "sb1_token_url", "events_url")
_CREDENTIAL_SETTINGS = ("sb1_private_key_file", "sb1_p12_file", "sb1_client_secret")    # one of them
_ADDRESS_SETTINGS = {"smtp_sender": True, "operator_email": False}     # name: a display name allowed
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
_SENTRY_ENVIRONMENT = re.compile(r"[^\s/]+")


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "msb1"
    integrations_file: str = "integrations.toml"
    # mail
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_tls: str = "none"            # none | starttls | ssl
    smtp_sender: str = "moment-sb1@localhost"
    # Sentry
    sentry_dsn: str | None = field(default=None, repr=False)
    sentry_environment: str = "production"
    # the integrator's SpareBank 1 identity
    sb1_client_id: str | None = None
    sb1_private_key_file: str | None = None
    sb1_p12_file: str | None = None
    sb1_p12_password: str | None = field(default=None, repr=False)
    sb1_client_secret: str | None = field(default=None, repr=False)
    sb1_identity_url: str = DEFAULT_IDENTITY_URL
    sb1_token_url: str | None = None
    # hosts besides this machine that may be spoken to in plain http:// (compose's sandbox)
    insecure_http_hosts: str | None = None
    token_refresh_margin: float = 300.0
    # retries, locks, timeouts
    retry_max_attempts: int = 8
    retry_base_delay: float = 2.0
    retry_max_delay: float = 600.0
    visibility_timeout: int = 3600
    restore_interval: int = 60        # how often a worker looks for messages a dead worker held
    # kombu guards that look with a Redis lock; a worker killed while holding it would stop
    # every other worker from looking until the lock expires (kombu's default is 300 s)
    restore_lock_timeout: int = 30
    lock_timeout: float = 120.0       # a dead worker's record lock frees itself after this
    lock_wait: float = 10.0           # how long a task waits for another's lock before retrying
    # calls per second, shared by every worker (clients/ratelimit.py); 0: no limit. Neither
    # service documents a limit: these are ceilings, high enough not to brake a burst (a
    # change costs 2 SpareBank 1 calls and 1 Moment call; 50 changes/s for one company fit);
    # the limiter learns each company's real limit from the service's 429s
    sb1_rate_limit: float = 200.0      # per SpareBank 1 company (an integration may set its own)
    sb1_host_rate_limit: float = 1000.0  # per SpareBank 1 API host (per bank), all companies together
    moment_rate_limit: float = 100.0   # per Moment company (an integration may set its own)
    http_connect_timeout: float = 5.0
    http_read_timeout: float = 30.0
    concurrency: int = 32
    # Celery task events cost three Redis publishes per task; Flower switches them on
    # itself while it runs, so they stay off by default
    task_events: bool = False
    # change feed
    bulk_queue_target: int = 200      # bulk syncs on the queue at a time, refilled by company in turn
    coalesce_window: float = 0.25     # at most coalesce_max_per_window syncs of a record start in this many seconds
    coalesce_max_per_window: int = 2
    pending_ttl: int = 600            # a "sync already queued" mark expires after this
    poll_interval: float = 300.0      # the safety-net poll of Moment, per integration and type
    poll_overlap: float = 120.0       # each poll looks this far behind its cursor
    poll_max_hold: float = 86400.0    # an unfinished change holds the cursor back at most this long
    webhook_max_body: int = 65536     # bytes; a bigger body is refused before it is read
    webhook_threads: int = 16         # receiver requests served at once
    webhook_connection_limit: int = 500    # open connections the receiver keeps (idle ones included)
    webhook_channel_timeout: int = 10      # seconds before an idle or stalled connection is closed
    webhook_request_timeout: float = 10.0  # a request not received in full within this is cut
    webhook_metrics_port: int = 0     # the receiver's Prometheus endpoint, never on its webhook port (0: none)
    # the public URL of the receiver's route for SpareBank 1 Regnskap's events, without the
    # integration (…/sb1/events): `moment-sb1 events subscribe` gives each company …/{integration id}
    events_url: str | None = None
    # operations
    log_level: str = "INFO"
    log_format: str = "json"          # json (one object per line) or text
    metrics_port: int = 0             # a worker's Prometheus endpoint (0: none)
    metrics_host: str = "127.0.0.1"   # the address it listens on (0.0.0.0: every interface)
    history_days: float = 30.0        # how long `moment-sb1 history` keeps each record's syncs
    # notices
    digest_window: float = 900.0      # failures after an integration's first are collected this long
    operator_email: str | None = None  # outages and credential problems go here (and to Sentry)
    # circuits (worker/circuit.py)
    circuit_threshold: int = 10       # syncs failing in a row (no success between) that open a circuit
    circuit_window: float = 60.0
    circuit_probe_interval: float = 30.0   # how often a waiting sync tries the service again
    outage_notice_after: float = 3600.0    # the company hears of an outage only if it lasts this long
    # reconciliation (worker/reconcile): the hour (UTC) of beat's nightly run
    reconcile_hour: int = 2
    # the operator console (worker/console): signs its sessions; the users and their roles
    console_secret: str | None = field(default=None, repr=False)
    console_users_file: str = "console-users.txt"
    console_host: str = "127.0.0.1"   # the address it listens on (behind a TLS proxy or an SSH tunnel)
    console_port: int = 8080
    console_secure_cookies: bool = True    # the session cookie only over HTTPS (and http://localhost)
    console_session_hours: float = 8.0     # a login lasts this long

    @property
    def token_url(self) -> str:
        return self.sb1_token_url or self.sb1_identity_url.rstrip("/") + TOKEN_PATH

    @cached_property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.retry_max_attempts, self.retry_base_delay, self.retry_max_delay)

    @cached_property
    def timeouts(self) -> Timeouts:
        return Timeouts(self.http_connect_timeout, self.http_read_timeout)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        reader = _MappingEnv(os.environ if env is None else env, secret_settings())
        values: dict[str, Any] = {}
        strict = _strict_number_problems(reader, cls)
        for f in fields(cls):
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            parse = (reader.bool if kind.startswith("bool") else reader.int if kind.startswith("int")
                     else reader.float if kind.startswith("float") else reader.str)
            kwargs = {"validate": _VALIDATE[f.name]} if f.name in _VALIDATE else {}
            values[f.name] = parse(PREFIX + f.name.upper(), f.default, **kwargs)
        try:
            reader.seal()
        except EnvError as err:
            problems = getattr(err, "error_messages", {}) or {}
            secret = {PREFIX + f.name.upper() for f in fields(cls) if not f.repr}
            lines = [f"{name} must be {_expected(name)}"
                     + ("" if name in secret else f", got {quoted(reader._source.get(name))}")
                     for name in problems if name not in strict]
            raise SettingsError("; ".join(lines + list(strict.values())) or str(err)) from None
        if strict:
            raise SettingsError("; ".join(strict.values()))
        values["log_level"] = values["log_level"].upper()
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Every rule beyond a value's type and range; raises one ``SettingsError`` naming each
        problem (one line, problems separated by "; ")."""
        problems = self.problems()
        if problems:
            raise SettingsError("; ".join(problems))

    def problems(self) -> list[str]:
        from worker.config.redis_url import RedisTarget, RedisUrlError
        out: list[str] = []
        secret = {f.name for f in fields(self) if not f.repr}
        for f in fields(self):
            value = getattr(self, f.name)
            problem = text_problem(value) if isinstance(value, str) else None
            if isinstance(value, str) and not problem and value != value.strip():
                # a space copied in with a key or an address: a credential that never matches
                problem = "must not start or end with a space"
            if problem:
                out.append(f"{PREFIX}{f.name.upper()} {problem}" + ("" if f.name in secret else
                           f", got {quoted(redacted(value) if '@' in value else value)}"))
        if out:
            return out          # the rules below assume text without control characters
        try:
            RedisTarget.parse(self.redis_url)
        except RedisUrlError as err:
            out.append(str(err))
        if not _KEY_PREFIX.fullmatch(self.key_prefix):
            out.append(f"MSB1_KEY_PREFIX must be 1 to 63 letters, digits, '_', '.', ':' or '-', "
                       f"got {quoted(self.key_prefix)}")
        if any(not _HOST.fullmatch(host) for host in http_hosts(self.insecure_http_hosts)):
            out.append("MSB1_INSECURE_HTTP_HOSTS must be host names separated by commas, got "
                       f"{quoted(self.insecure_http_hosts)}")
        allowed = http_hosts(self.insecure_http_hosts)
        for name in _URL_SETTINGS:
            url = getattr(self, name)
            problem = url_problem(url, allowed) if url else None
            if problem:
                out.append(f"{PREFIX}{name.upper()} {problem}, got {quoted(redacted(url))}")
        for name, display_name in _ADDRESS_SETTINGS.items():
            value = getattr(self, name)
            problem = address_problem(value, display_name) if value is not None else None
            if problem:
                out.append(f"{PREFIX}{name.upper()} {problem}, got {quoted(value)}")
        if self.sentry_dsn:
            from sentry_sdk.utils import BadDsn, Dsn
            try:
                dsn = Dsn(self.sentry_dsn)
            except (BadDsn, ValueError) as err:     # its reason names the scheme or the project, never the key
                out.append(f"MSB1_SENTRY_DSN is not a Sentry DSN (https://<key>@<host>/<project>): {one_line(str(err))}")
            else:
                if dsn.scheme == "http" and not (is_loopback(dsn.host) or dsn.host.lower() in allowed):
                    out.append(f"MSB1_SENTRY_DSN must be https:// (plain http:// only to {HTTP_ONLY_TO}): "
                               "its key and every event would travel in clear")
        credentials = [PREFIX + name.upper() for name in _CREDENTIAL_SETTINGS if getattr(self, name)]
        if len(credentials) > 1:
            choices = ", ".join(PREFIX + name.upper() for name in _CREDENTIAL_SETTINGS)
            out.append(f"{' and '.join(credentials)} are set: give only one of {choices} (the first would "
                       "silently win)")
        if self.smtp_password and self.smtp_tls == "none" and not (
                is_loopback(self.smtp_host) or self.smtp_host.lower() in allowed):
            out.append("MSB1_SMTP_TLS must be starttls or ssl when MSB1_SMTP_PASSWORD is set (the password "
                       f"would travel in clear to {quoted(self.smtp_host)}); none only to {HTTP_ONLY_TO}")
        if len(self.sentry_environment) > 64 or not _SENTRY_ENVIRONMENT.fullmatch(self.sentry_environment):
            out.append("MSB1_SENTRY_ENVIRONMENT must be 1 to 64 characters without spaces or '/', "
                       f"got {quoted(self.sentry_environment)}")
        if not _listen_address(self.metrics_host):
            out.append("MSB1_METRICS_HOST must be an IP address or a host name to listen on (127.0.0.1, "
                       f"0.0.0.0), got {quoted(self.metrics_host)}")
        if not _listen_address(self.console_host):
            out.append("MSB1_CONSOLE_HOST must be an IP address or a host name to listen on (127.0.0.1, "
                       f"0.0.0.0), got {quoted(self.console_host)}")
        if any(c.isspace() for c in self.smtp_host) or not self.smtp_host:
            out.append(f"MSB1_SMTP_HOST must be a host name, got {quoted(self.smtp_host)}")
        if self.retry_base_delay > self.retry_max_delay:
            out.append("MSB1_RETRY_BASE_DELAY must not be above MSB1_RETRY_MAX_DELAY "
                       f"({self.retry_base_delay:g}s > {self.retry_max_delay:g}s)")
        if self.retry_max_delay + self.lock_wait >= self.visibility_timeout:
            out.append(f"MSB1_RETRY_MAX_DELAY ({self.retry_max_delay:g}s) plus MSB1_LOCK_WAIT must stay "
                       f"below MSB1_VISIBILITY_TIMEOUT ({self.visibility_timeout}s), or Redis would hand "
                       "a waiting task to a second worker")
        if self.poll_max_hold < self.poll_interval:
            out.append("MSB1_POLL_MAX_HOLD must be at least MSB1_POLL_INTERVAL")
        if self.circuit_probe_interval >= self.visibility_timeout:
            out.append("MSB1_CIRCUIT_PROBE_INTERVAL must stay below MSB1_VISIBILITY_TIMEOUT")
        if self.digest_window >= self.visibility_timeout:
            out.append("MSB1_DIGEST_WINDOW must stay below MSB1_VISIBILITY_TIMEOUT, or Redis would "
                       "hand the waiting digest to a second worker")
        return out


# a number as it is written in an env file: ASCII digits, a sign, a point and an exponent;
# Python's int() and float() would also take "１０", "1_000", " 10" and "+25"
_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|-?(?:nan|inf|infinity)", re.I)


def _strict_number_problems(reader: "_MappingEnv", cls: type) -> dict[str, str]:
    """The number settings written in a way only Python would read: name -> one line."""
    out = {}
    for f in fields(cls):
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        pattern = _INT if kind.startswith("int") else _FLOAT if kind.startswith("float") else None
        name = PREFIX + f.name.upper()
        raw = reader._source.get(name)
        if pattern and raw and not pattern.fullmatch(raw):
            out[name] = f"{name} must be {_expected(name)}, got {quoted(raw)}"
    return out


def _number(value: float | None) -> str | None:
    return None if value is None else str(int(value)) if float(value).is_integer() else f"{value:g}"


def _expected(name: str) -> str:
    """What a variable takes, in words, for an error message."""
    key = name.removeprefix(PREFIX).lower()
    f = next((f for f in fields(Settings) if f.name == key), None)
    validator = _VALIDATE.get(key)
    if isinstance(validator, OneOf):
        return "one of " + ", ".join(c for c in map(str, validator.choices) if c.upper() == c or key != "log_level")
    kind = "" if f is None else (f.type if isinstance(f.type, str) else f.type.__name__)
    base = {"bool": "true or false", "int": "a whole number", "float": "a number"}.get(kind.split(" ")[0], "text")
    if isinstance(validator, Range):
        low, high = _number(validator.min), _number(validator.max)
        if not validator.min_inclusive:
            return f"{base} above {low}" + (f" and at most {high}" if high is not None else "")
        if high is not None:
            return f"{base} from {low} to {high}"
        return f"{base} of at least {low}"
    return base


def _listen_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return bool(_HOST.fullmatch(text.lower()))


def secret_settings() -> frozenset[str]:
    """The variables of the settings that hold a secret (never printed; each may be given
    as a file instead, ``<NAME>_FILE``)."""
    return frozenset(PREFIX + f.name.upper() for f in fields(Settings) if not f.repr)


def unknown_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """``MSB1_*`` variables that are set but are no setting, each with a likely meant name."""
    env = os.environ if env is None else env
    known = {PREFIX + f.name.upper() for f in fields(Settings)} | {f"{name}_FILE" for name in secret_settings()}
    out = []
    for name in sorted(env):
        if name.startswith(PREFIX) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
            out.append(f"{name} is not a setting" + (f" (did you mean {close[0]}?)" if close else ""))
    return out
