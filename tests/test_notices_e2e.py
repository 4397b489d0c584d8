"""Notices people can act on: Norwegian by default, one email then a digest, the other
system's own words only in the company's email, Sentry grouped by problem."""
from __future__ import annotations

import json
import time

import pytest
from conftest import COMPANY_KEYS, wait_until, write_integrations
from conftest import publish_task as enqueue

from sandbox.moment import seed_customers

ACME = COMPANY_KEYS["acme"]
pytestmark = pytest.mark.slow




def stat(r, name, integration="acme", data_type="customers"):
    return int(r.hget(f"msb1test:stats:{integration}", f"{data_type}:{name}") or 0)


@pytest.fixture
def norwegian(sandbox, worker_env, tmp_path):
    """acme without a language setting: the product's default, Norwegian bokmål."""
    write_integrations(tmp_path / "integrations.toml", sandbox, acme={"language": None})


def test_a_companys_email_is_norwegian_by_default(sandbox, smtp, norwegian, start_worker, r):
    start_worker()
    [rec] = seed_customers(sandbox.moment, "acme", 1)
    sandbox.moment.update("acme", "customers", rec["id"], {"customerNumber": "10001A"})
    enqueue("acme", rec["id"])
    wait_until(lambda: len(smtp.messages) == 1, 20, message="the email")
    [msg] = smtp.messages
    assert msg["Subject"] == "Moment → SpareBank 1 Regnskap: Kunde 10001A ble ikke overført"
    body = msg.get_content().replace("\r\n", "\n")
    assert f"kunne ikke overføre kunde {rec['name']} (kundenummer 10001A)." in body
    assert "Hva som er galt:\n  Kundenummeret '10001A' er ikke et tall." in body
    assert "Hva du må gjøre:\n  Endre kundenummeret i Moment til et tall mellom 100000 og 199999." in body
    assert "moment-sb1" not in body.replace("Moment → SpareBank 1", "")      # no operator commands


def test_two_thousand_records_failing_one_rule_give_at_most_three_emails(sandbox, smtp, start_worker, r):
    import re
    w = start_worker(concurrency=16, MSB1_DIGEST_WINDOW="60", MSB1_VISIBILITY_TIMEOUT="90")
    records = seed_customers(sandbox.moment, "acme", 2000)
    for i, rec in enumerate(records):
        sandbox.moment.update("acme", "customers", rec["id"], {"customerNumber": f"K-{i}"})
    for rec in records:
        enqueue("acme", rec["id"])
    wait_until(lambda: stat(r, "failed") == 2000, 150, message="2,000 failures")
    wait_until(lambda: len(smtp.messages) >= 2 and r.hlen("msb1test:digest:acme") == 0, 150,
               message="the digest sent")
    time.sleep(1)
    subjects = [m["Subject"] for m in smtp.messages]
    assert len(subjects) <= 3, subjects
    assert subjects[0] == "Moment → SpareBank 1 Regnskap: Customer K-0 was not transferred" or \
        subjects[0].endswith("was not transferred")
    in_digests = [int(re.search(r": (\d+) records were not transferred", s).group(1)) for s in subjects[1:]]
    assert sum(in_digests) == 1999                         # every other failure, in one or two digests
    digest = smtp.messages[1].get_content()
    assert f"{in_digests[0]} records – what to do: Change the customer number in Moment" in digest
    assert digest.count("  • customer ") == 200 and "more. The operator of the integration has the whole list." in digest
    # every dead letter is marked as told; the operator sees the count in the log
    def letters():
        return [json.loads(v) for v in r.hgetall("msb1test:dead:acme").values()]
    wait_until(lambda: all(letter["notified"] for letter in letters()), 10, message="every dead letter marked as told")
    assert len(letters()) == 2000
    counted = re.findall(r"acme: one email for (\d+) failed records \(customer-number-not-digits\)", w.log())
    assert sum(map(int, counted)) == 1999


def test_the_other_systems_words_reach_only_the_companys_email(sandbox, smtp, sentry, start_worker, r):
    w = start_worker(MSB1_SENTRY_DSN=sentry.dsn)
    [rec] = seed_customers(sandbox.moment, "acme", 1)
    # the platform refuses the create with its own words (which could quote a name or a phone)
    sandbox.sb1_faults.script("/api/biz/customers", 400, times=1, method="POST")
    enqueue("acme", rec["id"])
    wait_until(lambda: len(smtp.messages) == 1, 20, message="the email")
    body = smtp.messages[0].get_content()
    assert 'SpareBank 1 Regnskap said: "sandbox fault"' in body
    wait_until(lambda: sentry.events(), 10, message="the Sentry event")
    letter = r.hget("msb1test:dead:acme", f"customers:{rec['id']}")
    assert "HTTP 400" in letter
    for place in (w.log(), letter, b"".join(sentry.envelopes).decode()):
        assert "sandbox fault" not in place


def test_sentry_groups_one_problem_across_records(sandbox, smtp, sentry, start_worker, r):
    start_worker(MSB1_SENTRY_DSN=sentry.dsn)
    records = seed_customers(sandbox.moment, "acme", 3)
    for i, rec in enumerate(records):
        sandbox.moment.update("acme", "customers", rec["id"], {"customerNumber": f"X{i}"})
        enqueue("acme", rec["id"])
    wait_until(lambda: len(sentry.events()) == 3, 20, message="three events")
    prints = {tuple(e["fingerprint"]) for e in sentry.events()}
    assert prints == {("record-failed", "acme", "customers", "customer-number-not-digits")}


def test_a_line_break_in_a_customer_number_is_one_email_not_a_loop(sandbox, smtp, start_worker, r):
    w = start_worker()
    [rec] = seed_customers(sandbox.moment, "acme", 1)
    sandbox.moment.update("acme", "customers", rec["id"], {"customerNumber": "100001\r\nBcc: x@evil.example"})
    for _ in range(3):
        enqueue("acme", rec["id"])
    wait_until(lambda: stat(r, "failed") == 3, 20, message="three runs, each settled")
    time.sleep(0.5)
    [msg] = smtp.messages
    assert "\n" not in msg["Subject"] and msg["Bcc"] is None
    assert stat(r, "retried") == 0
    assert "Bcc" not in w.log() and \
        "(27 characters: letters, digits, a space, '@', '.', ':' and a line break) is not a number" in w.log()
    assert "'100001\\r\\nBcc: x@evil.example'" in msg.get_content()   # to the company: written out
