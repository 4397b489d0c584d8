"""One rule for personal data, end to end: a national identity number, an email address and
people's names fed through every failure path a real worker reaches (a customer-number
rule, an organization-number rule, a project-number rule, a record it depends on, an invoice
refused, a platform 400 whose own words quote the value, a retry-exhausted failure), in a
Norwegian and an English company. Each value is in the company's email and nowhere else:
not in the worker's log, not in a Sentry event, not in any Redis key or value, not in what
the command line prints."""
from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from conftest import COMPANY_KEYS, ROOT, wait_until, write_integrations

from sandbox import sb1 as platform

pytestmark = pytest.mark.slow

NATIONAL_ID = "01017012345"            # fødselsnummer, typed into the organization number (and as a KID)
EMAIL = "ola.nordmann@example.no"      # typed as a customer number
NAME = "Kari Nordmann"                 # a person's name typed into a number field
OWNER = "Ola Nordmann"                 # a sole proprietor: the customer's name is a person's
TAKEN_EMAIL, TAKEN_NAME = "per.hansen@example.no", "Per Hansen"     # quoted by the platform's own 400
SLOW_NAME = "Anne Berg"                # named in the email of a retry-exhausted failure
REVENUE = 'revenue_accounts = { hours = 3000, products = 3100, expenses = 3200 }'
LINE = {"itemText": "Konsulenttimer", "quantity": "1", "amountExclVat": "1000.00", "vatCode": "3",
        "productType": "HOURS"}


def customer(sandbox, company, number, name, **fields):
    address = {"addressLine1": "Storgata 1", "postalCode": "0155", "city": "Oslo", "countryCode": "NO"}
    return sandbox.moment.create(company, "customers", {
        "name": name, "customerNumber": number, "organizationNumber": "923609016", "countryCode": "NO",
        "email": "post@example.no", "phone": "+47 22 33 44 55", "currencyCode": "NOK", "address": address,
        **fields})


def project(sandbox, of, number, name="Kontorbygg Lysaker"):
    return sandbox.moment.create("acme", "projects", {
        "name": name, "projectNumber": number, "projectState": "ACTIVE",
        "customer": {"id": of["id"], "customerNumber": of["customerNumber"]}, "startDate": "2026-09-01"})


def invoice(sandbox, of, number, kid):
    return sandbox.moment.create("acme", "invoices", {
        "invoiceNumber": number, "status": "FINALIZED", "invoiceDate": "2026-11-20", "dueDate": "2026-12-04",
        "paymentId": kid, "description": "Kontorbygg", "currencyCode": "NOK", "lines": [LINE],
        "customer": {"id": of["id"], "customerNumber": of["customerNumber"]}})


def redis_dump(r) -> str:
    """Every key and value of every type, and the decoded body of every queued message."""
    out = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == "string":
            values = [r.get(key)]
        elif kind == "hash":
            values = [f"{k}={v}" for k, v in r.hgetall(key).items()]
        elif kind == "list":
            values = r.lrange(key, 0, -1)
        elif kind == "set":
            values = list(r.smembers(key))
        elif kind == "zset":
            values = [f"{m}={s}" for m, s in r.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [json.dumps(entry) for entry in r.xrange(key)]
        else:
            values = [f"<{kind}>"]
        out.append(key)
        for value in values:
            out.append(str(value))
            out.extend(_message_bodies(str(value)))
    return "\n".join(out)


def _message_bodies(value: str) -> list[str]:
    """A kombu message keeps its body base64-encoded: decoded, so a value in it is found."""
    start = value.find("{")
    try:
        message = json.loads(value[start:]) if start >= 0 else None
    except ValueError:
        return []
    if isinstance(message, list) and message and isinstance(message[0], str):      # unacked: [message, ...]
        return _message_bodies(message[0])
    if isinstance(message, dict) and isinstance(message.get("body"), str):
        try:
            return [base64.b64decode(message["body"]).decode("utf-8", "replace")]
        except ValueError:
            return []
    return []


def cli(env, *args) -> str:
    out = subprocess.run([sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode in (0, 1), out.stderr
    return out.stdout + out.stderr


def test_personal_values_reach_the_companys_email_and_nothing_else(sandbox, smtp, sentry, start_worker, r,
                                                                    worker_env, tmp_path, monkeypatch):
    write_integrations(tmp_path / "integrations.toml", sandbox, data_types=("customers", "projects", "invoices"),
                       acme={"language": None, "extra": [REVENUE]}, fjord={"data_types": ("customers",)})
    # the platform refuses an email address it has on another customer, in words that quote it
    rule = platform.RULES["Customer"]

    def refuse_taken_email(doc, results):
        rule(doc, results)
        email = ((doc.get("Info") or {}).get("DefaultEmail") or {}).get("EmailAddress")
        if email == TAKEN_EMAIL:
            results["Info.DefaultEmail.EmailAddress"] = [platform.validation_result(
                f"E-postadressen {email} er allerede registrert på {TAKEN_NAME}", "Email", "EmailAddress")]
    monkeypatch.setitem(platform.RULES, "Customer", refuse_taken_email)

    acme = {
        "org number": customer(sandbox, "acme", "100001", OWNER, organizationNumber=NATIONAL_ID),
        "customer number": customer(sandbox, "acme", EMAIL, "Fjord Bygg AS"),
        "fine": customer(sandbox, "acme", "100003", "Lysaker Eiendom AS"),
        "platform 400": customer(sandbox, "acme", "100004", TAKEN_NAME, email=TAKEN_EMAIL),
        "retries": customer(sandbox, "acme", "100005", SLOW_NAME, email="anne.berg@example.no"),
    }
    sandbox.sb1_faults.script("/api/biz/customers", 502, times=100, method="GET", query_contains="100005")
    projects = {"project number": project(sandbox, acme["fine"], NAME),
                "its customer": project(sandbox, acme["org number"], "1042")}
    invoices = {"KID": invoice(sandbox, acme["fine"], 1001, NATIONAL_ID)}
    fjord = {"org number": customer(sandbox, "fjord", "100001", OWNER, organizationNumber=NATIONAL_ID),
             "customer number": customer(sandbox, "fjord", EMAIL, "Fjord Bygg AS"),
             "name as number": customer(sandbox, "fjord", NAME, "Nordlys AS")}
    failing = {("acme", "customers", c["id"]) for k, c in acme.items() if k != "fine"}
    failing |= {("acme", "projects", p["id"]) for p in projects.values()}
    failing |= {("acme", "invoices", i["id"]) for i in invoices.values()}
    failing |= {("fjord", "customers", c["id"]) for c in fjord.values()}

    w = start_worker(MSB1_SENTRY_DSN=sentry.dsn)
    from worker.broker import publish_sync
    for rec in acme.values():
        publish_sync("customers", "acme", rec["id"])
    for rec in projects.values():
        publish_sync("projects", "acme", rec["id"])
    for rec in invoices.values():
        publish_sync("invoices", "acme", rec["id"])
    for rec in fjord.values():
        publish_sync("customers", "fjord", rec["id"])

    def letters():
        return {(iid, d["data_type"], str(d["record_id"]), d["notified"]) for iid in ("acme", "fjord")
                for d in map(json.loads, r.hgetall(f"msb1test:dead:{iid}").values())}
    expected = {(iid, dt, str(rid), True) for iid, dt, rid in failing}
    wait_until(lambda: letters() == expected, 60, message="every failure dead-lettered and told",
               describe=lambda: f"{sorted(letters())}\n{w.log()[-3000:]}")
    wait_until(lambda: len(sentry.events()) >= len(failing), 20, message="a Sentry event per failure")

    # the company's email says each value: acme in Norwegian, fjord in English
    mail = {iid: "\n".join(m["Subject"] + "\n" + m.get_content() for m in smtp.messages
                           if m["To"] == f"regnskap@{iid}.example") for iid in ("acme", "fjord")}
    assert f"Organisasjonsnummeret '{NATIONAL_ID}' må være ni sifre" in mail["acme"]
    assert f"kunde {OWNER} (kundenummer 100001)" in mail["acme"]
    assert f"Kundenummeret '{EMAIL}' er ikke et tall" in mail["acme"]
    assert f"Prosjektnummeret '{NAME}' kan bare inneholde sifrene 0–9" in mail["acme"]
    assert f"men kunne ikke: Organisasjonsnummeret '{NATIONAL_ID}'" in mail["acme"]       # through its project
    assert f"KID {NATIONAL_ID} har feil kontrollsiffer" in mail["acme"]
    assert (f"SpareBank 1 Regnskap svarte: «EmailAddress: E-postadressen {TAKEN_EMAIL} er "
            f"allerede registrert på {TAKEN_NAME}»") in mail["acme"]
    assert f"kunde {SLOW_NAME} (kundenummer 100005)" in mail["acme"] and "ga opp etter 4 forsøk" in mail["acme"]
    assert f"organization number '{NATIONAL_ID}' must be nine digits" in mail["fjord"]
    assert f"customer number '{EMAIL}' is not a number" in mail["fjord"]
    assert f"customer number '{NAME}' is not a number" in mail["fjord"]

    # ... and nothing else does
    env = dict(worker_env)
    printed = "\n".join([cli(env, "dead-letters"), cli(env, "dead-letters", "--json"),
                         cli(env, "dead-letters", "--group"), cli(env, "status", "--json")]
                        + [cli(env, "history", iid, dt, str(rid)) for iid, dt, rid in sorted(failing)]
                        + [cli(env, "history", "acme", "customers", str(acme[k]["id"]), "--json")
                           for k in ("customer number", "retries")])
    places = {"the worker's log": w.log_path.read_text(errors="replace"),
              "Sentry": b"\n".join(sentry.envelopes).decode("utf-8", "replace"),
              "Redis": redis_dump(r), "the command line": printed}
    private = [NATIONAL_ID, EMAIL, NAME, OWNER, TAKEN_EMAIL, TAKEN_NAME, SLOW_NAME, "anne.berg@example.no"]
    for value in private:
        assert value in mail["acme"] + mail["fjord"] or value == "anne.berg@example.no", value
        for place, text in places.items():
            assert value not in text, f"{value!r} found in {place}"
    # what they say instead: the record by its Moment id, the refused value by its shape
    dead = {(d["integration_id"], d["record_id"]): d for d in json.loads(cli(env, "dead-letters", "--json"))}
    letter = dead[("acme", acme["customer number"]["id"])]
    assert letter["what"] == f"customer with Moment id {acme['customer number']['id']}"
    assert letter["error"].startswith("the customer number (23 characters: letters, '@' and '.') is not a number")
    assert dead[("acme", acme["org number"]["id"])]["error"].startswith(
        "the organization number (11 digits) must be nine digits")
    assert dead[("acme", projects["project number"]["id"])]["error"].startswith(
        "the project number (13 characters: letters and a space) contains other characters than digits")
    assert dead[("acme", acme["platform 400"]["id"])]["error"] == \
        "SpareBank 1 Regnskap POST /api/biz/customers: HTTP 400 (fields: Info.DefaultEmail.EmailAddress, EmailAddress)"
    assert dead[("acme", acme["retries"]["id"])]["error"] == \
        "SpareBank 1 Regnskap GET /api/biz/customers: HTTP 502 (gave up after 4 tries)"
    assert dead[("acme", acme["retries"]["id"])]["what"] == "customer 100005"           # a valid number: named
    shapes = [e.get("number_shape") for e in map(json.loads, filter(
        lambda line: line.startswith("{"), places["the worker's log"].splitlines()))]
    assert "23 characters: letters, '@' and '.'" in shapes
    assert sandbox.sb1.customers(COMPANY_KEYS["acme"])        # the fine customer was written alongside
