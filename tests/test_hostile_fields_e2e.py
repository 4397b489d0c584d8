"""Hostile fields end to end: customers, a project and an invoice with values the books must
not hold (a header injection in an email, a javascript: website, a bidi override, NUL, a
lone surrogate, 10,000 characters, ...) go through a real worker against the sandbox. None of
them reaches the books; each record is one email to the company naming the field, and a
dead letter; the clean records beside them are transferred as usual."""
from __future__ import annotations

import json
import time

import pytest
from conftest import COMPANY_KEYS, wait_until, write_integrations
from conftest import publish_task as enqueue

from sandbox.moment import seed_customers

ACME = COMPANY_KEYS["acme"]
REVENUE = 'revenue_accounts = { hours = 3000, products = 3100, expenses = 3200 }'
pytestmark = pytest.mark.slow

# (what changes in Moment, the hostile part to look for, the field as the Norwegian email names it)
CUSTOMERS = [
    ({"email": "x@y.no\r\nBcc: evil@attacker.example"}, "evil@attacker.example", "e-post"),
    ({"website": "javascript:alert(1)"}, "alert(1)", "nettside"),
    ({"website": " JAVASCRIPT:alert(2)"}, "JAVASCRIPT:", "nettside"),
    ({"website": "https://user:pass@firma.no"}, "user:pass", "nettside"),
    ({"website": "data:text/html,<script>alert(3)</script>"}, "<script>", "nettside"),
    ({"name": "Fjord\u202eSA ggyB"}, "\u202e", "navn"),
    ({"name": "N" * 10_000}, "N" * 300, "navn"),
    ({"address": {"addressLine1": "Storgata 1\x00", "city": "Oslo"}}, "\x00", "adresselinje 1"),
    ({"address": {"addressLine1": "Storgata 2", "city": "Oslo\ud800"}}, "\ud800", "poststed"),
    ({"phone": "+47 22\u200b33 44 55"}, "\u200b", "telefon"),
    ({"fax": "22 33 44 55\t"}, "\t", "faks"),
    ({"email": "Ola Nordmann <ola@firma.no>"}, "Ola Nordmann <", "e-post"),
    ({"address": {"postalCode": "0155\u2028", "city": "Oslo"}}, "\u2028", "postnummer"),
    ({"organizationNumber": "\ufeff923609016", "countryCode": "SE"}, "\ufeff", "organisasjonsnummer"),
    # other controls, other format characters, characters shown as nothing
    ({"name": "Fjord\x85Bygg"}, "\x85", "navn"), ({"name": "Fjord\x0bBygg"}, "\x0b", "navn"),
    ({"name": "Fjord\x0cBygg"}, "\x0c", "navn"), ({"name": "Fjord\x1fBygg"}, "\x1f", "navn"),
    ({"name": "Fjord\u061cBygg"}, "\u061c", "navn"), ({"name": "Fjord\u200eBygg"}, "\u200e", "navn"),
    ({"name": "Fjord\u2067Bygg"}, "\u2067", "navn"), ({"name": "Fjord\u00adBygg"}, "\u00ad", "navn"),
    ({"name": "Fjord\u3164Bygg"}, "\u3164", "navn"),
    # websites that are not what they seem
    ({"website": "j\u0430vascript:alert(4)"}, "alert(4)", "nettside"),
    ({"website": "https:javascript:alert(5)"}, "alert(5)", "nettside"),
    ({"website": "//evil.example"}, "evil.example", "nettside"),
    ({"website": "http://evil.example\\@good.example"}, "@good.example", "nettside"),
    ({"website": "https://\u0430pple.com"}, "pple.com", "nettside"),
    # two addresses, a trailing dot; ten thousand characters in the address and the phone
    ({"email": "a@b.no, c@d.no"}, "c@d.no", "e-post"), ({"email": "post@firma.no."}, "firma.no.", "e-post"),
    ({"address": {"postalCode": "0" * 10_000, "city": "Oslo"}}, "0" * 300, "postnummer"),
    ({"address": {"addressLine1": "Storgata 3", "city": "O" * 10_000}}, "O" * 300, "poststed"),
    ({"phone": "9" * 10_000}, "9" * 300, "telefon"),
]
PROJECT_NAME = "Tilbygg\u2066 Lysaker"          # a bidi isolate
LINE_TEXT = "Lisens\x1b[31m rød"               # an escape sequence


def stat(r, data_type, name):
    return int(r.hget("msb1test:stats:acme", f"{data_type}:{name}") or 0)


def strings(value):
    """Every text the books hold, however deep."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings(v)


def books(sandbox):
    company = sandbox.sb1.companies[ACME.lower()]
    return {route: sandbox.sb1.documents(ACME, route) for route in company.tables}


def mentioning(smtp, needle):
    """(what it says about the record, the whole body) of each email that names a record."""
    found = []
    for msg in smtp.messages:
        body = msg.get_content().replace("\r\n", "\n")
        at = body.find(needle)
        if at >= 0:
            rest = body[at:]
            bullet = rest.find("\n  • ")          # in a digest, the next record starts here
            found.append((rest[:bullet] if bullet > 0 else rest, body))
    return found


@pytest.fixture
def norwegian(sandbox, worker_env, tmp_path):
    write_integrations(tmp_path / "integrations.toml", sandbox, data_types=("customers", "projects", "invoices"),
                       acme={"language": None, "extra": [REVENUE]}, fjord={"data_types": ("customers",)})


def test_hostile_fields_never_reach_the_books_and_each_record_is_one_email(sandbox, smtp, norwegian,
                                                                          start_worker, r):
    w = start_worker()
    records = seed_customers(sandbox.moment, "acme", len(CUSTOMERS) + 1)
    hostile, clean = records[:-1], records[-1]
    for rec, (change, _, _) in zip(hostile, CUSTOMERS):
        if "address" in change:
            change = {**change, "address": {**rec["address"], **change["address"]}}
        sandbox.moment.update("acme", "customers", rec["id"], change)
    for rec in records:
        enqueue("acme", rec["id"])
    wait_until(lambda: stat(r, "customers", "failed") == len(hostile) and stat(r, "customers", "created") == 1,
               30, message="the clean customer created, every hostile one refused")

    ref = {"id": clean["id"], "customerNumber": clean["customerNumber"]}
    bad_project = sandbox.moment.create("acme", "projects", {
        "name": PROJECT_NAME, "projectNumber": "2001", "projectState": "ACTIVE", "customer": ref})
    project = sandbox.moment.create("acme", "projects", {
        "name": "Tilbygg Lysaker", "projectNumber": "2002", "projectState": "ACTIVE", "customer": ref})
    for p in (bad_project, project):
        enqueue("acme", p["id"], "projects")
    wait_until(lambda: stat(r, "projects", "failed") == 1 and stat(r, "projects", "created") == 1, 30,
               message="the clean project created, the hostile one refused")

    def invoice(number, text):
        return sandbox.moment.create("acme", "invoices", {
            "invoiceNumber": number, "status": "FINALIZED", "invoiceDate": "2026-11-20", "dueDate": "2026-12-04",
            "paymentId": "", "description": "Tilbygg Lysaker", "currencyCode": "NOK", "customer": ref,
            "project": {"id": project["id"], "projectNumber": "2002"},
            "lines": [{"itemText": "Tømrerarbeid", "quantity": "10", "amountExclVat": "9500.00", "vatCode": "3",
                       "productType": "HOURS"},
                      {"itemText": text, "quantity": "1", "amountExclVat": "1000.00", "vatCode": "3",
                       "productType": "PRODUCTS"}]})
    good_invoice, bad_invoice = invoice(10001, "Materialer"), invoice(10002, LINE_TEXT)
    for inv in (good_invoice, bad_invoice):
        enqueue("acme", inv["id"], "invoices")
    wait_until(lambda: stat(r, "invoices", "failed") == 1 and stat(r, "invoices", "posted") == 1, 30,
               message="the clean invoice posted, the hostile one refused")

    # one email per refused record, naming the field (the first at once, the rest in a digest)
    refused = [(f"(kundenummer {rec['customerNumber']})", field) for rec, (_, _, field) in zip(hostile, CUSTOMERS)]
    refused += [("(prosjektnummer 2001)", "navn"), ("faktura 10002", "linjetekst (linje 2)")]
    wait_until(lambda: all(mentioning(smtp, needle) for needle, _ in refused), 30,
               message="an email for every refused record")
    time.sleep(4)                               # a digest window more: no second email comes
    for needle, field in refused:
        [(said, body)] = mentioning(smtp, needle)
        assert f"«{field}»" in said, (needle, said)
        assert f"i feltet «{field}» i Moment" in body or f"fra feltet «{field}» i Moment" in body or \
            "Rett nettsiden i Moment" in body, body                       # and what to do there
    assert not mentioning(smtp, f"(kundenummer {clean['customerNumber']})")
    assert not mentioning(smtp, "(prosjektnummer 2002)") and not mentioning(smtp, "faktura 10001")

    # nothing of it in the books: no refused record, no hostile text anywhere
    held = list(strings(books(sandbox)))
    for _, marker, _ in CUSTOMERS:
        assert not any(marker in text for text in held), repr(marker)
    for marker in ("\u2066", "\x1b", "Lisens"):
        assert not any(marker in text for text in held), repr(marker)
    numbers = {c["CustomerNumber"] for c in sandbox.sb1.customers(ACME)}
    assert numbers == {int(clean["customerNumber"])}
    assert [p["ProjectNumber"] for p in sandbox.sb1.documents(ACME, "projects")] == ["2002"]
    [voucher] = sandbox.sb1.documents(ACME, "journalentries")
    assert {ln.get("InvoiceNumber") for ln in voucher["DraftLines"]} - {None} == {"10001"}

    # the clean records arrived whole
    [c] = sandbox.sb1.customers(ACME)
    assert (c["Info"]["Name"], c["WebUrl"], c["Info"]["DefaultEmail"]["EmailAddress"]) == (
        clean["name"], clean["website"], clean["email"])

    # a dead letter per refused record, in our own words only
    letters = [json.loads(raw) for raw in r.hgetall("msb1test:dead:acme").values()]
    assert sorted((x["data_type"], x["record_id"]) for x in letters) == sorted(
        [("customers", rec["id"]) for rec in hostile] + [("projects", bad_project["id"]),
                                                         ("invoices", bad_invoice["id"])])
    words = json.dumps(letters, ensure_ascii=False) + w.log()
    for marker in ("evil@attacker", "alert(", "JAVASCRIPT:", "user:pass", "<script>", "N" * 300,
                   "Ola Nordmann", "\u202e", "\u2066", "\x1b[31m"):
        assert marker not in words, repr(marker)
