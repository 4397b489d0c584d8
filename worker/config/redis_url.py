"""Where Redis is: one server (``redis://``, ``rediss://``) or a group watched by Redis
Sentinel, whose master the broker, the state, the locks and the token cache all follow:

    redis+sentinel://[:password@]host:26379,host2:26379,host3:26379/<master name>[/<db>]

The password is the master's (and its replicas'); the sentinels are asked without one.
Everything that talks to Redis gets its address from here: the state client (redis-py's
``Sentinel.master_for``), Celery's broker (kombu's ``sentinel://`` transport with
``master_name``) and RedBeat (``redis-sentinel://`` with its ``sentinels`` option).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.connection import parse_url
from redis.sentinel import Sentinel

SCHEME = "redis+sentinel"


class RedisUrlError(ValueError):
    pass


@dataclass(frozen=True)
class RedisTarget:
    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str | None = None
    db: int = 0
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> RedisTarget:
        if any(ch.isspace() for ch in url):     # a space in the host: refused now, not on every connection
            raise RedisUrlError("MSB1_REDIS_URL must not contain spaces")
        if not url.startswith(SCHEME + "://"):
            return cls(_checked(url))
        rest = url[len(SCHEME) + 3:]
        auth, _, rest = rest.rpartition("@")
        hosts, _, path = rest.partition("/")
        password = unquote(auth.partition(":")[2]) if auth else None
        sentinels = []
        for part in filter(None, hosts.split(",")):
            host, _, port = part.rpartition(":")
            if not host or not port.isdigit():
                raise RedisUrlError(f"MSB1_REDIS_URL: {part!r} is not host:port (a sentinel)")
            sentinels.append((host, int(port)))
        master, _, db = path.partition("/")
        if not sentinels or not master:
            raise RedisUrlError("MSB1_REDIS_URL: give the sentinels and the master's name, e.g. "
                                f"{SCHEME}://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/mymaster/0")
        if db and not db.isdigit():
            raise RedisUrlError(f"MSB1_REDIS_URL: the database {db!r} is not a number")
        return cls(url, tuple(sentinels), master, int(db or 0), password or None)

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    def client(self, **options: Any) -> redis.Redis:
        if not self.is_sentinel:
            return redis.Redis.from_url(self.url, **options)
        sentinel = Sentinel(list(self.sentinels), socket_timeout=options.get("socket_timeout", 2.0))
        return sentinel.master_for(self.master, db=self.db, password=self.password, **options)

    # --- for Celery (kombu) and RedBeat
    def broker_url(self) -> str:
        if not self.is_sentinel:
            return self.url
        auth = f":{quote(self.password, safe='')}@" if self.password else ""     # kombu unquotes it
        return ";".join(f"sentinel://{auth}{host}:{port}/{self.db}" for host, port in self.sentinels)

    def broker_transport_options(self) -> dict[str, Any]:
        return {"master_name": self.master} if self.is_sentinel else {}

    def redbeat(self) -> tuple[str, dict[str, Any]]:
        if not self.is_sentinel:
            return self.url, {}
        host, port = self.sentinels[0]
        return (f"redis-sentinel://{host}:{port}/{self.db}",
                {"sentinels": list(self.sentinels), "service_name": self.master, "password": self.password,
                 "db": self.db, "socket_timeout": 2.0})


def _checked(url: str) -> str:
    """One server's address as redis-py reads it; a mistake is one line that does not repeat
    the address (it may hold the password)."""
    try:
        parse_url(url)
        parts = urlsplit(url)
        parts.port                                  # raises on a port that is no number
    except ValueError as err:
        reason = "" if "schemes" in str(err) or "://" in str(err) else f": {err}"
        raise RedisUrlError(f"MSB1_REDIS_URL is not a Redis address (redis://, rediss://, unix:// or "
                            f"{SCHEME}://){reason}") from None
    db = parts.path.strip("/") if parts.scheme in ("redis", "rediss") else ""
    if db and not db.isdigit():
        raise RedisUrlError(f"MSB1_REDIS_URL: the database {db[:20]!r} is not a number")
    return url
