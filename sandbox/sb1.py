"""Stand-in for SpareBank 1 Regnskap (Unimicro's Uni Economy platform).

An identity server (``/connect/token``, client credentials with a JWT client assertion or
a client secret) and the business API ``/api/biz/{route}`` with the platform's query,
child-record and ``_createguid`` rules as described in the domain brief.
"""
from __future__ import annotations

import copy
import re
import hmac
import json
import secrets
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
import simplejson
from flask import Flask, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from .events import install as install_event_plans
from .faults import Faults
from .files import install_files
from .query import (QueryError, apply_orderby, apply_select, expand_paths, parse_filter,
                    render)
from .sb1_schema import ROUTES, EntityType, Schema, load_schema

Doc = dict[str, Any]

TOKEN_PATH = "/connect/token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPE = "AppFramework"
DEFAULT_TOP = 50
FIRST_ID = 11  # IDs are global (all tables, all companies) and never equal a list position
CUSTOMER_NUMBERS = (100000, 199999)
PUT_CREATE_MESSAGE = ("creating new entities in a PUT is not allowed unless _createguid "
                      "property is specified")

# Set by the server; ignored when a client sends them.
SERVER_FIELDS = frozenset({"ID", "CreatedAt", "CreatedBy", "UpdatedAt", "UpdatedBy",
                           "_createguid", "Deleted"})
DEFAULT_STATUS = {"Customer": 30001, "Project": 42201}
# type -> {default child field: the list that also holds that child}
LINKED_LISTS: dict[str, dict[str, str]] = {
    "BusinessRelation": {"DefaultEmail": "Emails", "DefaultPhone": "Phones",
                         "InvoiceAddress": "Addresses", "ShippingAddress": "Addresses",
                         "DefaultContact": "Contacts", "DefaultBankAccount": "BankAccounts"},
}
# type -> {foreign key field: route it points into}; a bad value answers 500 like the platform.
FOREIGN_KEYS: dict[str, dict[str, str]] = {
    "Customer": {"CurrencyCodeID": "currencycodes"},
    "Project": {"ProjectCustomerID": "customers"},
    "Account": {"CustomerID": "customers", "VatTypeID": "vattypes",
                "CurrencyCodeID": "currencycodes"},
    "JournalEntryLineDraft": {"AccountID": "accounts", "VatTypeID": "vattypes",
                              "CurrencyCodeID": "currencycodes"},
    "Dimensions": {"ProjectID": "projects"},
}

SEED_CURRENCIES = [("NOK", "Norsk krone", "kr"), ("EUR", "Euro", "€"),
                   ("SEK", "Svensk krone", "kr"), ("USD", "Amerikansk dollar", "$"),
                   ("DKK", "Dansk krone", "kr"), ("GBP", "Britisk pund", "£")]
# Norges Bank-like middle rates the platform downloads: code -> (NOK per Factor units, Factor);
# SEK, DKK and JPY are quoted per 100. One rate for every date unless a company's ``rates``
# holds one for (code, date); a known currency without a rate answers ExchangeRate 0.
EXCHANGE_RATES = {"NOK": (Decimal(1), Decimal(1)), "EUR": (Decimal("11.4875"), Decimal(1)),
                  "USD": (Decimal("10.9125"), Decimal(1)), "GBP": (Decimal("13.6210"), Decimal(1)),
                  "SEK": (Decimal("98.5200"), Decimal(100)), "DKK": (Decimal("154.0300"), Decimal(100)),
                  "JPY": (Decimal("7.2510"), Decimal(100))}
# VAT code, name, percent, output VAT, the account its VAT is booked on (NS 4102)
SEED_VATTYPES = [("0", "Ingen mva-behandling", 0.0, False, None),
                 ("1", "Fradrag inngående mva, høy sats", 25.0, False, 2710),
                 ("3", "Utgående mva, høy sats", 25.0, True, 2700),
                 ("31", "Utgående mva, middels sats", 15.0, True, 2701),
                 ("33", "Utgående mva, lav sats", 12.0, True, 2702),
                 ("5", "Ingen utgående mva (innenfor mva-loven)", 0.0, True, None),
                 ("6", "Utenfor mva-loven", 0.0, True, None),
                 ("52", "Utførsel av varer og tjenester", 0.0, True, None)]
SEED_ACCOUNTS = [(1500, "Kundefordringer", None), (1920, "Bankinnskudd", None),
                 (2700, "Utgående merverdiavgift, høy sats", None),
                 (2701, "Utgående merverdiavgift, middels sats", None),
                 (2702, "Utgående merverdiavgift, lav sats", None),
                 (2710, "Inngående merverdiavgift, høy sats", None),
                 (3000, "Salgsinntekt, avgiftspliktig", "3"),
                 (3100, "Salgsinntekt, avgiftsfri", "5"),
                 (3200, "Salgsinntekt, utenfor avgiftsområdet", "6"),
                 (7790, "Annen kostnad", None)]
ORE = Decimal("0.01")
RECEIVABLES_ACCOUNT = 1500


class DecimalJSONProvider(DefaultJSONProvider):
    """Amounts stored as Decimal go out as JSON numbers, as the platform's do."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        return simplejson.dumps(obj, use_decimal=True, **kwargs)


class ApiError(Exception):
    """An error answer of the business API: ``status`` and JSON ``body``."""

    def __init__(self, status: int, body: Any):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class OAuthError(Exception):
    """A refused token request (400 ``{"error": ...}``)."""

    def __init__(self, error: str, description: str):
        super().__init__(f"{error}: {description}")
        self.body = {"error": error, "error_description": description}


def validation_result(message: str, entity_type: str, prop: str) -> dict[str, Any]:
    return {"Message": message, "EntityType": entity_type, "PropertyName": prop, "Level": 3}


def validation_error(entity_type: str, entity: Any, results: dict[str, list]) -> ApiError:
    """400 ``{"<EntityType>": <the entity sent>, "_validationResults": {prop: [...]}}``."""
    return ApiError(400, {entity_type: entity, "_validationResults": results})


def message_error(status: int, message: str) -> ApiError:
    return ApiError(status, {"Message": message})


def foreign_key_error(type_name: str, prop: str, value: Any) -> ApiError:
    """The platform answers a bad foreign key with a 500."""
    return ApiError(500, {
        "Message": "An error has occurred.",
        "ExceptionMessage": ("The INSERT or UPDATE statement conflicted with the FOREIGN KEY "
                             f"constraint \"FK_{type_name}_{prop}\" (value {value!r})."),
    })


def _now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _find(items: Any, id_: Any) -> Doc | None:
    for item in items or []:
        if isinstance(item, dict) and item.get("ID") == id_:
            return item
    return None


# The fields a look-up filters on (`Field eq value`): found through an index, not a scan, so a
# company with 10,000 customers answers as fast as one with ten.
INDEXED = {"customers": ("CustomerNumber",), "projects": ("ProjectNumber",), "accounts": ("AccountNumber", "CustomerID"),
           "vattypes": ("VatCode",), "currencycodes": ("Code",), "journalentrylines": ("InvoiceNumber",)}
_SIMPLE_EQ = re.compile(r"^\s*(\w+)\s+eq\s+(?:'((?:[^']|'')*)'|(-?\d+(?:\.\d+)?))\s*$", re.I)


class Table(dict):
    """One route's records by ID, with an index per looked-up field (kept on every write)."""

    def __init__(self, fields: tuple[str, ...] = ()):
        super().__init__()
        self.indexes: dict[str, dict[str, set[int]]] = {f: {} for f in fields}

    def _unindex(self, doc: Doc | None) -> None:
        if doc is None:
            return
        for name, index in self.indexes.items():
            ids = index.get(_key(doc.get(name)))
            if ids is not None:
                ids.discard(doc.get("ID"))

    def __setitem__(self, id_: int, doc: Doc) -> None:
        self._unindex(self.get(id_))
        super().__setitem__(id_, doc)
        for name, index in self.indexes.items():
            index.setdefault(_key(doc.get(name)), set()).add(id_)

    def pop(self, id_: int, *default: Any) -> Any:
        self._unindex(self.get(id_))
        return super().pop(id_, *default)

    def __delitem__(self, id_: int) -> None:
        self.pop(id_)

    def find(self, name: str, value: Any) -> Doc | None:
        """The first record (by ID) whose indexed field ``name`` equals ``value``."""
        ids = self.indexes[name].get(_key(value))
        return self[min(ids)] if ids else None

    def candidates(self, filter_text: str | None) -> list[Doc] | None:
        """The records a simple ``Field eq value`` filter can match, from the index; None
        when the filter is not of that form or the field has no index (scan them all)."""
        match = _SIMPLE_EQ.match(filter_text or "")
        if not match:
            return None
        name = next((f for f in self.indexes if f.lower() == match.group(1).lower()), None)
        if name is None:
            return None
        value = match.group(2).replace("''", "'") if match.group(2) is not None else match.group(3)
        found = set(self.indexes[name].get(_key(value), ()))
        if match.group(3) is not None:          # a number also matches its float spelling
            found |= self.indexes[name].get(_key(float(value)), set())
        return [self[i] for i in sorted(found) if i in self]


def _key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


@dataclass
class Company:
    key: str
    name: str
    tables: dict[str, Table] = field(
        default_factory=lambda: {route: Table(INDEXED.get(route, ())) for route in ROUTES})
    createguids: set[str] = field(default_factory=set)
    journal_entries: int = 0  # last JournalEntryNumberNumeric
    rates: dict[tuple[str, str], tuple[Decimal, Decimal]] = field(default_factory=dict)  # (code, date)


@dataclass
class Client:
    client_id: str
    public_key: Any = None
    secret: str | None = None


@dataclass
class _Write:
    """State of one write request (applied to a copy, committed only when valid)."""

    company: Company
    user: str
    now: str
    creating: bool  # True for POST (everything is new), False for PUT
    next_id: Callable[[], int]
    guids: set[str] = field(default_factory=set)       # _createguids inserted now
    created: dict[str, Doc] = field(default_factory=dict)  # _createguid -> new object
    deleted: set[int] = field(default_factory=set)      # child IDs sent with Deleted: true
    originals: dict[int, Doc] = field(default_factory=dict)  # ID -> object as stored before


def load_public_key(pem: bytes | str) -> Any:
    """An RSA public key from a PEM public key or certificate."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"BEGIN CERTIFICATE" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    return serialization.load_pem_public_key(data)


class SB1Store:
    """Thread-safe state of the platform: companies, clients, tokens and counters."""

    def __init__(self, schema: Schema | None = None):
        self.schema = schema or load_schema()
        self.lock = threading.RLock()
        self.companies: dict[str, Company] = {}  # lower-cased company key -> Company
        self.clients: dict[str, Client] = {}
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (client id, expires at)
        self.used_jtis: set[tuple[str, str]] = set()
        self.token_lifetime: int = 3600
        # True: answer every filter with the unfiltered list, as the platform does for a
        # filter it does not understand (lets tests prove the client checks what came back)
        self.ignore_filters: bool = False
        # callables (company_key, method, route, doc) run after every successful write
        self.write_listeners: list = []
        self.token_requests: int = 0
        self.writes: Counter[tuple[str, str, str]] = Counter()  # (company key, method, route)
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, route)
        # when each company's API calls arrived (rate-limit tests); the token endpoint apart
        self.request_times: dict[str, list[float]] = defaultdict(list)
        self._next_id = FIRST_ID

    # --- setup -----------------------------------------------------------------------

    def add_company(self, company_key: str, name: str) -> None:
        """Register a company (seeded with currency codes, VAT types and accounts)."""
        with self.lock:
            existing = self.companies.get(company_key.lower())
            if existing:
                existing.name = name
                return
            company = Company(company_key, name)
            self.companies[company_key.lower()] = company
            self._seed(company)

    def _seed(self, company: Company) -> None:
        for code, name, short in SEED_CURRENCIES:
            self._insert(company, "currencycodes", {"Code": code, "Name": name,
                                                    "ShortCode": short})
        vat_types = {}
        for code, name, percent, output, _ in SEED_VATTYPES:
            vat_types[code] = self._insert(company, "vattypes", {
                "VatCode": code, "Name": name, "VatPercent": percent, "OutputVat": output})
        account_ids = {}
        for number, name, vat in SEED_ACCOUNTS:
            doc = self._insert(company, "accounts", {
                "AccountNumber": number, "AccountName": name,
                "VatTypeID": vat_types[vat]["ID"] if vat else None, "Visible": True})
            account_ids[number] = doc["ID"]
        for code, _, _, output, account in SEED_VATTYPES:
            if account:
                vat_types[code]["OutgoingAccountID" if output else "IncomingAccountID"] = account_ids[account]

    def add_client(self, client_id: str, public_key_pem: bytes | str | None = None,
                   client_secret: str | None = None) -> None:
        """Register an integrator client (public key or certificate PEM, and/or a secret)."""
        key = load_public_key(public_key_pem) if public_key_pem else None
        with self.lock:
            self.clients[client_id] = Client(client_id, key, client_secret)

    def insert(self, company_key: str, route: str, doc: Doc) -> Doc:
        """Store ``doc`` directly (no validation, no counters); IDs are assigned."""
        with self.lock:
            return copy.deepcopy(self._insert(self._company(company_key), route, doc))

    def _insert(self, company: Company, route: str, doc: Doc) -> Doc:
        write = self._write(company, "sandbox", creating=True)
        stored = self._new(doc, ROUTES[route], write)
        self._finalize(stored, ROUTES[route], write)
        company.tables[route][stored["ID"]] = stored
        return stored

    # --- helpers for tests ---------------------------------------------------------------

    def company(self, company_key: str | None) -> Company | None:
        return self.companies.get(company_key.lower()) if company_key else None

    def _company(self, company_key: str) -> Company:
        company = self.company(company_key)
        if company is None:
            raise KeyError(f"unknown company {company_key!r}")
        return company

    def documents(self, company_key: str, route: str) -> list[Doc]:
        """Stored documents of one route, fully nested, by ID."""
        with self.lock:
            table = self._company(company_key).tables[route]
            return [copy.deepcopy(table[id_]) for id_ in sorted(table)]

    table = documents  # same thing, shorter: ``store.table(key, "currencycodes")``

    def customers(self, company_key: str) -> list[Doc]:
        return self.documents(company_key, "customers")

    def count_writes(self, company_key: str | None = None, route: str | None = None,
                     method: str | None = None) -> int:
        """Successful POST/PUT/DELETE calls, optionally only of one company/route/method."""
        with self.lock:
            return sum(count for (key, m, r), count in self.writes.items()
                       if (company_key is None or key.lower() == company_key.lower())
                       and (route is None or r == route)
                       and (method is None or m == method.upper()))

    def reset_counters(self) -> None:
        with self.lock:
            self.token_requests = 0
            self.writes.clear()
            self.requests.clear()
            self.request_times.clear()

    def count_request(self, method: str, route: str) -> None:
        with self.lock:
            self.requests[(method, route)] += 1

    # --- tokens ----------------------------------------------------------------------

    def authenticate_client(self, form: Mapping[str, str], basic: Any, audience: str) -> str:
        """The client id of a valid client-credentials token request, else OAuthError."""
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "only client_credentials is supported")
        client_id = form.get("client_id")
        secret = form.get("client_secret")
        if basic is not None and basic.type == "basic":
            client_id, secret = client_id or basic.username, secret or basic.password
        assertion_type, assertion = form.get("client_assertion_type"), form.get("client_assertion")
        if assertion_type or assertion:
            if assertion_type != JWT_BEARER or not assertion:
                raise OAuthError("invalid_client", "unsupported client_assertion_type")
            return self._verify_assertion(assertion, client_id, audience)
        client = self.clients.get(client_id or "")
        if client and client.secret and secret and hmac.compare_digest(client.secret, secret):
            return client.client_id
        raise OAuthError("invalid_client", "unknown client or wrong secret")

    def _verify_assertion(self, assertion: str, client_id: str | None, audience: str) -> str:
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_client", f"malformed client_assertion: {exc}") from exc
        client_id = client_id or claims.get("iss")
        client = self.clients.get(client_id or "")
        if client is None or client.public_key is None:
            raise OAuthError("invalid_client", "unknown client or no registered key")
        try:
            claims = jwt.decode(assertion, client.public_key, algorithms=["RS256"],
                                audience=audience, leeway=5,
                                options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]})
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_client", f"client_assertion refused: {exc}") from exc
        if claims["iss"] != client_id or claims["sub"] != client_id:
            raise OAuthError("invalid_client", "iss and sub must both be the client id")
        with self.lock:
            if (client_id, claims["jti"]) in self.used_jtis:
                raise OAuthError("invalid_grant", "client_assertion jti was already used")
            self.used_jtis.add((client_id, claims["jti"]))
        return client_id

    def issue_token(self, client_id: str) -> dict[str, Any]:
        """A new bearer token for ``client_id`` (the token endpoint's JSON answer)."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self.lock:
            self.tokens = {t: v for t, v in self.tokens.items() if v[1] > now}
            self.tokens[token] = (client_id, now + self.token_lifetime)
            self.token_requests += 1
        return {"access_token": token, "expires_in": int(self.token_lifetime),
                "token_type": "Bearer", "scope": SCOPE}

    def check_token(self, token: str | None) -> str | None:
        """The client id of a valid, unexpired token, else None."""
        with self.lock:
            entry = self.tokens.get(token or "")
        return entry[0] if entry and entry[1] > time.time() else None

    def revoke_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    # --- business API ----------------------------------------------------------------

    def query(self, company_key: str, route: str, params: Mapping[str, str]) -> list[Doc]:
        """``GET {route}`` with filter/orderby/skip/top/expand/select (unknown ones ignored)."""
        params = {k.lower(): v for k, v in params.items()}
        type_name = ROUTES[route]
        with self.lock:
            table = self._company(company_key).tables[route]
            indexed = None if self.ignore_filters else table.candidates(params.get("filter"))
            docs = indexed if indexed is not None else list(table.values())
            if params.get("filter") and not self.ignore_filters:
                try:
                    predicate = parse_filter(params["filter"], self.schema, type_name)
                except QueryError:
                    predicate = None  # the platform ignores a bad filter silently
                if predicate is not None:
                    docs = [d for d in docs if predicate(d)]
            docs = apply_orderby(docs, params.get("orderby"), self.schema, type_name)
            skip = _non_negative(params.get("skip"), 0)
            top = _non_negative(params.get("top"), DEFAULT_TOP)
            expanded = expand_paths(params.get("expand"), self.schema, type_name)
            return [apply_select(render(d, expanded), params.get("select"), self.schema,
                                 type_name) for d in docs[skip:skip + top]]

    def get(self, company_key: str, route: str, id_: int, expand: str | None = None,
            select: str | None = None) -> Doc:
        type_name = ROUTES[route]
        with self.lock:
            doc = self._company(company_key).tables[route].get(id_)
            if doc is None:
                raise message_error(404, f"{type_name} with ID {id_} not found")
            expanded = expand_paths(expand, self.schema, type_name)
            return apply_select(render(doc, expanded), select, self.schema, type_name)

    def create(self, company_key: str, route: str, body: Any, user: str = "") -> Doc:
        """``POST {route}``: validate, assign IDs and foreign keys, store; the full entity."""
        type_name = ROUTES[route]
        self._check_body(body, type_name)
        with self.lock:
            company = self._company(company_key)
            write = self._write(company, user, creating=True)
            doc = self._new(body, type_name, write)
            self._finalize(doc, type_name, write)
            self._validate(doc, type_name, company, body)
            self._commit(company, route, doc, write, "POST")
            return render(doc, None)

    def update(self, company_key: str, route: str, id_: int, body: Any, user: str = "") -> Doc:
        """``PUT {route}/{id}`` with the platform's child-record rules; the full entity."""
        type_name = ROUTES[route]
        self._check_body(body, type_name)
        if body.get("ID") not in (None, 0, id_):
            raise message_error(400, f"ID in the body ({body['ID']}) does not match the URL")
        with self.lock:
            company = self._company(company_key)
            existing = company.tables[route].get(id_)
            if existing is None:
                raise message_error(404, f"{type_name} with ID {id_} not found")
            write = self._write(company, user, creating=False)
            write.originals = {node["ID"]: node for node, _ in self._walk(existing, type_name)}
            doc = copy.deepcopy(existing)  # keeps shared children shared
            self._merge(doc, body, type_name, write)
            self._finalize(doc, type_name, write)
            self._validate(doc, type_name, company, body)
            self._commit(company, route, doc, write, "PUT")
            return render(doc, None)

    def delete(self, company_key: str, route: str, id_: int) -> None:
        with self.lock:
            company = self._company(company_key)
            if company.tables[route].pop(id_, None) is None:
                raise message_error(404, f"{ROUTES[route]} with ID {id_} not found")
            self.writes[(company.key, "DELETE", route)] += 1

    def book_journal_entries(self, company_key: str, body: Any, user: str = "") -> list[Doc]:
        """``POST journalentries?action=book-journal-entries``: book balanced vouchers."""
        if not isinstance(body, list) or not body:
            raise message_error(400, "Expected a non-empty list of JournalEntry")
        for entry in body:
            self._check_body(entry, "JournalEntry")
        with self.lock:
            company = self._company(company_key)
            write = self._write(company, user, creating=True)
            docs = []
            for entry in body:
                doc = self._new(entry, "JournalEntry", write)
                self._finalize(doc, "JournalEntry", write)
                self._validate(doc, "JournalEntry", company, entry)
                docs.append(doc)
            for doc in docs:
                company.journal_entries += 1
                lines = doc.get("DraftLines") or []
                year = str(lines[0].get("FinancialDate") or date.today().isoformat())[:4]
                number = f"{company.journal_entries}-{year}"
                doc["JournalEntryNumber"] = number
                doc["JournalEntryNumberNumeric"] = company.journal_entries
                for line in lines:
                    line["JournalEntryNumber"] = number
                    line["JournalEntryNumberNumeric"] = company.journal_entries
                doc["Lines"] = self._book_lines(company, doc, write)
                company.tables["journalentries"][doc["ID"]] = doc
                for line in doc["Lines"]:
                    company.tables["journalentrylines"][line["ID"]] = line
            company.createguids |= write.guids
            self.writes[(company.key, "POST", "journalentries")] += 1
            for doc in docs:
                for listener in self.write_listeners:
                    listener(company.key, "POST", "journalentries", doc)
            return [render(doc, None) for doc in docs]

    def exchange_rate(self, company_key: str, args: Mapping[str, str]) -> Doc:
        """``GET currencies?action=get-currency-exchange-rate``: ``CurrencyRateData`` for
        fromCurrencyCodeID, toCurrencyCodeID and currencyDate (NOK = amount x ExchangeRate
        / Factor); a currency ID the company does not have is refused."""
        with self.lock:
            company = self._company(company_key)
            codes = company.tables["currencycodes"]
            found = []
            for name in ("fromCurrencyCodeID", "toCurrencyCodeID"):
                value = args.get(name, "")
                doc = codes.get(int(value)) if value.isdigit() else None
                if doc is None:
                    raise message_error(400, f"Unknown currency code ID '{value[:20]}' in {name}")
                found.append(doc)
            day = str(args.get("currencyDate") or date.today().isoformat())[:10]
            (rate_from, factor_from), (rate_to, factor_to) = (
                company.rates.get((doc["Code"], day)) or EXCHANGE_RATES.get(doc["Code"]) or (Decimal(0), Decimal(1))
                for doc in found)
            if not rate_to:
                rate, factor = Decimal(0), Decimal(1)
            elif (rate_to, factor_to) == (Decimal(1), Decimal(1)):
                rate, factor = rate_from, factor_from
            else:       # between two foreign currencies: through NOK, per one unit
                rate, factor = (rate_from / factor_from / (rate_to / factor_to)).quantize(Decimal("1e-6")), Decimal(1)
            return {"ExchangeRate": rate, "Factor": factor, "IsOverrideRate": (found[0]["Code"], day) in company.rates,
                    "FromCurrencyCode": copy.deepcopy(found[0])}

    def _book_lines(self, company: Company, entry: Doc, write: _Write) -> list[Doc]:
        """The journal entry lines the platform books from the draft lines (as its
        developer guide describes "create journalentrylines for VAT"):

        * a draft line with a VAT type of a non-zero rate carries the gross amount; the
          platform rounds the VAT per draft line (half up), books it on the VAT type's
          account and the rest (the net) on the line's own account;
        * a draft line on a customer's own ledger account is booked on its main account
          (1500) with the customer's account as ``SubAccountID``;
        * a draft line in another currency keeps ``CurrencyCodeID``, ``CurrencyExchangeRate``
          and ``Amount`` (NOK) as sent; its ``AmountCurrency`` is split like the amount (the
          VAT rounded to the cent, half up), with ``TaxBasisAmountCurrency``.
        """
        accounts, vat_types = company.tables["accounts"], company.tables["vattypes"]
        booked: list[Doc] = []
        keep = ("FinancialDate", "Description", "InvoiceNumber", "DueDate", "PaymentID",
                "Dimensions", "JournalEntryNumber", "JournalEntryNumberNumeric", "CurrencyCodeID",
                "CurrencyExchangeRate")

        def line(draft: Doc, account_id: int, amount: Decimal, **more: Any) -> None:
            account = accounts.get(account_id) or {}
            sub = account.get("ID") if account.get("CustomerID") and account.get("AccountID") else None
            booked.append({"ID": write.next_id(), "JournalEntryID": entry["ID"],
                           "JournalEntryLineDraftID": draft.get("ID"),
                           "AccountID": account.get("AccountID") if sub else account_id,
                           "SubAccountID": sub, "Amount": amount, "RestAmount": amount if sub else None,
                           **{k: copy.deepcopy(draft.get(k)) for k in keep if draft.get(k) is not None},
                           **more, "Deleted": False, "CreatedAt": write.now, "CreatedBy": write.user})

        for draft in entry.get("DraftLines") or []:
            gross = Decimal(str(draft["Amount"]))
            foreign = draft.get("AmountCurrency") is not None
            gross_cur = Decimal(str(draft["AmountCurrency"])) if foreign else None
            vat_type = vat_types.get(draft.get("VatTypeID")) or {}
            percent = Decimal(str(vat_type.get("VatPercent") or 0))
            vat_account = vat_type.get("OutgoingAccountID" if vat_type.get("OutputVat")
                                       else "IncomingAccountID")
            if not (percent and vat_account):
                line(draft, draft["AccountID"], gross, VatTypeID=draft.get("VatTypeID"),
                     **({"AmountCurrency": gross_cur} if foreign else {}))
                continue
            vat = (gross * percent / (100 + percent)).quantize(ORE, ROUND_HALF_UP)
            cur: dict[str, dict[str, Decimal]] = {"net": {}, "vat": {}}
            if gross_cur is not None:
                vat_cur = (gross_cur * percent / (100 + percent)).quantize(ORE, ROUND_HALF_UP)
                basis = {"TaxBasisAmountCurrency": gross_cur - vat_cur}
                cur = {"net": {"AmountCurrency": gross_cur - vat_cur, **basis},
                       "vat": {"AmountCurrency": vat_cur, **basis}}
            line(draft, draft["AccountID"], gross - vat, VatTypeID=vat_type["ID"], VatPercent=percent,
                 TaxBasisAmount=gross - vat, **cur["net"])
            line(draft, vat_account, vat, VatTypeID=vat_type["ID"], VatPercent=percent,
                 TaxBasisAmount=gross - vat, **cur["vat"])
        return booked

    # --- write machinery -------------------------------------------------------------

    def _allocate_id(self) -> int:
        with self.lock:
            self._next_id += 1
            return self._next_id - 1

    def _write(self, company: Company, user: str, creating: bool) -> _Write:
        return _Write(company, user, _now_text(), creating, self._allocate_id)

    def _commit(self, company: Company, route: str, doc: Doc, write: _Write, method: str) -> None:
        company.tables[route][doc["ID"]] = doc
        company.createguids |= write.guids
        self.writes[(company.key, method, route)] += 1
        if route == "customers":
            self._sync_customer_account(company, doc)
        for listener in self.write_listeners:
            listener(company.key, method, route, doc)

    def _sync_customer_account(self, company: Company, customer: Doc) -> None:
        """Keep the customer's own ledger account (under 1500) in step, as the platform does."""
        accounts = company.tables["accounts"]
        main = accounts.find("AccountNumber", RECEIVABLES_ACCOUNT)
        fields = {"AccountNumber": customer.get("CustomerNumber"),
                  "AccountName": (customer.get("Info") or {}).get("Name"),
                  "CustomerID": customer["ID"], "AccountID": main and main["ID"],
                  "Visible": True}
        current = accounts.find("CustomerID", customer["ID"])
        if current is None:
            self._insert(company, "accounts", fields)
        else:
            accounts[current["ID"]] = {**current, **fields, "UpdatedAt": _now_text()}

    def _kind(self, entity: EntityType | None, key: str, value: Any) -> tuple[str, str | None]:
        """("scalar" | "ref" | "list", child type) of one field."""
        if entity is not None and not entity.is_open:
            child = entity.refs.get(key) or entity.lists.get(key)
            child_entity = self.schema.get(child)
            if child is None or (child_entity is not None and child_entity.is_open):
                return "scalar", None
            return ("ref" if key in entity.refs else "list"), child
        if isinstance(value, dict):
            return "ref", None
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return "list", None
        return "scalar", None

    def _check_body(self, body: Any, type_name: str) -> None:
        """A JSON object with only fields the Swagger knows (400 naming the field)."""
        if not isinstance(body, dict):
            raise message_error(400, f"Expected a {type_name} object")
        results: dict[str, list] = {}
        self._unknown_fields(body, type_name, "", results)
        if results:
            raise validation_error(type_name, body, results)

    def _unknown_fields(self, body: Any, type_name: str | None, prefix: str,
                        results: dict[str, list]) -> None:
        entity = self.schema.get(type_name)
        if entity is None or entity.is_open or not isinstance(body, dict):
            return
        for key, value in body.items():
            if not entity.has(key):
                results[prefix + key] = [validation_result(
                    f"Unknown property '{key}' on {entity.name}", entity.name, key)]
                continue
            kind, child = self._kind(entity, key, value)
            if kind == "ref":
                self._unknown_fields(value, child, f"{prefix}{key}.", results)
            elif kind == "list" and isinstance(value, list):
                for item in value:
                    self._unknown_fields(item, child, f"{prefix}{key}.", results)

    def _new(self, value: Any, type_name: str | None, write: _Write) -> Doc:
        """A new object (and new children) with IDs and metadata."""
        if not isinstance(value, dict):
            raise message_error(400, f"Expected an object for {type_name}")
        guid = value.get("_createguid")
        if guid:
            if guid in write.company.createguids:
                raise validation_error(type_name or "Entity", value, {"_createguid": [
                    validation_result(f"An entity with _createguid {guid} already exists",
                                      type_name or "Entity", "_createguid")]})
            if guid in write.created:  # the same new child sent twice (default + list)
                return write.created[guid]
        entity = self.schema.get(type_name)
        obj: Doc = {"ID": write.next_id()}
        for key, item in value.items():
            if key in SERVER_FIELDS:
                continue
            kind, child = self._kind(entity, key, item)
            if item is None or kind == "scalar":
                obj[key] = copy.deepcopy(item)
            elif kind == "ref":
                obj[key] = self._new(item, child, write)
            else:
                obj[key] = [self._new(i, child, write) for i in _as_list(item, key)]
        if type_name in DEFAULT_STATUS and obj.get("StatusCode") is None:
            obj["StatusCode"] = DEFAULT_STATUS[type_name]
        obj.update({"Deleted": False, "CreatedAt": write.now, "CreatedBy": write.user,
                    "UpdatedAt": write.now, "UpdatedBy": write.user})
        if guid:
            obj["_createguid"] = guid
            write.guids.add(guid)
            write.created[guid] = obj
        return obj

    def _merge(self, target: Doc, body: Doc, type_name: str | None, write: _Write) -> None:
        """Apply a PUT body: scalars overwrite, children by ID, new ones need _createguid."""
        entity = self.schema.get(type_name)
        linked = LINKED_LISTS.get(type_name or "", {})
        original = write.originals.get(target.get("ID"), {})
        # The same child may come twice (DefaultEmail and in Emails): a value equal to the
        # stored one does not undo the other copy's change; if both change it, the default wins.
        for key, value in sorted(body.items(), key=lambda item: item[0] in linked):
            if key in SERVER_FIELDS:
                continue
            kind, child = self._kind(entity, key, value)
            if kind == "scalar":
                if key not in original or original[key] != value:
                    target[key] = copy.deepcopy(value)
            elif value is None:
                continue  # a relation left null is untouched
            elif kind == "ref":
                candidates = target.get(linked[key]) if key in linked else None
                target[key] = self._merge_child(target.get(key), value, child, write,
                                                candidates or [])
            else:
                target[key] = self._merge_list(target.get(key) or [], _as_list(value, key),
                                               child, write)
        for ref, list_name in linked.items():  # a default switched by its ID only
            fk = ref + "ID"
            if fk in body and body.get(ref) is None:
                wanted = body[fk]
                match = _find(target.get(list_name), wanted) if wanted else None
                if wanted and match is None:
                    raise foreign_key_error(type_name or "", fk, wanted)
                target[ref] = match
        target["UpdatedAt"], target["UpdatedBy"] = write.now, write.user

    def _merge_child(self, current: Doc | None, value: Any, type_name: str | None,
                     write: _Write, candidates: list) -> Doc | None:
        if not isinstance(value, dict):
            raise message_error(400, f"Expected an object for {type_name}")
        child_id = value.get("ID") or 0
        if value.get("Deleted"):
            if child_id:
                write.deleted.add(child_id)
            return current
        if child_id:
            existing = _find([current, *candidates], child_id)
            if existing is None:
                raise message_error(400, f"{type_name} with ID {child_id} does not exist here")
            self._merge(existing, value, type_name, write)
            return existing
        return self._create_child(value, type_name, write)

    def _merge_list(self, current: list, items: list, type_name: str | None,
                    write: _Write) -> list:
        """Each item as ``_merge_child`` treats a single child, matched among the list."""
        result = list(current)
        for item in items:
            child = self._merge_child(None, item, type_name, write, result)
            if child is not None and not any(c is child for c in result):
                result.append(child)
        return result

    def _create_child(self, value: Doc, type_name: str | None, write: _Write) -> Doc:
        if not write.creating and not value.get("_createguid"):
            raise message_error(400, PUT_CREATE_MESSAGE)
        return self._new(value, type_name, write)

    def _ref_fk(self, entity: EntityType | None, key: str, child: str | None) -> str | None:
        """The scalar holding a nested object's ID: ``DefaultEmailID``, ``BusinessRelationID``."""
        if entity is None:
            return None
        for candidate in (key + "ID", (child or "") + "ID"):
            if candidate in entity.scalars:
                return candidate
        return None

    def _finalize(self, obj: Doc, type_name: str | None, write: _Write,
                  seen: set[int] | None = None) -> None:
        """Drop deleted children, keep defaults in their lists, set every foreign key."""
        seen = set() if seen is None else seen
        if id(obj) in seen:
            return
        seen.add(id(obj))
        entity = self.schema.get(type_name)
        for key, value in list(obj.items()):
            kind, child = self._kind(entity, key, value)
            if kind == "ref" and isinstance(value, dict) and value.get("ID") in write.deleted:
                obj[key] = None
                if fk := self._ref_fk(entity, key, child):
                    obj[fk] = None
            elif kind == "list" and isinstance(value, list):
                obj[key] = [i for i in value
                            if not (isinstance(i, dict) and i.get("ID") in write.deleted)]
        for ref, list_name in LINKED_LISTS.get(type_name or "", {}).items():
            default = obj.get(ref)
            items = [default if isinstance(i, dict) and isinstance(default, dict)
                     and i.get("ID") == default.get("ID") else i
                     for i in obj.get(list_name) or []]
            if isinstance(default, dict) and not any(i is default for i in items):
                items.append(default)
            if items or list_name in obj:
                obj[list_name] = _unique_by_id(items)
            fk = ref + "ID"
            if isinstance(default, dict):
                obj[fk] = default["ID"]
            elif obj.get(fk):
                raise foreign_key_error(type_name or "", fk, obj[fk])
        for key, value in list(obj.items()):
            kind, child = self._kind(entity, key, value)
            if kind == "ref" and isinstance(value, dict):
                if fk := self._ref_fk(entity, key, child):
                    obj[fk] = value["ID"]
                children = [value]
            elif kind == "list" and isinstance(value, list):
                children = [v for v in value if isinstance(v, dict)]
            else:
                continue
            child_entity = self.schema.get(child)
            back = f"{type_name}ID"
            for item in children:
                if child_entity is not None and back in child_entity.scalars:
                    item[back] = obj["ID"]
                self._finalize(item, child, write, seen)

    def _walk(self, obj: Any, type_name: str | None) -> Iterator[tuple[Doc, str | None]]:
        """Every object of a document with its type (shared children once)."""
        seen: set[int] = set()
        stack = [(obj, type_name)]
        while stack:
            node, node_type = stack.pop()
            if not isinstance(node, dict) or id(node) in seen:
                continue
            seen.add(id(node))
            yield node, node_type
            entity = self.schema.get(node_type)
            for key, value in node.items():
                kind, child = self._kind(entity, key, value)
                if kind == "ref":
                    stack.append((value, child))
                elif kind == "list" and isinstance(value, list):
                    stack.extend((item, child) for item in value)

    def _validate(self, doc: Doc, type_name: str, company: Company, sent: Any) -> None:
        """Business rules (400 with _validationResults), then foreign keys (500)."""
        results: dict[str, list] = {}
        rule = RULES.get(type_name)
        if rule:
            rule(doc, results)
        if results:
            raise validation_error(type_name, sent, results)
        for node, node_type in self._walk(doc, type_name):
            for prop, route in FOREIGN_KEYS.get(node_type or "", {}).items():
                value = node.get(prop)
                if value is not None and value not in company.tables[route]:
                    raise foreign_key_error(node_type or "", prop, value)


def _as_list(value: Any, key: str) -> list:
    if not isinstance(value, list):
        raise message_error(400, f"Expected a list for {key}")
    return value


def _unique_by_id(items: list) -> list:
    seen: set[Any] = set()
    out = []
    for item in items:
        key = item.get("ID") if isinstance(item, dict) else id(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _non_negative(value: str | None, default: int) -> int:
    try:
        number = int(value) if value is not None else default
    except ValueError:
        return default
    return number if number >= 0 else default


# --- business rules --------------------------------------------------------------------

def _check_customer(doc: Doc, results: dict[str, list]) -> None:
    number = doc.get("CustomerNumber")
    low, high = CUSTOMER_NUMBERS
    if not (type(number) is int and low <= number <= high):
        results["CustomerNumber"] = [validation_result(
            f"Kundenummer må være mellom {low} og {high}", "Customer", "CustomerNumber")]
    info = doc.get("Info")
    name = info.get("Name") if isinstance(info, dict) else None
    if not (isinstance(name, str) and name.strip()):
        results["Info.Name"] = [validation_result("Navn er påkrevd", "BusinessRelation", "Name")]


def _check_project(doc: Doc, results: dict[str, list]) -> None:
    name = doc.get("Name")
    if not (isinstance(name, str) and name.strip()):
        results["Name"] = [validation_result("Prosjektnavn er påkrevd", "Project", "Name")]
    number = doc.get("ProjectNumber")
    if number is not None and not (isinstance(number, str) and number.isdigit()):
        results["ProjectNumber"] = [validation_result(
            "Prosjektnummer må være numerisk", "Project", "ProjectNumber")]


def _check_journal_entry(doc: Doc, results: dict[str, list]) -> None:
    lines = doc.get("DraftLines") or []
    if not lines:
        results["DraftLines"] = [validation_result(
            "Bilaget mangler linjer", "JournalEntry", "DraftLines")]
        return
    total = Decimal(0)
    for line in lines:
        try:
            amount = Decimal(str(line.get("Amount")))
            total += amount
        except InvalidOperation:
            results["Amount"] = [validation_result(
                "Beløp mangler eller er ugyldig", "JournalEntryLineDraft", "Amount")]
            continue
        if amount != amount.quantize(ORE):
            results["Amount"] = [validation_result(
                f"Beløp {amount} har flere enn to desimaler", "JournalEntryLineDraft", "Amount")]
        if line.get("AmountCurrency") is not None:
            try:
                in_currency = Decimal(str(line["AmountCurrency"]))
                wrong = in_currency != in_currency.quantize(ORE) or not line.get("CurrencyCodeID")
            except InvalidOperation:
                wrong = True
            if wrong:
                results["AmountCurrency"] = [validation_result(
                    "Beløp i valuta må ha valuta og høyst to desimaler", "JournalEntryLineDraft",
                    "AmountCurrency")]
        if not line.get("AccountID"):
            results["AccountID"] = [validation_result(
                "Konto mangler", "JournalEntryLineDraft", "AccountID")]
        if not line.get("FinancialDate"):
            results["FinancialDate"] = [validation_result(
                "Regnskapsdato mangler", "JournalEntryLineDraft", "FinancialDate")]
    if "Amount" not in results and total != 0:
        results["Amount"] = [validation_result(
            f"Bilaget er ikke i balanse (differanse {total})", "JournalEntry", "DraftLines")]


RULES: dict[str, Callable[[Doc, dict[str, list]], None]] = {
    "Customer": _check_customer,
    "Project": _check_project,
    "JournalEntry": _check_journal_entry,
}


# --- the HTTP app ----------------------------------------------------------------------

def create_sb1_app(store: SB1Store, faults: Faults, issuer_url: str | None = None) -> Flask:
    """The SpareBank 1 Regnskap stand-in: identity server plus ``/api/biz``."""
    app = Flask("sb1_sandbox")
    app.json = DecimalJSONProvider(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    faults.install(app)
    install_files(app, store)     # the Files host and the file routes (sandbox/files.py)
    from .statistics import install_statistics; install_statistics(app, store)  # GET /api/statistics

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify({"Message": exc.description}), exc.code

    @app.get("/.well-known/openid-configuration")
    def discovery():
        base = request.host_url.rstrip("/")
        return jsonify({
            "issuer": issuer_url or base,
            "token_endpoint": base + TOKEN_PATH,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_post",
                                                      "client_secret_basic"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
            "scopes_supported": [SCOPE],
        })

    @app.post(TOKEN_PATH)
    def token():
        try:
            client_id = store.authenticate_client(request.form, request.authorization,
                                                  request.base_url)
        except OAuthError as exc:
            return jsonify(exc.body), 400
        scopes = request.form.get("scope", "").split()
        if scopes and SCOPE not in scopes:
            return jsonify({"error": "invalid_scope",
                            "error_description": f"scope must include {SCOPE}"}), 400
        response = jsonify(store.issue_token(client_id))
        response.headers["Cache-Control"] = "no-store"
        return response

    def unauthorized(message: str = "Unauthorized") -> tuple[Response, int]:
        response = jsonify({"Message": message})
        response.headers["WWW-Authenticate"] = "Bearer"
        return response, 401

    def json_body() -> Any:
        try:   # numbers with a fraction as Decimal: what was sent, digit for digit
            return json.loads(request.get_data(), parse_float=Decimal)
        except ValueError:
            raise message_error(400, "The request body is not valid JSON") from None

    @app.route("/api/biz/<route>", methods=["GET", "POST", "PUT", "DELETE"])
    @app.route("/api/biz/<route>/<id_>", methods=["GET", "POST", "PUT", "DELETE"])
    def business(route: str, id_: str | None = None):
        store.count_request(request.method, route)
        auth = request.headers.get("Authorization", "")
        scheme, _, token_value = auth.partition(" ")
        client_id = store.check_token(token_value.strip()) if scheme.lower() == "bearer" else None
        if client_id is None:
            return unauthorized()
        company_key = request.headers.get("CompanyKey", "").strip()
        if store.company(company_key) is None:
            return unauthorized("Missing or unknown CompanyKey")
        with store.lock:
            store.request_times[company_key].append(time.time())
        if (route, request.method, request.args.get("action")) == (
                "currencies", "GET", "get-currency-exchange-rate"):    # an action, not a table here
            try:
                return jsonify(store.exchange_rate(company_key, request.args))
            except ApiError as exc:
                return jsonify(exc.body), exc.status
        if route not in ROUTES:
            return jsonify({"Message": f"No route named '{route}'"}), 404
        try:
            return dispatch(company_key, route, id_, client_id)
        except ApiError as exc:
            return jsonify(exc.body), exc.status

    def dispatch(company_key: str, route: str, id_text: str | None, user: str):
        method = request.method
        action = request.args.get("action")
        if id_text is not None and not id_text.isdigit():
            raise message_error(404, f"No {ROUTES[route]} with ID '{id_text}'")
        id_ = int(id_text) if id_text is not None else None
        if action:
            if (method, route, action, id_) == ("POST", "journalentries",
                                                "book-journal-entries", None):
                return jsonify(store.book_journal_entries(company_key, json_body(), user))
            raise message_error(400, f"Action '{action}' is not supported by the sandbox")
        if method == "GET" and id_ is None:
            return jsonify(store.query(company_key, route, request.args))
        if method == "GET":
            return jsonify(store.get(company_key, route, id_, request.args.get("expand"),
                                     request.args.get("select")))
        if method == "POST" and id_ is None:
            return jsonify(store.create(company_key, route, json_body(), user)), 201
        if method == "PUT" and id_ is not None:
            return jsonify(store.update(company_key, route, id_, json_body(), user))
        if method == "DELETE" and id_ is not None:
            store.delete(company_key, route, id_)
            return Response(status=204)
        return jsonify({"Message": f"{method} is not allowed here"}), 405

    @app.get("/_sandbox/state")
    def state():
        with store.lock:
            return jsonify({
                "token_requests": store.token_requests,
                "writes": [{"company_key": k, "method": m, "route": r, "count": c}
                           for (k, m, r), c in sorted(store.writes.items())],
                "requests": [{"method": m, "route": r, "count": c}
                             for (m, r), c in sorted(store.requests.items())],
                "companies": {c.key: {"name": c.name,
                                      **{route: len(t) for route, t in c.tables.items()}}
                              for c in store.companies.values()},
                "faults": faults.to_dict(),
            })

    @app.get("/_sandbox/companies/<company_key>/<route>")
    def documents(company_key: str, route: str):
        if store.company(company_key) is None or route not in ROUTES:
            return jsonify({"Message": "unknown company or route"}), 404
        return jsonify(store.documents(company_key, route))

    write_log: list[dict] = []
    log_only: dict[str, str | None] = {"company_key": None}

    def log_write(company_key: str, method: str, route: str, doc: dict) -> None:
        if log_only["company_key"] not in (None, company_key):
            return
        write_log.append({"t": time.time(), "company_key": company_key, "method": method,
                          "route": route, "ID": doc.get("ID"), "doc": copy.deepcopy(doc)})

    @app.route("/_sandbox/write-log", methods=["GET", "POST"])
    def write_log_route():
        """POST {"enabled": true|false} starts or stops recording every write with its
        time (for benchmarks; "company_key" records only that company's); GET returns what
        was recorded."""
        if request.method == "POST":
            options = request.get_json(silent=True) or {}
            enabled = bool(options.get("enabled"))
            log_only["company_key"] = options.get("company_key")
            with store.lock:
                if log_write in store.write_listeners:
                    store.write_listeners.remove(log_write)
                if enabled:
                    write_log.clear()
                    store.write_listeners.append(log_write)
            return jsonify({"enabled": enabled})
        with store.lock:
            return jsonify(list(write_log))

    @app.post("/_sandbox/revoke-tokens")
    def revoke_tokens():
        store.revoke_tokens()
        return jsonify({"revoked": True})

    install_event_plans(app, store)      # /api/biz/eventplans, and signed webhooks after writes
    return app
