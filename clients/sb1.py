"""SpareBank 1 Regnskap (Unimicro platform) REST API: OAuth2 + ``CompanyKey``.

* ``Credentials`` – the integrator's identity: a client id and either a private key
  (PEM, or PKCS#12 with password) for a JWT client assertion, or a client secret.
* ``TokenProvider`` – one access token per identity server and client, cached in Redis
  (encrypted with a key derived from the credentials, which Redis never sees) and shared by
  every worker process until shortly before it expires.
* ``SB1Client`` – one company's business API (``{base}/api/biz/{route}``).
"""
from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import jwt
import redis
import simplejson
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import pkcs12
from redis.exceptions import LockError

from errors import AuthError, PermanentError, TransientError

from .filters import find_many, quote, rows_for
from .http import Http, Response, Timeouts, send
from .ratelimit import Limited

log = logging.getLogger(__name__)

DEFAULT_IDENTITY_URL = "https://login.regnskap.sparebank1.no"
TOKEN_PATH = "/connect/token"
SCOPE = "AppFramework"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 300  # seconds
# what each key derived from the credentials is for (HKDF's ``info``): one key, one use
TOKEN_CACHE_KEY_INFO = b"moment-sb1/sb1-token-cache/v1"
API_PREFIX = "/api/biz"
# the platform's routes we read (under API_PREFIX; the data types' own routes are in schemas.datatypes)
CURRENCIES_ROUTE = "currencycodes"
ACCOUNTS_ROUTE = "accounts"
VAT_TYPES_ROUTE = "vattypes"
# the platform's exchange rates (Norges Bank's): GET EXCHANGE_RATES_ROUTE?action=EXCHANGE_RATE_ACTION
EXCHANGE_RATES_ROUTE = "currencies"
EXCHANGE_RATE_ACTION = "get-currency-exchange-rate"


@dataclass(frozen=True)
class Credentials:
    client_id: str
    private_key: Any = field(default=None, repr=False)
    x5t: str | None = None            # certificate thumbprint, sent in the JWT header when known
    client_secret: str | None = field(default=None, repr=False)

    @classmethod
    def load(cls, client_id: str, *, key_file: str | None = None, p12_file: str | None = None,
             p12_password: str | None = None, client_secret: str | None = None) -> "Credentials":
        if key_file:
            key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
            return cls(client_id, private_key=key)
        if p12_file:
            key, cert, _ = pkcs12.load_key_and_certificates(
                Path(p12_file).read_bytes(), (p12_password or "").encode() or None)
            x5t = None
            if cert is not None:
                x5t = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA1())).rstrip(b"=").decode()
            return cls(client_id, private_key=key, x5t=x5t)
        if client_secret:
            return cls(client_id, client_secret=client_secret)
        raise ValueError("SpareBank 1 credentials need a private key, a PKCS#12 file or a client secret")

    def derive_key(self, info: bytes) -> bytes:
        """32 bytes for one use (``info``), derived (HKDF-SHA256) from the secret only this
        integrator's processes hold: the private key (the same key from a PEM or a PKCS#12
        file), else the client secret. Redis, Flower and the receiver never have it, so what
        it encrypts or keys there stays closed to them. It changes when the key or secret does."""
        if self.private_key is not None:
            material = self.private_key.private_bytes(serialization.Encoding.DER,
                                                      serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption())
        elif self.client_secret:
            material = self.client_secret.encode()
        else:
            raise ValueError("SpareBank 1 credentials need a private key or a client secret")
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"moment-sb1:" + self.client_id.encode(),
                    info=info).derive(material)

    def token_form(self, token_url: str) -> dict[str, str]:
        form = {"grant_type": "client_credentials", "scope": SCOPE, "client_id": self.client_id}
        if self.private_key is not None:
            form["client_assertion_type"] = ASSERTION_TYPE
            form["client_assertion"] = self.assertion(token_url)
        else:
            form["client_secret"] = self.client_secret or ""
        return form

    def assertion(self, token_url: str, now: float | None = None) -> str:
        now = int(now if now is not None else time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": token_url,
                  "jti": str(uuid.uuid4()), "iat": now, "nbf": now, "exp": now + ASSERTION_LIFETIME}
        headers = {"x5t": self.x5t} if self.x5t else None
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers=headers)


class TokenProvider:
    """Access tokens cached in Redis, shared by every process that uses the same Redis.

    Only one process asks the identity server at a time (a Redis lock); the others wait
    and read what it stored. A token is reused until ``refresh_margin`` seconds before it
    expires, so the identity server sees about one request an hour.

    The cached token is encrypted (Fernet: AES-128-CBC and HMAC-SHA256) with a key derived
    from the credentials (``Credentials.derive_key``): anything that reads Redis (Flower, a
    dump, a leaked broker password) sees ciphertext. A value that does not decrypt (another
    key, tampered, or cached in clear by an older version) counts as absent: a new token is
    fetched and written over it.
    """

    service = "SpareBank 1 identity server"

    def __init__(self, token_url: str, credentials: Credentials, *, redis_client: redis.Redis,
                 cache_key: str, http: Http | None = None,
                 timeouts: Timeouts = Timeouts(), refresh_margin: float = 300):
        self.token_url = token_url
        self.credentials = credentials
        self.redis = redis_client
        self.key = cache_key          # where the token is shared (``Keys.sb1_token``)
        self.http = http or Http()
        self.timeouts = timeouts
        self.refresh_margin = refresh_margin
        self._local: tuple[str, float] | None = None
        self._mutex = threading.Lock()
        self._fernet = Fernet(base64.urlsafe_b64encode(credentials.derive_key(TOKEN_CACHE_KEY_INFO)))

    def token(self) -> str:
        now = time.time()
        local = self._local
        if local and local[1] > now:
            return local[0]
        with self._mutex:
            cached = self._read()
            if cached:
                return cached
            # A fetch cannot outlast its HTTP timeouts by much, so neither does the lock: a
            # process killed mid-fetch holds up the others only that long.
            hold = self.timeouts.connect + self.timeouts.read + 5
            lock = self.redis.lock(f"{self.key}:lock", timeout=hold, blocking_timeout=hold + 1)
            if not lock.acquire():
                raise TransientError(f"{self.service}: another worker has been fetching a token "
                                     f"for {hold + 1:g}s", service=self.service)
            try:
                cached = self._read()   # another process may have fetched it meanwhile
                if cached:
                    return cached
                return self._fetch()
            finally:
                try:
                    lock.release()
                except LockError:       # it expired meanwhile; nothing to release
                    pass

    def fetch_new(self) -> str:
        """Ask the identity server for a token now, whatever is cached (an online check)."""
        with self._mutex:
            return self._fetch()

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (refused with a 401) unless another worker already replaced it."""
        with self._mutex:
            if self._local and self._local[0] == token:
                self._local = None
            data = self._open(self.redis.get(self.key))
            if data and data["access_token"] == token:
                self.redis.delete(self.key)

    def _seal(self, token: str, expires_at: float) -> bytes:
        return self._fernet.encrypt(json.dumps({"access_token": token, "expires_at": expires_at}).encode())

    def _open(self, raw: bytes | str | None) -> dict | None:
        """The cached token and its expiry, or None when there is none this process can read."""
        if not raw:
            return None
        try:
            data = json.loads(self._fernet.decrypt(raw.encode() if isinstance(raw, str) else raw))
        except (InvalidToken, ValueError):
            return None
        if not (isinstance(data, dict) and isinstance(data.get("access_token"), str)
                and isinstance(data.get("expires_at"), (int, float))):
            return None
        return data

    def _read(self) -> str | None:
        data = self._open(self.redis.get(self.key))
        if data is None:
            return None
        use_until = data["expires_at"] - self.refresh_margin
        if use_until <= time.time():
            return None
        self._local = (data["access_token"], use_until)
        return data["access_token"]

    def _fetch(self) -> str:
        try:
            resp = send(self.http, "POST", self.token_url, service=self.service, timeouts=self.timeouts,
                        headers={"Accept": "application/json"}, form=self.credentials.token_form(self.token_url))
        except PermanentError as exc:
            # 400 invalid_client / invalid_grant: our credentials, not a record, are wrong
            code, description = self._oauth_error(exc)
            raise AuthError(f"{exc.message}" + (f": {code}" if code else ""), status=exc.status,
                            service=self.service, request_id=exc.request_id, detail=description,
                            code="credentials") from None
        body = resp.json()
        token = body.get("access_token")
        if not token:
            raise AuthError(f"{self.service}: no access token in the answer", service=self.service)
        expires_in = float(body.get("expires_in") or 3600)
        expires_at = time.time() + expires_in
        ttl = int(expires_in - self.refresh_margin)
        if ttl > 0:
            self.redis.set(self.key, self._seal(token, expires_at), ex=ttl)
        self._local = (token, expires_at - self.refresh_margin)
        log.info("fetched a new SpareBank 1 access token (valid %ds)", expires_in)
        return token


    @staticmethod
    def _oauth_error(exc: PermanentError) -> tuple[str | None, str | None]:
        """The OAuth error code (a protocol word, safe to log) and its description (the
        server's own text, kept out of logs)."""
        body = getattr(exc, "body", None)
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            return None, None
        code = body["error"] if body["error"].replace("_", "").isalnum() else None
        desc = body.get("error_description")
        return code, desc if isinstance(desc, str) else None


def authorized(tokens: TokenProvider, limits: Limited, call: Callable[[str], Response]) -> Response:
    """``call(token)`` with the shared access token, in turn at the shared rate limit: a 429
    teaches the limit; a 401 fetches a new token once and calls again (the business API, the
    statistics API, the Files host)."""
    for attempt in (1, 2):
        token = tokens.token()
        limits.before()
        try:
            return call(token)
        except TransientError as exc:
            if exc.status == 429:
                limits.rate_limited(exc.retry_after)
            raise
        except AuthError as exc:
            if exc.status != 401 or attempt == 2:
                raise
            tokens.invalidate(token)
    raise AssertionError("unreachable")


_LOOKING_UP: dict[tuple, threading.Lock] = {}     # a reference look-up under way, per key


class SB1Client:
    """One company's SpareBank 1 Regnskap: every call sends the bearer token and CompanyKey."""

    service = "SpareBank 1 Regnskap"

    def __init__(self, base_url: str, company_key: str, tokens: TokenProvider, *,
                 http: Http | None = None, timeouts: Timeouts = Timeouts(),
                 lookup_cache: dict | None = None, lookup_ttl: float = 3600, limits: Limited | None = None):
        self.base = f"{base_url.rstrip('/')}{API_PREFIX}"
        self.limits = limits or Limited(None, (), self.service)
        self.company_key = company_key
        self.tokens = tokens
        self.http = http or Http()
        self.timeouts = timeouts
        self._lookups = lookup_cache if lookup_cache is not None else {}
        self._lookup_ttl = lookup_ttl

    def probe(self) -> None:
        """The cheapest read there is that needs a token and the company's key."""
        self.query(CURRENCIES_ROUTE, top=1, select="ID")

    def request(self, method: str, route: str, **kwargs: Any) -> Response:
        """One call; on a 401 the token is refreshed once and the call repeated. ``json``: a
        body to send; other keyword arguments go to :meth:`Http.request`."""
        url = f"{self.base}/{route}"
        extra_headers = {}
        if "json" in kwargs:
            # Decimals go out as JSON numbers exactly as they are (12500.00), never via float
            kwargs["body"] = simplejson.dumps(kwargs.pop("json"), use_decimal=True).encode()
            extra_headers["Content-Type"] = "application/json; charset=utf-8"
        def call(token: str) -> Response:
            headers = {"Authorization": f"Bearer {token}", "CompanyKey": self.company_key,
                       "Accept": "application/json", **extra_headers}
            return send(self.http, method, url, service=self.service, timeouts=self.timeouts, headers=headers,
                        **kwargs)
        try:
            return authorized(self.tokens, self.limits, call)
        except AuthError as exc:
            if exc.service != self.service:
                raise           # the identity server refused the integrator's credentials: as it said
            raise AuthError(f"{exc.message} (credentials or company key refused)", status=exc.status,
                            service=self.service, request_id=exc.request_id) from exc

    def get(self, route: str, entity_id: int, *, expand: str | None = None) -> dict[str, Any]:
        params = {"expand": expand} if expand else None
        return self.request("GET", f"{route}/{int(entity_id)}", params=params).json()

    def query(self, route: str, *, filter: str | None = None, expand: str | None = None,
              select: str | None = None, top: int | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in
                  {"filter": filter, "expand": expand, "select": select, "top": top}.items()
                  if v is not None}
        body = self.request("GET", route, params=params).json()
        return body if isinstance(body, list) else []

    def find_by(self, route: str, field_name: str, value: Any, *, expand: str | None = None,
                what: str = "record") -> dict[str, Any] | None:
        """The one record whose ``field_name`` equals ``value``, or None.

        The platform ignores a filter it does not understand and answers with an
        unfiltered page, so whatever comes back is checked field by field here.
        """
        rows = self.query(route, filter=f"{field_name} eq {quote(value)}", expand=expand, top=50)
        matches = [row for row in rows if str(row.get(field_name)) == str(value)]
        if len(matches) > 1:
            raise PermanentError(
                # the value by itself only when it is a number (it may come from Moment as typed)
                f"{self.service} has {len(matches)} {what}s with {field_name} "
                f"{value if str(value).isascii() and str(value).isdigit() else 'of this value'}; "
                "there must be only one", service=self.service)
        return matches[0] if matches else None

    def find_many(self, route: str, field_name: str, values: Iterable[Any], *,
                  expand: str | None = None) -> dict[str, dict[str, Any] | None]:
        """The books' one record for each of ``values`` (as text), or None when it has none, in
        few calls (``clients.filters.find_many``); a value not known is left out."""
        return find_many(self.query, route, field_name, values, expand=expand)

    def rows_for(self, route: str, field_name: str, values: Iterable[Any], *,
                 per_value: int = 1) -> dict[str, list[dict[str, Any]]]:
        """The books' records for each of ``values`` (``clients.filters.rows_for``)."""
        return rows_for(self.query, route, field_name, values, per_value=per_value)

    def create(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", route, json=body).json()

    def update(self, route: str, entity_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PUT", f"{route}/{int(entity_id)}", json=body).json()

    def action(self, route: str, action: str, body: Any) -> Any:
        """``POST {route}?action={action}``, e.g. ``journalentries`` / ``book-journal-entries``."""
        return self.request("POST", route, params={"action": action}, json=body).json()

    def lookup(self, route: str, field_name: str, value: Any) -> dict[str, Any] | None:
        """A reference record (a currency code, an account, a VAT type), cached a while."""
        key = (self.base, self.company_key, route, field_name, str(value))
        hit = self._lookups.get(key)
        if hit and hit[1] > time.time():
            return hit[0]
        with _LOOKING_UP.setdefault(key, threading.Lock()):     # one thread asks, the others wait for it
            hit = self._lookups.get(key)
            if hit and hit[1] > time.time():
                return hit[0]
            row = self.find_by(route, field_name, value)
            if row is None:
                return None     # not cached: it may be set up in a minute, then a replay works
            self._lookups[key] = (row, time.time() + self._lookup_ttl)
            return row

    def lookup_id(self, route: str, field_name: str, value: Any) -> int | None:
        row = self.lookup(route, field_name, value)
        return int(row["ID"]) if row else None
