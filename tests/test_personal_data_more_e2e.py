"""The rule for personal data with other identifiers than test_personal_data_e2e's: a
D-number (a valid one: a valid project number and KID, written to the books), a phone
number as a customer number, a bank account and an IBAN as organization numbers, an email
address as a project number, a person's name with æøå as a KID, a postal address as a
website (a hostile-field refusal). Each refused value is in the company's email; none of
them is in the worker's log, a Sentry event, Redis (while a number lock is held too) or
what the command line prints (dead letters, history, status, a dry run)."""
from __future__ import annotations

import json

import pytest
from conftest import COMPANY_KEYS, wait_until, write_integrations
from test_personal_data_e2e import LINE, REVENUE, cli, customer, project, redis_dump

pytestmark = pytest.mark.slow

D_NUMBER = "41017000010"               # a D-number whose check digits hold: a valid project number and KID
PHONE = "+47 912 34 567"               # typed as a customer number
ACCOUNT = "1234.56.78903"              # a bank account number typed as an organization number
IBAN = "NO9386011117947"               # typed as an organization number
EMAIL = "kari.nordmann@example.no"     # typed as a project number
NAME = "Bjørn Ærlig Håland"            # typed as a KID
ADDRESS = "Storgata 1, 0155 Oslo"      # typed as a website


def invoice(sandbox, of, number, kid):
    return sandbox.moment.create("acme", "invoices", {
        "invoiceNumber": number, "status": "FINALIZED", "invoiceDate": "2026-11-20", "dueDate": "2026-12-04",
        "paymentId": kid, "description": "Kontorbygg", "currencyCode": "NOK", "lines": [LINE],
        "customer": {"id": of["id"], "customerNumber": of["customerNumber"]}})


def test_other_identifiers_reach_the_companys_email_and_nothing_else(sandbox, smtp, sentry, start_worker, r,
                                                                       worker_env, tmp_path):
    write_integrations(tmp_path / "integrations.toml", sandbox, data_types=("customers", "projects", "invoices"),
                       acme={"language": None, "extra": [REVENUE]})
    fine = customer(sandbox, "acme", "100003", "Lysaker Eiendom AS")
    refused = [customer(sandbox, "acme", PHONE, "Fjord Bygg AS"),
               customer(sandbox, "acme", "100004", "Nordlys AS", organizationNumber=ACCOUNT),
               customer(sandbox, "acme", "100005", "Sørlys AS", organizationNumber=IBAN),
               customer(sandbox, "acme", "100006", "Vestlys AS", website=ADDRESS)]
    refused_projects = [project(sandbox, fine, EMAIL)]
    refused_invoices = [invoice(sandbox, fine, 1001, NAME)]
    written = [("projects", project(sandbox, fine, D_NUMBER)), ("invoices", invoice(sandbox, fine, 1002, D_NUMBER))]

    w = start_worker(MSB1_SENTRY_DSN=sentry.dsn)
    from worker.broker import publish_sync
    publish_sync("customers", "acme", fine["id"])
    for rec in refused:
        publish_sync("customers", "acme", rec["id"])
    for rec in refused_projects:
        publish_sync("projects", "acme", rec["id"])
    for rec in refused_invoices:
        publish_sync("invoices", "acme", rec["id"])
    for data_type, rec in written:
        publish_sync(data_type, "acme", rec["id"])

    failing = ({("customers", str(c["id"])) for c in refused} | {("projects", str(p["id"])) for p in refused_projects}
               | {("invoices", str(i["id"])) for i in refused_invoices})

    def letters():
        return {(d["data_type"], str(d["record_id"])) for d in map(json.loads, r.hgetall("msb1test:dead:acme").values())
                if d["notified"]}
    wait_until(lambda: letters() == failing, 60, message="every failure dead-lettered and told",
               describe=lambda: f"{sorted(letters())}\n{w.log()[-3000:]}")
    wait_until(lambda: all(r.hexists(f"msb1test:state:acme:{dt}", str(rec["id"])) for dt, rec in written), 30,
               message="the D-number project and the invoice with a D-number KID written",
               describe=lambda: w.log()[-3000:])
    assert [p["ProjectNumber"] for p in sandbox.sb1.documents(COMPANY_KEYS["acme"], "projects")] == [D_NUMBER]
    wait_until(lambda: len(sentry.events()) >= len(failing), 20, message="a Sentry event per failure")

    mail = "\n".join(m["Subject"] + "\n" + m.get_content() for m in smtp.messages)
    for value in (PHONE, ACCOUNT, IBAN, EMAIL, NAME):
        assert value in mail, value
    assert "nettside" in mail            # the website refused by its field, the address not quoted

    env = dict(worker_env)
    ids = [("customers", c["id"]) for c in refused] + [("projects", p["id"]) for p in refused_projects] + \
          [("invoices", i["id"]) for i in refused_invoices] + [(dt, rec["id"]) for dt, rec in written]
    printed = "\n".join([cli(env, "dead-letters"), cli(env, "dead-letters", "--json"), cli(env, "status", "--json")]
                        + [cli(env, "history", "acme", dt, str(rid), "--json") for dt, rid in ids]
                        + [cli(env, "dry-run", "acme", dt, str(rid)) for dt, rid in ids])
    # a number lock held while a sync writes the D-number project
    from worker.config.settings import Settings
    from worker.runtime import Runtime
    lock = Runtime(Settings.from_env(env)).number_lock("acme", "projects", D_NUMBER)
    assert lock.acquire(blocking=False)
    try:
        places = {"the worker's log": w.log_path.read_text(errors="replace"),
                  "Sentry": b"\n".join(sentry.envelopes).decode("utf-8", "replace"),
                  "Redis": redis_dump(r), "the command line": printed}
    finally:
        lock.release()
    for value in (D_NUMBER, PHONE, ACCOUNT, IBAN, EMAIL, NAME, ADDRESS, ACCOUNT.replace(".", ""),
                  "91234567", "912 34 567", "kari.nordmann", "Bjørn", "Håland", "Storgata"):
        for place, text in places.items():
            assert value not in text, f"{value!r} found in {place}"
