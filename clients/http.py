"""HTTP for both APIs: keep-alive connections (:class:`Http`) and one place that turns a
call into a response or a typed error (:func:`send`).

The clients use urllib3 directly, the library requests is built on. Measured with py-spy
on ``bench/customers.py``, requests' own work on each call (merging session settings,
hooks, cookies and the environment, preparing and validating the request, building its
response) was a third of a sync's HTTP time and a seventh of its CPU; none of it does
anything for two JSON APIs.
"""
from __future__ import annotations

import logging
import math
import re
import threading
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from functools import cached_property
from typing import Any, Mapping
from urllib.parse import urlencode, urlsplit

import certifi
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ProxyError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from errors import AuthError, DuplicateCreate, NotFound, PermanentError, RecordInvalid, TransientError

from .retry import is_retriable_status

log = logging.getLogger(__name__)

USER_AGENT = "moment-sb1"
# idle keep-alive connections kept per host; a worker thread holds one during a call
POOL_SIZE = 64


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 30.0

    @cached_property
    def urllib3(self) -> urllib3.Timeout:
        return urllib3.Timeout(connect=self.connect, read=self.read)


Response = urllib3.BaseHTTPResponse


class Http:
    """Keep-alive connections for every thread of a process (urllib3's pools are
    thread-safe): one pool per host, ``pool_size`` idle connections in each.

    ``HTTP_PROXY``/``HTTPS_PROXY`` and ``NO_PROXY`` are read once, here. Certificates are
    checked against certifi's bundle, as requests does. No call is retried here (the task's
    backoff does that) and no redirect is followed: a redirect would carry the bearer token
    and the company key to wherever it points.
    """

    def __init__(self, *, pool_size: int = POOL_SIZE, proxies: Mapping[str, str] | None = None,
                 user_agent: str = USER_AGENT):
        self._options = dict(maxsize=pool_size, block=False, retries=False)
        self._tls = dict(ca_certs=certifi.where())
        if proxies is None:
            proxies = {k: v for k, v in urllib.request.getproxies().items() if k in ("http", "https")}
        self._proxied = {scheme: urllib3.ProxyManager(url, num_pools=20, **self._options, **self._tls)
                         for scheme, url in proxies.items()}
        # origin ("https://host:port") → its pool, or the proxy manager that reaches it
        self._routes: dict[str, urllib3.HTTPConnectionPool | urllib3.ProxyManager] = {}
        self._mutex = threading.Lock()
        self.headers = {"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"}

    def _route(self, origin: str) -> urllib3.HTTPConnectionPool | urllib3.ProxyManager:
        route = self._routes.get(origin)
        if route is not None:
            return route
        with self._mutex:
            if origin not in self._routes:
                parts = urlsplit(origin)
                proxy = self._proxied.get(parts.scheme)
                if proxy is not None and not urllib.request.proxy_bypass(parts.hostname or ""):
                    self._routes[origin] = proxy
                else:
                    tls = self._tls if parts.scheme == "https" else {}
                    self._routes[origin] = urllib3.connection_from_url(origin, **self._options, **tls)
            return self._routes[origin]

    def request(self, method: str, url: str, *, timeouts: Timeouts, params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, body: bytes | None = None,
                form: Mapping[str, str] | None = None) -> Response:
        """One call; the whole body is read before it returns. ``form`` is sent as
        ``application/x-www-form-urlencoded``; ``params`` become the query string."""
        if params:
            url = f"{url}?{urlencode(params)}"
        all_headers = {**self.headers, **(headers or {})}
        if form is not None:
            body = urlencode(form).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        # the pool is found by the URL's origin, without parsing the whole URL on every call
        cut = url.find("/", url.find("//") + 2)
        origin, path = (url, "/") if cut < 0 else (url[:cut], url[cut:])
        route = self._route(origin)
        if isinstance(route, urllib3.ProxyManager):
            return route.urlopen(method, url, body=body, headers=all_headers, timeout=timeouts.urllib3,
                                 redirect=False, retries=False, preload_content=True)
        return route.urlopen(method, path, body=body, headers=all_headers, timeout=timeouts.urllib3,
                             redirect=False, retries=False, preload_content=True, assert_same_host=False)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def validation_messages(body: Any) -> list[str]:
    """Readable messages out of the platform's error bodies.

    A 400 carries ``_validationResults`` (lists of ``{Message, EntityType, ...}``) nested
    anywhere in the entity, sometimes a top-level ``Message`` or ``Messages``.
    """
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_validationResults":
                    collect(value)
                elif key in ("Message", "message") and isinstance(value, str):
                    found.append(value)
                elif key in ("Messages", "messages"):
                    collect(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    def collect(node: Any) -> None:
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, dict):
            msg = node.get("Message") or node.get("message")
            if isinstance(msg, str):
                prop = node.get("PropertyName")
                found.append(f"{prop}: {msg}" if prop else msg)
            else:
                for value in node.values():
                    collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)

    walk(body)
    unique: list[str] = []
    for msg in found:
        if msg not in unique:
            unique.append(msg)
    return unique


DUPLICATE_FIELD = "_createguid"


# A property name as the platform's models spell them ("Info.DefaultEmail.EmailAddress"):
# ASCII identifiers, dotted. Anything else in its place is not a field name and not logged.
_PROPERTY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def validation_fields(body: Any) -> list[str]:
    """The names of the fields a 400 complains about (``PropertyName`` and the keys of
    ``_validationResults``): our words to log, unlike the messages, which may quote values."""
    found: list[str] = []

    def add(name: Any) -> None:
        if isinstance(name, str) and len(name) <= 80 and _PROPERTY.fullmatch(name) and name not in found:
            found.append(name)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_validationResults" and isinstance(value, dict):
                    for prop in value:
                        add(prop)
                if key == "PropertyName":
                    add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(body)
    return found[:10]


# What a vendor's request id looks like (a GUID, a trace id): only such a header is copied
# into our errors, which go to logs, Sentry and dead letters; anything else is dropped.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The vendor's ``X-Request-Id`` (or ``Request-Id``) when it looks like a request id,
    else None: the header is the vendor's to fill, and may echo anything."""
    value = headers.get("X-Request-Id") or headers.get("Request-Id")
    return value if isinstance(value, str) and _REQUEST_ID.fullmatch(value) else None


def _path(url: str) -> str:
    return urlsplit(url).path


def _no_answer(exc: BaseException) -> str:
    """Why no answer came, in the words of our error messages."""
    if isinstance(exc, NewConnectionError):     # before its base class, the connect timeout
        return "could not connect"
    if isinstance(exc, ProxyError):
        return "could not connect (proxy)"
    if isinstance(exc, Urllib3Timeout):
        return "timed out"
    return "the connection failed"


def send(http: Http, method: str, url: str, *, service: str, timeouts: Timeouts, **kwargs: Any) -> Response:
    """Make one HTTP call (``kwargs``: see :meth:`Http.request`); return the response when it
    is a 2xx, else raise a typed error.

    The error message names the service, method, path and status, and the platform's
    validation messages; never the request body, query values or headers.
    """
    try:
        resp = http.request(method, url, timeouts=timeouts, **kwargs)
    except (HTTPError, OSError) as exc:      # no answer: refused, timed out, reset, closed mid-answer, TLS
        raise TransientError(f"{service} {method} {_path(url)}: {_no_answer(exc)}", service=service) from exc
    status = resp.status
    if status < 300:
        return resp
    where = f"{service} {method} {_path(url)}"
    if status < 400:
        # not the record's fault: the base URL is likely wrong (http for https); the circuit
        # tells the operator once when the service's probe gets the same answer
        raise TransientError(f"{where}: HTTP {status}, a redirect (not followed: it would carry our "
                             "credentials); is the base URL right?", status=status, service=service)
    request_id = request_id_of(resp.headers)
    try:
        body = resp.json()
    except ValueError:
        body = None
    details = "; ".join(validation_messages(body))[:500]
    props = validation_fields(body)
    msg = f"{where}: HTTP {status}" + (f" (fields: {', '.join(props)})" if props else "")
    common = dict(status=status, service=service, request_id=request_id, body=body, detail=details or None,
                  fields=props)
    if status == 429 or is_retriable_status(status):
        raise TransientError(msg, retry_after=parse_retry_after(resp.headers.get("Retry-After")), **common)
    if status in (401, 403):
        raise AuthError(msg, **common)
    if status == 404:
        raise NotFound(msg, **common)
    if status in (400, 409, 422):
        # the platform's answer to a _createguid it has seen: the create happened before
        raise (DuplicateCreate if DUPLICATE_FIELD in props else RecordInvalid)(msg, **common)
    raise PermanentError(msg, **common)
