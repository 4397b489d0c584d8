"""Stand-in for Moment's REST API (``/api/1.0/companies/{company}/{entity}``).

Record shapes follow the *assumed* JSON of the domain brief (camelCase).
"""
from __future__ import annotations

import copy
import hmac
import math
import random
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from .faults import Faults
from .files import install_moment_pdf

API_PREFIX = "/api/1.0/companies"
ENTITIES = ("customers", "projects", "invoices")
FIRST_ID = 1000001
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

Record = dict[str, Any]
Listener = Callable[[str, str, str, Record], None]  # (company, entity, event, record)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def parse_timestamp(value: str) -> datetime:
    """ISO 8601 into an aware datetime (``Z`` and a '+' decoded as space are accepted)."""
    text = value.strip().replace(" ", "+")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class MomentStore:
    """Thread-safe in-memory records: company -> entity -> {id: record}."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.api_keys: dict[str, str] = {}
        self.data: dict[str, dict[str, dict[int, Record]]] = {}
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, entity)
        self.listeners: list[Listener] = []  # called after every create/update/delete
        self._next_id = FIRST_ID
        self._last_modified = datetime.min.replace(tzinfo=timezone.utc)

    def add_company(self, code: str, api_key: str) -> None:
        """Register a company (or replace its API key)."""
        with self._lock:
            self.api_keys[code] = api_key
            self.data.setdefault(code, {entity: {} for entity in ENTITIES})

    def check_api_key(self, code: str, api_key: str | None) -> bool:
        expected = self.api_keys.get(code)
        return bool(expected and api_key) and hmac.compare_digest(expected, api_key or "")

    def count_request(self, method: str, entity: str) -> None:
        with self._lock:
            self.requests[(method, entity)] += 1

    def _table(self, company: str, entity: str) -> dict[int, Record]:
        if company not in self.data:
            raise KeyError(f"unknown company {company!r}")
        return self.data[company].setdefault(entity, {})

    def _stamp(self) -> str:
        """Now as ISO 8601, strictly later than every earlier stamp."""
        now = _now()
        if now <= self._last_modified:
            now = self._last_modified + timedelta(microseconds=1)
        self._last_modified = now
        return now.isoformat(timespec="microseconds")

    def _notify(self, company: str, entity: str, event: str, record: Record) -> None:
        for listener in list(self.listeners):
            listener(company, entity, event, copy.deepcopy(record))

    def create(self, company: str, entity: str, data: Record) -> Record:
        """Insert a record; assigns ``id`` and ``lastModifiedDate``."""
        with self._lock:
            table = self._table(company, entity)
            record = {k: copy.deepcopy(v) for k, v in data.items() if k != "id"}
            record = {"id": self._next_id, **record, "lastModifiedDate": self._stamp()}
            self._next_id += 1
            table[record["id"]] = record
            result = copy.deepcopy(record)
        self._notify(company, entity, "CREATE_NEW", result)
        return result

    def insert_raw(self, company: str, entity: str, record: Record) -> int:
        """Store ``record`` exactly as given (a broken one: an id that is no number, no
        lastModifiedDate), as a hostile upstream might list it; returns its table key."""
        with self._lock:
            table = self._table(company, entity)
            rid = record.get("id")
            key = rid if isinstance(rid, int) and not isinstance(rid, bool) else self._next_id
            self._next_id = max(self._next_id, key) + 1
            table[key] = copy.deepcopy(record)
            return key

    def update(self, company: str, entity: str, id: int, data: Record,
               partial: bool = True) -> Record:
        """Merge (``partial``, nested dicts too) or replace a record; KeyError if it is gone."""
        with self._lock:
            table = self._table(company, entity)
            current = table[int(id)]
            changes = {k: copy.deepcopy(v) for k, v in data.items()
                       if k not in ("id", "lastModifiedDate")}
            if partial:
                record = copy.deepcopy(current)
                for key, value in changes.items():
                    if isinstance(value, dict) and isinstance(record.get(key), dict):
                        record[key].update(value)
                    else:
                        record[key] = value
            else:
                record = {"id": current["id"], **changes}
            record["lastModifiedDate"] = self._stamp()
            table[int(id)] = record
            result = copy.deepcopy(record)
        self._notify(company, entity, "UPDATE", result)
        return result

    def get(self, company: str, entity: str, id: int) -> Record | None:
        with self._lock:
            record = self._table(company, entity).get(int(id))
            return copy.deepcopy(record) if record else None

    def delete(self, company: str, entity: str, id: int) -> bool:
        """Remove a record; False if it did not exist."""
        with self._lock:
            record = self._table(company, entity).pop(int(id), None)
        if record:
            self._notify(company, entity, "DELETE", record)
        return record is not None

    def list(self, company: str, entity: str, modified_from: datetime | None = None,
             modified_to: datetime | None = None) -> list[Record]:
        """Records by id; only those with ``modified_from <= lastModifiedDate <= modified_to``.

        The stored records themselves, not copies, for the caller to read only: a stored
        record is never changed in place (an update stores a new one), so a listing stays
        as it was taken. Copying a whole table for every page held the store's lock for
        150 ms at 10,000 customers, a stall of every other call the real Moment does not have."""
        with self._lock:
            table = self._table(company, entity)
            records = [table[key] for key in sorted(table)]
        def modified(record: Record) -> datetime:
            try:
                return parse_timestamp(record["lastModifiedDate"])
            except (KeyError, TypeError, ValueError):   # a broken record is listed always
                return datetime.max.replace(tzinfo=timezone.utc)
        if modified_from is not None:
            records = [r for r in records if modified(r) >= modified_from]
        if modified_to is not None:
            records = [r for r in records if modified(r) <= modified_to]
        return records

    def count(self, company: str, entity: str) -> int:
        with self._lock:
            return len(self._table(company, entity))

    def counts(self) -> dict[str, dict[str, int]]:
        """company -> entity -> number of records."""
        with self._lock:
            return {code: {entity: len(table) for entity, table in tables.items()}
                    for code, tables in self.data.items()}


def _sort_key(value: Any) -> tuple:
    """Ints in order, anything else (a broken record's id) after them."""
    return (0, value, "") if isinstance(value, int) and not isinstance(value, bool) else (1, 0, str(value))


def webhook_payload(entity: str, event: str, record: Record) -> dict[str, Any]:
    """The (assumed) webhook body Moment would send for a change of ``record``."""
    key = entity.rstrip("s")
    ref = {"id": record["id"]}
    for number_field in ("customerNumber", "projectNumber", "invoiceNumber"):
        if number_field in record:
            ref[number_field] = record[number_field]
    for relation in ("customer", "project"):
        if isinstance(record.get(relation), dict):
            ref[relation] = copy.deepcopy(record[relation])
    return {"event": event, key: ref}


# --- sample data -------------------------------------------------------------------------

_NAME_FIRST = ["Fjordkraft", "Nordlys", "Fjellheim", "Havbris", "Vestland", "Midnattsol",
               "Bryggen", "Trollheimen", "Polarlys", "Skagerrak", "Lofoten", "Dovre",
               "Hardanger", "Nidaros", "Solsiden", "Viken", "Jotun", "Stølen", "Bølgen",
               "Aurora", "Sognefjord", "Tindeløft", "Nordkapp", "Finnmark", "Romsdal"]
_NAME_TRADE = ["Bygg", "Elektro", "Rør", "Transport", "Regnskap", "Maskin", "Eiendom", "Data",
               "Consulting", "Snekkeri", "Arkitekter", "Marine", "Energi", "Entreprenør",
               "Maling", "Catering", "Advokatfirma", "Reklame", "Logistikk", "Trearbeid"]
_NAME_SUFFIX = ["AS", "AS", "AS", "AS", "ASA", "ANS", "DA"]
_STREETS = ["Storgata", "Kirkegata", "Strandgata", "Dronningens gate", "Kongens gate",
            "Parkveien", "Sjøgata", "Torggata", "Industriveien", "Havnegata", "Fjordveien",
            "Skolegata", "Bryggeveien", "Løkkeveien", "Vestre gate", "Øvre Slottsgate",
            "Nedre Vollgate", "Elvegata", "Bjørkeveien", "Grønland"]
# city -> (postal codes, telephone area prefix)
_CITIES: dict[str, tuple[list[str], str]] = {
    "Oslo": (["0150", "0151", "0152", "0154", "0155", "0158", "0159", "0160", "0182"], "22"),
    "Bergen": (["5003", "5004", "5007", "5008", "5011", "5015"], "55"),
    "Trondheim": (["7010", "7011", "7013", "7014", "7030"], "73"),
    "Stavanger": (["4005", "4006", "4007", "4008", "4010"], "51"),
    "Tromsø": (["9008", "9009", "9010"], "77"),
    "Kristiansand": (["4610", "4611", "4612", "4614"], "38"),
    "Drammen": (["3015", "3016", "3017", "3019"], "32"),
    "Bodø": (["8006", "8007", "8008"], "75"),
    "Ålesund": (["6002", "6003", "6004", "6005"], "70"),
    "Fredrikstad": (["1606", "1607", "1608"], "69"),
}
_ORG_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)


def _org_number(rng: random.Random) -> str:
    """A 9-digit Norwegian organisation number with a valid MOD11 check digit."""
    while True:
        digits = [rng.choice((8, 9))] + [rng.randrange(10) for _ in range(7)]
        rest = sum(d * w for d, w in zip(digits, _ORG_WEIGHTS)) % 11
        check = 0 if rest == 0 else 11 - rest
        if check != 10:
            return "".join(map(str, digits)) + str(check)


def _slug(name: str) -> str:
    text = name.lower()
    for src, dst in (("æ", "ae"), ("ø", "o"), ("å", "a")):
        text = text.replace(src, dst)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = [w for w in text.replace("&", " ").split() if w not in ("as", "asa", "ans", "da")]
    return "-".join(words) or "firma"


def _phone(rng: random.Random, prefix: str) -> str:
    rest = f"{rng.randrange(100000, 1000000):06d}"
    return f"+47 {prefix} {rest[:2]} {rest[2:4]} {rest[4:]}"


def sample_customer(rng: random.Random, customer_number: str, used_names: set[str]) -> Record:
    """One realistic Norwegian customer (without ``id``/``lastModifiedDate``)."""
    name = ""
    for _ in range(20):
        name = f"{rng.choice(_NAME_FIRST)} {rng.choice(_NAME_TRADE)} {rng.choice(_NAME_SUFFIX)}"
        if name not in used_names:
            break
    used_names.add(name)
    city = rng.choice(list(_CITIES))
    postal_codes, area = _CITIES[city]
    slug = _slug(name)
    currency = rng.choices(["NOK", "EUR", "SEK"], weights=[18, 1, 1])[0]
    line2 = rng.choice(["", "", "", f"Postboks {rng.randrange(1, 999)}", "2. etasje",
                        f"Bygg {rng.choice('ABC')}"])
    return {
        "name": name,
        "customerNumber": customer_number,
        "organizationNumber": _org_number(rng),
        "email": f"{rng.choice(['post', 'faktura', 'regnskap', 'kontakt'])}@{slug}.no",
        "website": f"https://www.{slug}.no",
        "phone": _phone(rng, area),
        "fax": _phone(rng, area),
        "currencyCode": currency,
        "countryCode": "NO",
        "address": {
            "addressLine1": f"{rng.choice(_STREETS)} {rng.randrange(1, 120)}",
            "addressLine2": line2,
            "postalCode": rng.choice(postal_codes),
            "city": city,
            "countryCode": "NO",
        },
    }


def seed_customers(store: MomentStore, company: str, n: int, start_number: int = 100001,
                   rng_seed: int = 0) -> list[Record]:
    """Create ``n`` sample customers numbered from ``start_number``; return them."""
    rng = random.Random(rng_seed)
    used: set[str] = set()
    return [store.create(company, "customers", sample_customer(rng, str(start_number + i), used))
            for i in range(n)]


def kid_mod10(base: str) -> str:
    """``base`` with its MOD10 (Luhn) check digit: the usual Norwegian KID."""
    total = 0
    for i, ch in enumerate(reversed(base)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return base + str((10 - total % 10) % 10)


_PROJECT_WORDS = ["Nytt kontorbygg", "Rehabilitering", "Tilbygg", "Ny nettside", "Vedlikehold",
                  "Riving og nybygg", "Varmepumpe", "Bad og kjøkken", "Fasade", "Takomlegging"]
_PLACES = ["Lysaker", "Fornebu", "Sandvika", "Grünerløkka", "Nydalen", "Bryggen", "Lade", "Hillevåg"]
_LINE_TEXTS = {"HOURS": ["Prosjektledelse", "Tømrerarbeid", "Rørleggerarbeid", "Konsulenttimer"],
               "PRODUCTS": ["Materialer", "Servering byggemøte", "Utstyrsleie"],
               "EXPENSES": ["Reisekostnader", "Parkering", "Avfallshåndtering"]}


def seed_projects(store: MomentStore, company: str, customers: list[Record], n: int,
                  start_number: int = 1001, rng_seed: int = 0) -> list[Record]:
    """``n`` sample projects spread over ``customers``, numbered from ``start_number``."""
    rng = random.Random(rng_seed)
    projects = []
    for i in range(n):
        customer = customers[i % len(customers)]
        start = datetime(2026, 1, 1) + timedelta(days=rng.randint(0, 300))
        projects.append(store.create(company, "projects", {
            "name": f"{rng.choice(_PROJECT_WORDS)} {rng.choice(_PLACES)}",
            "projectNumber": str(start_number + i),
            "projectState": rng.choice(["PLANNED", "ACTIVE", "ACTIVE", "ACTIVE", "COMPLETED"]),
            "customer": {"id": customer["id"], "customerNumber": customer["customerNumber"]},
            "startDate": start.date().isoformat(),
            "endDate": (start + timedelta(days=rng.randint(30, 400))).date().isoformat()}))
    return projects


def sample_invoice(rng: random.Random, number: int, customer: Record, project: Record | None,
                   status: str = "FINALIZED") -> Record:
    lines = []
    for product_type, vat_code in [("HOURS", "3"), ("PRODUCTS", rng.choice(["3", "31", "33"])),
                                   ("EXPENSES", rng.choice(["3", "5", "6"]))][:rng.randint(1, 3)]:
        quantity = rng.choice([1, 2, 4, 7.5, 16, 37.5]) if product_type == "HOURS" else 1
        price = rng.choice([950, 1150, 1250, 1450]) if product_type == "HOURS" else rng.randint(200, 25000)
        lines.append({"itemText": rng.choice(_LINE_TEXTS[product_type]), "quantity": str(quantity),
                      "amountExclVat": f"{quantity * price + rng.randint(0, 99) / 100:.2f}",
                      "vatCode": vat_code, "productType": product_type})
    invoice_date = datetime(2026, 11, 1) + timedelta(days=rng.randint(0, 20))
    record: Record = {
        "invoiceNumber": number, "status": status, "invoiceDate": invoice_date.date().isoformat(),
        "dueDate": (invoice_date + timedelta(days=14)).date().isoformat(),
        "paymentId": kid_mod10(f"{int(customer['customerNumber']):07d}{number:06d}") if rng.random() < 0.8 else "",
        "description": project["name"] if project else "Tjenester", "currencyCode": "NOK",
        "customer": {"id": customer["id"], "customerNumber": customer["customerNumber"]}, "lines": lines}
    if project:
        record["project"] = {"id": project["id"], "projectNumber": project["projectNumber"]}
    return record


def seed_invoices(store: MomentStore, company: str, projects: list[Record], customers: list[Record], n: int,
                  start_number: int = 10001, rng_seed: int = 0) -> list[Record]:
    """``n`` sample finalized invoices (lines at 25/15/12/0 % VAT, KID, due date)."""
    rng = random.Random(rng_seed)
    by_id = {c["id"]: c for c in customers}
    invoices = []
    for i in range(n):
        project = projects[i % len(projects)] if projects else None
        customer = by_id[project["customer"]["id"]] if project else customers[i % len(customers)]
        invoices.append(store.create(company, "invoices", sample_invoice(rng, start_number + i, customer, project)))
    return invoices


class WebhookSender:
    """Sends Moment's (assumed) webhooks for every change of a company's records to a URL,
    from a background thread, as Moment does. Attach with ``store.listeners.append(sender)``."""

    def __init__(self, timeout: float = 5.0):
        import queue
        import requests
        self.urls: dict[str, str] = {}
        self.sent: list[tuple[str, int]] = []        # (payload key, HTTP status)
        self._queue: "queue.Queue[tuple[str, dict] | None]" = queue.Queue()
        self._session = requests.Session()
        self._timeout = timeout
        self._thread = threading.Thread(target=self._run, name="moment-webhooks", daemon=True)
        self._thread.start()

    def __call__(self, company: str, entity: str, event: str, record: Record) -> None:
        url = self.urls.get(company)
        if url:
            self._queue.put((url, webhook_payload(entity, event, record)))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            url, payload = item
            try:
                status = self._session.post(url, json=payload, timeout=self._timeout).status_code
            except Exception:
                status = 0       # Moment documents no retries; the worker's poll catches it
            self.sent.append((next(k for k in payload if k != "event"), status))

    def stop(self) -> None:
        self._queue.put(None)


# --- the HTTP app ------------------------------------------------------------------------

def _error(status: int, error: str, message: str) -> tuple[Response, int]:
    """A Spring-Boot-like error body (Moment's real error shape is not documented)."""
    body = {"timestamp": _now().isoformat(timespec="milliseconds"), "status": status,
            "error": error, "message": message, "path": request.path}
    return jsonify(body), status


def create_moment_app(store: MomentStore, faults: Faults, webhooks: WebhookSender | None = None) -> Flask:
    """The Moment stand-in: Basic auth (``apikey`` / company API key), CRUD and paged lists."""
    app = Flask("moment_sandbox")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    faults.install(app)
    install_moment_pdf(app, store, API_PREFIX)     # an invoice as a PDF (sandbox/files.py)
    base = API_PREFIX + "/<company>/<entity>"

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return _error(exc.code or 500, exc.name, exc.description or "")

    def check(company: str, entity: str) -> tuple[Response, int] | None:
        store.count_request(request.method, entity)
        auth = request.authorization
        if (auth is None or auth.type != "basic" or auth.username != "apikey"
                or not store.check_api_key(company, auth.password)):
            response, status = _error(401, "Unauthorized", "Full authentication is required")
            response.headers["WWW-Authenticate"] = 'Basic realm="Moment"'
            return response, status
        if entity not in ENTITIES:
            return _error(404, "Not Found", f"Unknown entity {entity}")
        return None

    def json_object() -> Record | None:
        body = request.get_json(force=True, silent=True)
        return body if isinstance(body, dict) else None

    @app.get(base)
    def list_records(company: str, entity: str):
        if failed := check(company, entity):
            return failed
        args = request.args
        try:
            page = int(args.get("page", 1))
            size = min(int(args.get("size", DEFAULT_PAGE_SIZE)), MAX_PAGE_SIZE)
            modified_from = args.get("lastModifiedDateFrom")
            modified_to = args.get("lastModifiedDateTo")
            records = store.list(company, entity,
                                 parse_timestamp(modified_from) if modified_from else None,
                                 parse_timestamp(modified_to) if modified_to else None)
        except ValueError as exc:
            return _error(400, "Bad Request", f"Invalid parameter: {exc}")
        if page < 1 or size < 1:
            return _error(400, "Bad Request", "page must be >= 1 and size >= 1")
        if ids := args.get("ids"):
            wanted = {part.strip() for part in ids.split(",")}
            records = [r for r in records if str(r["id"]) in wanted]
        sort_field, _, direction = args.get("sort", "id,asc").partition(",")
        if sort_field in ("id", "lastModifiedDate"):
            records.sort(key=lambda r: _sort_key(r.get(sort_field)), reverse=direction.lower() == "desc")
        total = len(records)
        content = records[(page - 1) * size: page * size]
        return jsonify({"content": content,
                        "page": {"number": page, "size": size, "totalElements": total,
                                 "totalPages": math.ceil(total / size)}})

    @app.get(base + "/<int:id>")
    def get_record(company: str, entity: str, id: int):
        if failed := check(company, entity):
            return failed
        record = store.get(company, entity, id)
        if record is None:
            return _error(404, "Not Found", f"No {entity} with id {id}")
        return jsonify(record)

    @app.post(base)
    def create_record(company: str, entity: str):
        if failed := check(company, entity):
            return failed
        body = json_object()
        if body is None:
            return _error(400, "Bad Request", "Expected a JSON object")
        return jsonify(store.create(company, entity, body)), 201

    @app.route(base + "/<int:id>", methods=["PUT", "PATCH"])
    def update_record(company: str, entity: str, id: int):
        if failed := check(company, entity):
            return failed
        body = json_object()
        if body is None:
            return _error(400, "Bad Request", "Expected a JSON object")
        try:
            record = store.update(company, entity, id, body, partial=request.method == "PATCH")
        except KeyError:
            return _error(404, "Not Found", f"No {entity} with id {id}")
        return jsonify(record)

    @app.delete(base + "/<int:id>")
    def delete_record(company: str, entity: str, id: int):
        if failed := check(company, entity):
            return failed
        if not store.delete(company, entity, id):
            return _error(404, "Not Found", f"No {entity} with id {id}")
        return Response(status=204)

    @app.get("/_sandbox/state")
    def state():
        return jsonify({"companies": store.counts(),
                        "requests": [{"method": m, "entity": e, "count": c}
                                     for (m, e), c in sorted(store.requests.items())],
                        "faults": faults.to_dict(),
                        "webhooks": {"urls": sorted(webhooks.urls) if webhooks else [],
                                     "sent": len(webhooks.sent) if webhooks else 0}})

    @app.post("/_sandbox/webhooks")
    def set_webhook():
        """``{"company": "acme", "url": "http://.../webhooks/acme/<secret>"}``: send that
        company's webhooks there (``"url": null`` stops them)."""
        body = json_object() or {}
        if webhooks is None or body.get("company") not in store.api_keys:
            return _error(400, "Bad Request", "unknown company (or webhooks not enabled)")
        if body.get("url"):
            webhooks.urls[body["company"]] = body["url"]
        else:
            webhooks.urls.pop(body["company"], None)
        return jsonify({"company": body["company"], "url": body.get("url")})

    return app
