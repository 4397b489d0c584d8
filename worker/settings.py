"""Deployment settings, read once from the environment (documented in `.env.example`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from clients.http import Timeouts
from clients.retry import RetryPolicy
from clients.sb1 import DEFAULT_IDENTITY_URL, TOKEN_PATH


class SettingsError(ValueError):
    pass


def _bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


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
    http_connect_timeout: float = 5.0
    http_read_timeout: float = 30.0
    concurrency: int = 32
    # Celery task events cost three Redis publishes per task; Flower switches them on
    # itself while it runs, so they stay off by default
    task_events: bool = False
    # change feed
    coalesce_window: float = 1.0      # at most one sync per record per this many seconds
    pending_ttl: int = 600            # a "sync already queued" mark expires after this
    poll_interval: float = 300.0      # the safety-net poll of Moment, per integration and type
    poll_overlap: float = 120.0       # each poll looks this far behind its cursor
    poll_max_hold: float = 86400.0    # an unfinished change holds the cursor back at most this long
    webhook_max_body: int = 65536     # bytes
    # notices
    digest_window: float = 900.0      # failures after an integration's first are collected this long
    operator_email: str | None = None  # outages and credential problems go here (and to Sentry)
    # circuits (worker/circuit.py)
    circuit_threshold: int = 10       # syncs failing in a row (no success between) that open a circuit
    circuit_window: float = 60.0
    circuit_probe_interval: float = 30.0   # how often a waiting sync tries the service again
    outage_notice_after: float = 3600.0    # the company hears of an outage only if it lasts this long

    @property
    def token_url(self) -> str:
        return self.sb1_token_url or self.sb1_identity_url.rstrip("/") + TOKEN_PATH

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.retry_max_attempts, self.retry_base_delay, self.retry_max_delay)

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(self.http_connect_timeout, self.http_read_timeout)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        values: dict = {}
        for name, f in cls.__dataclass_fields__.items():
            raw = env.get(f"MSB1_{name.upper()}")
            if raw is None or raw == "":
                continue
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            try:
                if kind.startswith("int"):
                    values[name] = int(raw)
                elif kind.startswith("float"):
                    values[name] = float(raw)
                elif kind.startswith("bool"):
                    values[name] = _bool(raw)
                else:
                    values[name] = raw
            except ValueError:
                raise SettingsError(f"MSB1_{name.upper()} must be a number, got {raw!r}") from None
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        longest_wait = self.retry_max_delay + self.lock_wait
        if longest_wait >= self.visibility_timeout:
            raise SettingsError(
                f"MSB1_RETRY_MAX_DELAY ({self.retry_max_delay:g}s) plus MSB1_LOCK_WAIT must stay "
                f"below MSB1_VISIBILITY_TIMEOUT ({self.visibility_timeout}s), or Redis would hand "
                "a waiting task to a second worker")
        if self.smtp_tls not in ("none", "starttls", "ssl"):
            raise SettingsError("MSB1_SMTP_TLS must be none, starttls or ssl")
        if self.poll_max_hold < self.poll_interval:
            raise SettingsError("MSB1_POLL_MAX_HOLD must be at least MSB1_POLL_INTERVAL")
        if self.poll_interval <= 0 or self.poll_overlap < 0 or self.coalesce_window < 0:
            raise SettingsError("MSB1_POLL_INTERVAL must be positive; MSB1_POLL_OVERLAP and "
                                "MSB1_COALESCE_WINDOW must not be negative")
        if self.restore_interval < 1 or self.restore_lock_timeout < 1:
            raise SettingsError("MSB1_RESTORE_INTERVAL and MSB1_RESTORE_LOCK_TIMEOUT must be at "
                                "least 1 second")
        if self.circuit_probe_interval >= self.visibility_timeout or self.circuit_probe_interval <= 0:
            raise SettingsError("MSB1_CIRCUIT_PROBE_INTERVAL must be positive and below MSB1_VISIBILITY_TIMEOUT")
        if self.circuit_threshold < 1:
            raise SettingsError("MSB1_CIRCUIT_THRESHOLD must be at least 1")
        if self.digest_window >= self.visibility_timeout:
            raise SettingsError("MSB1_DIGEST_WINDOW must stay below MSB1_VISIBILITY_TIMEOUT, or Redis would "
                                "hand the waiting digest to a second worker")
        if self.retry_max_attempts < 1:
            raise SettingsError("MSB1_RETRY_MAX_ATTEMPTS must be at least 1")
