"""The local stand-ins for Moment and SpareBank 1 Regnskap, over real HTTP."""
from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.faults import Faults
from sandbox.moment import MomentStore, parse_timestamp, seed_customers
from sandbox.sb1 import JWT_BEARER, PUT_CREATE_MESSAGE
from sandbox.sb1_schema import load_schema
from sandbox.server import Sandbox, run_sandbox

CLIENT_ID = "moment-sb1-test"
SECRET_CLIENT = "secret-client"
SECRET = "s3cret"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def sb(rsa_key) -> Any:
    with Sandbox(seed=1) as sandbox:
        public_pem = rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        sandbox.add_client(CLIENT_ID, public_key_pem=public_pem)
        sandbox.add_client(SECRET_CLIENT, client_secret=SECRET)
        yield sandbox


@pytest.fixture(autouse=True)
def _clean_faults(request):
    yield
    if "sb" in request.fixturenames:
        sandbox = request.getfixturevalue("sb")
        sandbox.reset_faults()
        sandbox.sb1.token_lifetime = 3600


@pytest.fixture
def company(sb) -> dict[str, str]:
    """A fresh company in both systems (3 Moment customers)."""
    code = "acme-" + uuid.uuid4().hex[:8]
    key = str(uuid.uuid4())
    sb.add_company(code, "key-" + code, key, name="Acme AS", seed_customers=3)
    return {"code": code, "api_key": "key-" + code, "key": key}


def assertion(key: rsa.RSAPrivateKey, audience: str, **claims: Any) -> str:
    now = datetime.now(timezone.utc)
    payload = {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": audience, "jti": str(uuid.uuid4()),
               "iat": now, "exp": now + timedelta(minutes=5), **claims}
    return jwt.encode(payload, key, algorithm="RS256")


def jwt_token_request(sb, token: str) -> requests.Response:
    return requests.post(sb.token_url, data={
        "grant_type": "client_credentials", "scope": "AppFramework",
        "client_assertion_type": JWT_BEARER, "client_assertion": token})


def secret_token(sb) -> str:
    response = requests.post(sb.token_url, data={
        "grant_type": "client_credentials", "client_id": SECRET_CLIENT,
        "client_secret": SECRET, "scope": "AppFramework"})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


class Biz:
    """A tiny client of one company's business API."""

    def __init__(self, sb, company_key: str, token: str | None = None):
        self.base = sb.sb1_url + "/api/biz/"
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {token or secret_token(sb)}",
                                     "CompanyKey": company_key})

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.session.get(self.base + path, params=params)

    def post(self, path: str, body: Any) -> requests.Response:
        return self.session.post(self.base + path, json=body)

    def put(self, path: str, body: Any) -> requests.Response:
        return self.session.put(self.base + path, json=body)


@pytest.fixture
def biz(sb, company) -> Biz:
    return Biz(sb, company["key"])


def customer_body(number: int = 100001, name: str = "Fjordkraft Bygg AS", **extra: Any) -> dict:
    return {"CustomerNumber": number, "OrgNumber": "923609016", "_createguid": str(uuid.uuid4()),
            "Info": {"Name": name,
                     "DefaultEmail": {"EmailAddress": "post@fjordkraft-bygg.no"},
                     "DefaultPhone": {"Number": "+47 22 12 34 56", "Type": 150101},
                     "InvoiceAddress": {"AddressLine1": "Storgata 1", "PostalCode": "0150",
                                        "City": "Oslo", "CountryCode": "NO"}},
            **extra}


# --- Moment -----------------------------------------------------------------------------

def test_moment_basic_auth(sb, company):
    url = sb.moment_company_url(company["code"]) + "/customers"
    assert requests.get(url).status_code == 401
    assert requests.get(url, auth=("apikey", "wrong")).status_code == 401
    assert requests.get(url, auth=("user", company["api_key"])).status_code == 401
    unknown = sb.moment_company_url("nobody") + "/customers"
    assert requests.get(unknown, auth=("apikey", company["api_key"])).status_code == 401
    ok = requests.get(url, auth=("apikey", company["api_key"]))
    assert ok.status_code == 200 and ok.json()["page"]["totalElements"] == 3
    other = sb.moment_company_url(company["code"]) + "/timeRecords"
    assert requests.get(other, auth=("apikey", company["api_key"])).status_code == 404


def test_moment_paging_and_modified_from(sb, company):
    auth = ("apikey", company["api_key"])
    base = sb.moment_company_url(company["code"]) + "/customers"
    seed_customers(sb.moment, company["code"], 4, start_number=100004)
    pages = [requests.get(base, auth=auth, params={"page": p, "size": 3}).json()
             for p in (1, 2, 3)]
    assert [len(p["content"]) for p in pages] == [3, 3, 1]
    assert pages[0]["page"] == {"number": 1, "size": 3, "totalElements": 7, "totalPages": 3}
    ids = [c["id"] for p in pages for c in p["content"]]
    assert ids == sorted(ids) and ids[0] >= 1000001 and len(set(ids)) == 7

    changed = requests.patch(f"{base}/{ids[1]}", auth=auth, json={"email": "ny@firma.no"}).json()
    assert changed["email"] == "ny@firma.no" and changed["name"]  # PATCH keeps other fields
    since = parse_timestamp(changed["lastModifiedDate"])
    body = requests.get(base, auth=auth, params={"lastModifiedDateFrom": since.isoformat()}).json()
    assert [c["id"] for c in body["content"]] == [ids[1]]  # inclusive, '+' survives
    later = (since + timedelta(microseconds=1)).isoformat()
    assert requests.get(base, auth=auth, params={"lastModifiedDateFrom": later}).json()[
        "content"] == []


def test_moment_crud_and_record_shape(sb, company):
    auth = ("apikey", company["api_key"])
    base = sb.moment_company_url(company["code"]) + "/customers"
    first = requests.get(base, auth=auth).json()["content"][0]
    assert set(first) == {"id", "name", "customerNumber", "organizationNumber", "email",
                          "website", "phone", "fax", "currencyCode", "countryCode", "address",
                          "lastModifiedDate"}
    assert first["customerNumber"] == "100001" and len(first["organizationNumber"]) == 9
    assert first["phone"].startswith("+47 ") and first["address"]["countryCode"] == "NO"
    created = requests.post(base, auth=auth,
                            json={"name": "Ny Kunde AS", "customerNumber": "100099"})
    assert created.status_code == 201
    record_id = created.json()["id"]
    replaced = requests.put(f"{base}/{record_id}", auth=auth, json={"name": "Bare Navn AS"}).json()
    assert replaced["name"] == "Bare Navn AS" and "customerNumber" not in replaced
    assert requests.delete(f"{base}/{record_id}", auth=auth).status_code == 204
    missing = requests.get(f"{base}/{record_id}", auth=auth)
    assert missing.status_code == 404 and missing.json()["status"] == 404


def test_moment_timestamps_strictly_increase():
    store = MomentStore()
    store.add_company("c", "k")
    record = store.create("c", "customers", {"name": "A"})
    stamps = [record["lastModifiedDate"]]
    for _ in range(200):
        updated = store.update("c", "customers", record["id"], {"name": "B"})
        stamps.append(updated["lastModifiedDate"])
    parsed = [parse_timestamp(s) for s in stamps]
    assert all(a < b for a, b in zip(parsed, parsed[1:]))
    assert stamps[0].endswith("+00:00") and "." in stamps[0]


def test_a_moment_listing_stays_as_it_was_taken():
    """The store lists its records without copying them (a copy of every record for each
    page stalled a 10,000-customer sandbox): that holds only while a stored record is never
    changed in place."""
    store = MomentStore()
    store.add_company("c", "k")
    ids = [store.create("c", "customers", {"name": n, "address": {"city": "Bergen"}})["id"]
           for n in ("A", "B", "C")]
    listed = store.list("c", "customers")
    taken = copy.deepcopy(listed)
    store.update("c", "customers", ids[0], {"name": "A2", "address": {"city": "Oslo"}})
    store.update("c", "customers", ids[1], {"name": "B2"}, partial=False)
    store.delete("c", "customers", ids[2])
    assert listed == taken
    now = store.list("c", "customers")
    assert [(r["name"], r.get("address")) for r in now] == [("A2", {"city": "Oslo"}), ("B2", None)]


# --- identity server --------------------------------------------------------------------

def test_discovery(sb):
    body = requests.get(sb.sb1_url + "/.well-known/openid-configuration").json()
    assert body["token_endpoint"] == sb.token_url


def test_token_with_jwt_client_assertion(sb, company, rsa_key):
    before = sb.sb1.token_requests
    signed = assertion(rsa_key, sb.token_url)
    response = jwt_token_request(sb, signed)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"] == "AppFramework" and sb.sb1.token_requests == before + 1
    biz = Biz(sb, company["key"], token=body["access_token"])
    assert biz.get("customers").status_code == 200

    replay = jwt_token_request(sb, signed)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    bad_aud = jwt_token_request(sb, assertion(rsa_key, sb.sb1_url))
    assert bad_aud.status_code == 400 and bad_aud.json()["error"] == "invalid_client"
    expired = assertion(rsa_key, sb.token_url,
                        exp=datetime.now(timezone.utc) - timedelta(minutes=1))
    assert jwt_token_request(sb, expired).json()["error"] == "invalid_client"
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert jwt_token_request(sb, assertion(other_key, sb.token_url)).status_code == 400
    wrong_sub = assertion(rsa_key, sb.token_url, sub="someone-else")
    assert jwt_token_request(sb, wrong_sub).json()["error"] == "invalid_client"
    assert sb.sb1.token_requests == before + 1


def test_token_with_client_secret(sb):
    form = {"grant_type": "client_credentials", "client_id": SECRET_CLIENT, "scope": "AppFramework"}
    assert requests.post(sb.token_url, data={**form, "client_secret": SECRET}).status_code == 200
    wrong = requests.post(sb.token_url, data={**form, "client_secret": "nope"})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_client"
    grant = requests.post(sb.token_url, data={**form, "client_secret": SECRET,
                                              "grant_type": "password"})
    assert grant.status_code == 400


# --- business API: access -----------------------------------------------------------------

def test_bearer_token_and_company_key_required(sb, company):
    url = sb.sb1_url + "/api/biz/customers"
    token = secret_token(sb)
    assert requests.get(url, headers={"CompanyKey": company["key"]}).status_code == 401
    bad = requests.get(url, headers={"CompanyKey": company["key"], "Authorization": "Bearer x"})
    assert bad.status_code == 401 and bad.json() == {"Message": "Unauthorized"}
    auth = {"Authorization": f"Bearer {token}"}
    assert requests.get(url, headers=auth).status_code == 401
    assert requests.get(url, headers={**auth, "CompanyKey": str(uuid.uuid4())}).status_code == 401
    assert requests.get(url, headers={**auth, "CompanyKey": company["key"]}).status_code == 200
    assert requests.get(sb.sb1_url + "/api/biz/nosuchroute",
                        headers={**auth, "CompanyKey": company["key"]}).status_code == 404

    requests.post(sb.sb1_url + "/_sandbox/revoke-tokens")
    assert requests.get(url, headers={**auth, "CompanyKey": company["key"]}).status_code == 401
    sb.sb1.token_lifetime = 0
    short = secret_token(sb)
    time.sleep(0.01)
    expired = requests.get(url, headers={"Authorization": f"Bearer {short}",
                                         "CompanyKey": company["key"]})
    assert expired.status_code == 401


def test_companies_are_kept_apart(sb, biz, company):
    other_key = str(uuid.uuid4())
    sb.sb1.add_company(other_key, "Other AS")
    created = biz.post("customers", customer_body()).json()
    other = Biz(sb, other_key)
    assert other.get("customers").json() == []
    assert other.get(f"customers/{created['ID']}").status_code == 404
    nok_a = biz.get("currencycodes", filter="Code eq 'NOK'").json()[0]["ID"]
    nok_b = other.get("currencycodes", filter="Code eq 'NOK'").json()[0]["ID"]
    assert nok_a != nok_b and nok_a > 6
    assert len(sb.sb1.customers(company["key"])) == 1 and sb.sb1.customers(other_key) == []


# --- business API: queries ----------------------------------------------------------------

def test_filter_and_ignored_filters(sb, biz):
    for number, name in [(100001, "Fjordkraft Bygg AS"), (100002, "O'Brien Rør AS"),
                         (100003, "Nordlys Data AS"), (100004, "Fjordkraft Elektro AS")]:
        assert biz.post("customers", customer_body(number, name)).status_code == 201

    def numbers(**params: Any) -> list[int]:
        response = biz.get("customers", expand="Info", **params)
        assert response.status_code == 200
        return [c["CustomerNumber"] for c in response.json()]

    assert numbers(filter="CustomerNumber eq 100003") == [100003]
    assert numbers(filter="CustomerNumber ge 100002 and CustomerNumber lt 100004") == [
        100002, 100003]
    assert numbers(filter="CustomerNumber eq 100001 or CustomerNumber eq 100004") == [
        100001, 100004]
    assert numbers(filter="Info.Name eq 'O''Brien Rør AS'") == [100002]
    assert numbers(filter="startswith(Info.Name,'Fjordkraft')") == [100001, 100004]
    assert numbers(filter="contains(Info.Name,'Data')") == [100003]
    assert numbers(filter="CustomerNumber ne 100001 and (contains(Info.Name,'Rør') "
                          "or contains(Info.Name,'Elektro'))") == [100002, 100004]
    everything = [100001, 100002, 100003, 100004]
    assert numbers(filter="CustomerNumbr eq 100003") == everything  # misspelled field
    assert numbers(filter="Info.Nmae eq 'x'") == everything
    assert numbers(filter="CustomerNumber eq") == everything  # unparseable
    assert numbers(**{"$filter": "CustomerNumber eq 100003"}) == everything  # unknown param
    assert numbers(filter="CustomerNumber eq 100003", orderby="CustomerNumber desc") == [100003]
    assert numbers(orderby="CustomerNumber desc") == everything[::-1]


def test_top_skip_and_default_page(sb, biz, company):
    for number in range(100001, 100061):
        sb.sb1.insert(company["key"], "customers", {"CustomerNumber": number,
                                                    "Info": {"Name": f"Kunde {number}"}})
    assert len(biz.get("customers").json()) == 50
    page = biz.get("customers", top=5, skip=10, orderby="CustomerNumber").json()
    assert [c["CustomerNumber"] for c in page] == list(range(100011, 100016))
    assert len(biz.get("customers", top=100).json()) == 60
    selected = biz.get("customers", top=1, select="ID,CustomerNumber").json()[0]
    assert set(selected) == {"ID", "CustomerNumber"}


def test_expand(sb, biz):
    created = biz.post("customers", customer_body()).json()
    plain = biz.get(f"customers/{created['ID']}").json()
    assert "Info" not in plain and plain["BusinessRelationID"] == created["Info"]["ID"]
    info = biz.get(f"customers/{created['ID']}", expand="Info").json()["Info"]
    assert info["Name"] == "Fjordkraft Bygg AS" and info["DefaultEmailID"]
    assert "DefaultEmail" not in info and "Phones" not in info
    expand = "Info.DefaultEmail,Info.Phones,Info.InvoiceAddress"
    full = biz.get("customers", expand=expand).json()[0]
    assert full["Info"]["DefaultEmail"]["EmailAddress"] == "post@fjordkraft-bygg.no"
    assert full["Info"]["Phones"][0]["Number"] == "+47 22 12 34 56"
    assert full["Info"]["InvoiceAddress"]["City"] == "Oslo" and "Emails" not in full["Info"]


# --- business API: writes -----------------------------------------------------------------

def test_post_assigns_ids_and_foreign_keys(sb, biz):
    response = biz.post("customers", customer_body())
    assert response.status_code == 201
    customer = response.json()
    info = customer["Info"]
    assert customer["BusinessRelationID"] == info["ID"] and customer["StatusCode"] == 30001
    assert info["DefaultEmailID"] == info["DefaultEmail"]["ID"]
    assert info["DefaultPhoneID"] == info["DefaultPhone"]["ID"]
    assert info["InvoiceAddressID"] == info["InvoiceAddress"]["ID"]
    assert [e["ID"] for e in info["Emails"]] == [info["DefaultEmailID"]]
    assert [a["ID"] for a in info["Addresses"]] == [info["InvoiceAddressID"]]
    assert info["DefaultPhone"]["BusinessRelationID"] == info["ID"]
    assert len({customer["ID"], info["ID"], info["DefaultEmailID"], info["DefaultPhoneID"]}) == 4


def test_customer_validation(sb, biz, company):
    for bad in (99999, 200000, "100001", None):
        response = biz.post("customers", customer_body(bad))
        assert response.status_code == 400
        results = response.json()["_validationResults"]["CustomerNumber"]
        assert results[0]["Message"] == "Kundenummer må være mellom 100000 og 199999"
        assert results[0]["EntityType"] == "Customer"
        assert results[0]["PropertyName"] == "CustomerNumber" and results[0]["Level"] == 3
    no_name = customer_body()
    del no_name["Info"]["Name"]
    assert "Info.Name" in biz.post("customers", no_name).json()["_validationResults"]
    unknown = biz.post("customers", customer_body(Website="https://x.no"))
    assert unknown.status_code == 400 and "Website" in unknown.text
    nested = customer_body()
    nested["Info"]["DefaultEmail"]["Email"] = "x@y.no"
    assert biz.post("customers", nested).status_code == 400
    assert biz.post("customers", customer_body(CurrencyCodeID=999999)).status_code == 500
    assert sb.sb1.customers(company["key"]) == []
    assert sb.sb1.count_writes(company["key"]) == 0
    eur = biz.get("currencycodes", filter="Code eq 'EUR'").json()[0]["ID"]
    assert biz.post("customers", customer_body(CurrencyCodeID=eur)).status_code == 201
    assert biz.post("customers", customer_body()).status_code == 201  # duplicate number allowed
    assert sb.sb1.count_writes(company["key"], route="customers", method="POST") == 2


def test_createguid_dedupe(sb, biz, company):
    body = customer_body()
    assert biz.post("customers", body).status_code == 201
    again = biz.post("customers", body)
    assert again.status_code == 400
    message = again.json()["_validationResults"]["_createguid"][0]["Message"]
    assert message == f"An entity with _createguid {body['_createguid']} already exists"
    assert len(sb.sb1.customers(company["key"])) == 1


def test_put_child_semantics(sb, biz, company):
    created = biz.post("customers", customer_body()).json()
    info = created["Info"]
    url = f"customers/{created['ID']}"

    # scalar overwrite + default email updated in place by its ID
    response = biz.put(url, {"ID": created["ID"], "OrgNumber": "999888777", "Info": {
        "ID": info["ID"], "Name": "Nytt Navn AS",
        "DefaultEmail": {"ID": info["DefaultEmailID"], "EmailAddress": "ny@firma.no"}}})
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["OrgNumber"] == "999888777" and updated["Info"]["Name"] == "Nytt Navn AS"
    assert updated["Info"]["DefaultEmail"]["ID"] == info["DefaultEmailID"]
    assert [e["EmailAddress"] for e in updated["Info"]["Emails"]] == ["ny@firma.no"]
    assert updated["Info"]["DefaultPhone"] == info["DefaultPhone"]  # left out: untouched

    # a new child needs a _createguid
    fax = {"Number": "+47 22 99 99 99", "Type": 150103}
    refused = biz.put(url, {"Info": {"ID": info["ID"], "Phones": [fax]}})
    assert refused.status_code == 400 and refused.json()["Message"] == PUT_CREATE_MESSAGE
    refused = biz.put(url, {"Info": {"ID": info["ID"], "Phones": [{**fax, "ID": 0}]}})
    assert refused.status_code == 400
    added = biz.put(url, {"Info": {"ID": info["ID"], "Phones": [
        {**fax, "ID": 0, "_createguid": str(uuid.uuid4())}]}}).json()
    phones = added["Info"]["Phones"]
    assert [p["Type"] for p in phones] == [150101, 150103]
    assert added["Info"]["DefaultPhoneID"] == info["DefaultPhoneID"]
    new_info = biz.put(url, {"Info": {"Name": "Uten ID AS"}})
    assert new_info.status_code == 400 and new_info.json()["Message"] == PUT_CREATE_MESSAGE

    # Deleted removes the child, the rest stays
    fax_id = phones[1]["ID"]
    removed = biz.put(url, {"Info": {"ID": info["ID"],
                                     "Phones": [{"ID": fax_id, "Deleted": True}]}})
    assert [p["ID"] for p in removed.json()["Info"]["Phones"]] == [info["DefaultPhoneID"]]
    stored = sb.sb1.customers(company["key"])[0]
    assert [p["ID"] for p in stored["Info"]["Phones"]] == [info["DefaultPhoneID"]]
    assert stored["Info"]["Name"] == "Nytt Navn AS" and len(stored["Info"]["Addresses"]) == 1

    # deleting the default email clears it from the default and the list
    cleared = biz.put(url, {"Info": {"ID": info["ID"], "DefaultEmail": {
        "ID": info["DefaultEmailID"], "Deleted": True}}}).json()["Info"]
    assert cleared.get("DefaultEmail") is None and cleared["DefaultEmailID"] is None
    assert cleared["Emails"] == []
    assert biz.put(url, {"CustomerNumber": 5}).status_code == 400
    assert biz.put("customers/999999", {"OrgNumber": "1"}).status_code == 404
    assert sb.sb1.count_writes(company["key"], route="customers", method="PUT") == 4


def test_put_of_an_expanded_get_round_trips(sb, biz):
    created = biz.post("customers", customer_body()).json()
    url = f"customers/{created['ID']}"
    expand = "Info,Info.DefaultEmail,Info.DefaultPhone,Info.InvoiceAddress,Info.Emails,Info.Phones"
    full = biz.get(url, expand=expand).json()
    full["Info"]["DefaultEmail"]["EmailAddress"] = "faktura@fjordkraft-bygg.no"
    full["Info"]["Phones"][0]["Number"] = "+47 55 00 00 00"
    response = biz.put(url, full)
    assert response.status_code == 200, response.text
    info = response.json()["Info"]
    assert [e["EmailAddress"] for e in info["Emails"]] == ["faktura@fjordkraft-bygg.no"]
    assert info["DefaultPhone"]["Number"] == "+47 55 00 00 00"
    assert len(info["Phones"]) == 1 and len(info["Addresses"]) == 1


def test_book_journal_entries(sb, biz):
    accounts = {a["AccountNumber"]: a["ID"] for a in biz.get("accounts", top=100).json()}
    line = {"FinancialDate": "2026-11-25", "Description": "Faktura 1"}
    entry = {"_createguid": str(uuid.uuid4()), "DraftLines": [
        {**line, "AccountID": accounts[1500], "Amount": 1250},
        {**line, "AccountID": accounts[3000], "Amount": -1250}]}
    booked = sb.sb1_url + "/api/biz/journalentries?action=book-journal-entries"
    response = biz.session.post(booked, json=[entry])
    assert response.status_code == 200, response.text
    assert response.json()[0]["JournalEntryNumber"] == "1-2026"
    unbalanced = {"DraftLines": [{**line, "AccountID": accounts[1500], "Amount": 10}]}
    assert biz.session.post(booked, json=[unbalanced]).status_code == 400
    assert biz.session.post(booked, json=[entry]).status_code == 400  # same _createguid


# --- faults and server ----------------------------------------------------------------------

def test_scripted_faults(sb, biz):
    sb.sb1_faults.script("/api/biz/customers", 429, times=1, headers={"Retry-After": "1"})
    sb.sb1_faults.script("/api/biz/customers", 503, method="GET")
    limited = biz.get("customers")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert limited.json() == {"Message": "sandbox fault"}
    assert biz.get("customers").status_code == 503
    assert biz.get("customers").status_code == 200

    sb.sb1_faults.script("/api/biz/customers", 503, method="POST", after=True)
    body = customer_body()
    assert biz.post("customers", body).status_code == 503  # ...but the write happened
    assert biz.post("customers", body).status_code == 400  # so the retry is refused


def test_random_faults_spare_token_endpoint_and_admin(sb, biz):
    admin = requests.post(sb.sb1_url + "/_sandbox/faults", json={"error_rate": 1.0})
    assert admin.status_code == 200 and admin.json()["error_rate"] == 1.0
    assert biz.get("customers").status_code == 503
    assert secret_token(sb)  # token endpoint is not faulted at random
    state = requests.get(sb.sb1_url + "/_sandbox/state").json()
    assert state["token_requests"] >= 1 and state["faults"]["injected"]["503"] >= 1
    requests.post(sb.sb1_url + "/_sandbox/reset-faults")
    sb.sb1_faults.configure(rate_limit_rate=1.0)
    limited = biz.get("customers")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"


def test_latency(sb, company):
    url = sb.moment_company_url(company["code"]) + "/customers"
    sb.moment_faults.latency = 0.2
    started = time.monotonic()
    assert requests.get(url, auth=("apikey", company["api_key"])).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_faults_are_seedable():
    def rolls(seed: int) -> list[bool]:
        faults = Faults(seed)
        return [faults._rng.random() < 0.5 for _ in range(20)]
    assert rolls(3) == rolls(3)


def test_keep_alive_and_many_concurrent_connections(sb, company):
    url = sb.moment_company_url(company["code"]) + "/customers"
    auth = ("apikey", company["api_key"])
    accepted_before = sb.moment_server.connections_accepted
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(100)

    def worker() -> None:
        with requests.Session() as session:
            barrier.wait(timeout=10)
            for _ in range(3):
                status = session.get(url, auth=auth, timeout=10).status_code
                with lock:
                    statuses.append(status)

    threads = [threading.Thread(target=worker) for _ in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert statuses == [200] * 300
    assert sb.moment_server.connections_accepted - accepted_before == 100


def test_run_sandbox_in_foreground(capsys):
    stop = threading.Event()
    company = {"moment_company": "demo", "moment_api_key": "demo-key",
               "company_key": str(uuid.uuid4()), "seed_customers": 2}
    thread = threading.Thread(target=run_sandbox, kwargs={
        "moment_port": 0, "sb1_port": 0, "companies": [company], "seed": 7,
        "clients": [{"client_id": "demo", "client_secret": "x"}], "stop_event": stop})
    thread.start()
    deadline = time.monotonic() + 5
    while "Press Ctrl-C" not in capsys.readouterr().out and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_the_contract_in_the_repo_is_cut_from_the_vendors_swagger():
    """contract/unieconomy-swagger.json is exactly what scripts/update-contract makes of the
    platform's Swagger (checked where the domain brief's copy is beside the repo, as in CI)."""
    import importlib.machinery
    import importlib.util

    from conftest import ROOT
    loader = importlib.machinery.SourceFileLoader("update_contract", str(ROOT / "scripts" / "update-contract"))
    spec = importlib.util.spec_from_loader("update_contract", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    if not module.SOURCE.is_file():
        pytest.skip("the vendor's Swagger (shared/domain) is not beside this checkout")
    vendor = json.loads(module.SOURCE.read_text(encoding="utf-8"))
    assert module.TARGET.read_text(encoding="utf-8") == module.render(vendor)
    schema = load_schema()
    assert {"Customer", "JournalEntryLineDraft", "JournalEntryLine", "VatType"} <= set(schema.types)


def test_look_ups_by_number_use_an_index_that_follows_every_write():
    """The SpareBank 1 stand-in answers `CustomerNumber eq N` from an index: the same rows a
    scan would give, after creates, renumbering updates and deletes, for every spelling."""
    import random

    from sandbox.sb1 import SB1Store
    store = SB1Store()
    key = str(uuid.uuid4())
    store.add_company(key, "Indeks AS")
    rng = random.Random(5)
    ids = []
    for n in range(300):
        ids.append(store.create(key, "customers", {"CustomerNumber": 100000 + n, "Info": {"Name": f"K{n}"}})["ID"])
    for id_ in rng.sample(ids, 60):                               # renumber some, onto others' numbers too
        store.update(key, "customers", id_, {"CustomerNumber": 100000 + rng.randrange(400)})
    for id_ in rng.sample(ids, 30):
        store.delete(key, "customers", id_)
    table = store.company(key).tables["customers"]
    assert table.indexes["CustomerNumber"]

    def scan(filter_text: str) -> list[int]:
        store.ignore_filters = True
        try:
            docs = store.query(key, "customers", {"top": "100000"})
        finally:
            store.ignore_filters = False
        from sandbox.query import parse_filter
        predicate = parse_filter(filter_text, store.schema, "Customer")
        return sorted(d["ID"] for d in docs if predicate(d))

    for number in range(99990, 100410):
        for text in (f"CustomerNumber eq {number}", f"customernumber eq {number}", f"CustomerNumber eq {number}.0"):
            assert table.candidates(text) is not None
            assert sorted(d["ID"] for d in store.query(key, "customers", {"filter": text})) == scan(text), text
    # not the simple form: a scan, with the same answer
    assert table.candidates("CustomerNumber gt 100100") is None
    assert len(store.query(key, "customers", {"filter": "CustomerNumber gt 100390", "top": "1000"})) == \
        len(scan("CustomerNumber gt 100390"))
