"""Outages are one notice, then automatic recovery: real worker, Redis, sandbox, SMTP."""
from __future__ import annotations

import time

import pytest
from conftest import CLIENT_ID, COMPANY_KEYS, wait_until, write_integrations
from conftest import publish_task as enqueue

from sandbox.moment import seed_customers

ACME = COMPANY_KEYS["acme"]
OPS = "drift@integrator.example"
pytestmark = pytest.mark.slow
FAST = {"MSB1_OPERATOR_EMAIL": OPS, "MSB1_CIRCUIT_THRESHOLD": "3", "MSB1_CIRCUIT_WINDOW": "30",
        "MSB1_CIRCUIT_PROBE_INTERVAL": "1"}




def stat(r, name, integration="acme"):
    return int(r.hget(f"msb1test:stats:{integration}", f"customers:{name}") or 0)


def to(smtp, address):
    return [m for m in smtp.messages if m["To"] == address]


def test_an_outage_longer_than_all_retries_loses_nothing_and_dead_letters_nothing(sandbox, smtp, start_worker, r):
    start_worker(**FAST)                               # 4 tries, at most 1.5 s apart: about 4 s in all
    records = seed_customers(sandbox.moment, "acme", 20)
    sandbox.sb1_faults.configure(error_rate=1.0)       # SpareBank 1 answers 503 to everything
    for rec in records:
        enqueue("acme", rec["id"])
    wait_until(lambda: to(smtp, OPS), 20, message="the operator's notice")
    time.sleep(10)                                     # well past every record's tries
    assert r.hlen("msb1test:dead:acme") == 0 and stat(r, "failed") == 0
    assert stat(r, "waiting") > 0
    [opened] = to(smtp, OPS)
    assert opened["Subject"] == "moment-sb1: SpareBank 1 Regnskap does not answer (integration acme)"
    assert to(smtp, "regnskap@acme.example") == []     # a short outage is not the company's business
    sandbox.sb1_faults.reset()
    wait_until(lambda: stat(r, "created") == 20, 30, message="all 20 after the outage")
    wait_until(lambda: len(to(smtp, OPS)) == 2, 10, message="the recovery notice")
    assert to(smtp, OPS)[1]["Subject"] == "moment-sb1: SpareBank 1 Regnskap is back for integration acme"
    assert r.hlen("msb1test:dead:acme") == 0 and len(sandbox.sb1.customers(ACME)) == 20
    assert to(smtp, "regnskap@acme.example") == []


def test_a_long_outage_is_one_notice_to_the_company_and_one_when_it_is_over(sandbox, smtp, worker_env, tmp_path,
                                                                            start_worker, r):
    write_integrations(tmp_path / "integrations.toml", sandbox, acme={"language": None})   # Norwegian
    start_worker(**FAST, MSB1_OUTAGE_NOTICE_AFTER="2")
    records = seed_customers(sandbox.moment, "acme", 5)
    sandbox.moment_faults.configure(error_rate=1.0)      # Moment is out
    for rec in records:
        enqueue("acme", rec["id"])
    wait_until(lambda: to(smtp, "regnskap@acme.example"), 30, message="the company's notice")
    time.sleep(3)
    [notice] = to(smtp, "regnskap@acme.example")
    assert notice["Subject"] == "Moment → SpareBank 1 Regnskap: Moment svarer ikke"
    body = notice.get_content()
    assert "Ingenting går tapt" in body and "Du trenger ikke gjøre noe" in body
    sandbox.moment_faults.reset()
    wait_until(lambda: stat(r, "created") == 5, 30, message="all five after the outage")
    wait_until(lambda: len(to(smtp, "regnskap@acme.example")) == 2, 10, message="the all-clear")
    assert to(smtp, "regnskap@acme.example")[1]["Subject"] == (
        "Moment → SpareBank 1 Regnskap: overføringene går igjen (Moment)")
    assert r.hlen("msb1test:dead:acme") == 0


def test_the_integrators_credentials_refused_are_the_operators_problem_only(sandbox, smtp, start_worker, r,
                                                                           tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "expired.pem"
    key_file.write_bytes(other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    start_worker(**FAST, MSB1_SB1_PRIVATE_KEY_FILE=str(key_file))    # the token endpoint answers 400
    records = seed_customers(sandbox.moment, "acme", 3) + seed_customers(sandbox.moment, "fjord", 3,
                                                                          start_number=150001)
    for rec in records[:3]:
        enqueue("acme", rec["id"])
    for rec in records[3:]:
        enqueue("fjord", rec["id"])
    wait_until(lambda: to(smtp, OPS), 20, message="the operator's notice")
    time.sleep(4)
    [notice] = to(smtp, OPS)
    assert notice["Subject"] == ("moment-sb1: SpareBank 1 Regnskap's login service refuses the integrator's own "
                                 "credentials (every integration)")
    assert len(smtp.messages) == 1                      # no company hears of it
    assert r.hlen("msb1test:dead:acme") == r.hlen("msb1test:dead:fjord") == 0
    # the operator installs the right key (here: the platform learns it), and everything flows
    sandbox.sb1.add_client(CLIENT_ID, public_key_pem=other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    wait_until(lambda: stat(r, "created") == 3 and stat(r, "created", "fjord") == 3, 30, message="all six")
    wait_until(lambda: len(to(smtp, OPS)) == 2, 10, message="the recovery notice")
    assert len(smtp.messages) == 2


def test_a_companys_refused_access_is_one_email_to_that_company(sandbox, smtp, worker_env, tmp_path,
                                                                start_worker, r):
    unknown_key = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    path = write_integrations(tmp_path / "integrations.toml", sandbox, data_types=("customers",))
    path.write_text(path.read_text().replace(ACME, unknown_key))     # acme's company key is wrong
    start_worker(**FAST)
    acme = seed_customers(sandbox.moment, "acme", 5)
    fjord = seed_customers(sandbox.moment, "fjord", 2, start_number=150001)
    for rec in acme:
        enqueue("acme", rec["id"])
    for rec in fjord:
        enqueue("fjord", rec["id"])
    wait_until(lambda: stat(r, "created", "fjord") == 2, 20, message="the other company, untouched")
    wait_until(lambda: to(smtp, "regnskap@acme.example"), 20, message="acme's email")
    time.sleep(4)
    [mail] = to(smtp, "regnskap@acme.example")              # one, not one per record
    assert mail["Subject"] == "Moment → SpareBank 1 Regnskap: SpareBank 1 Regnskap refuses the integration"
    assert "company key" in mail.get_content()
    assert r.hlen("msb1test:dead:acme") == 0 and stat(r, "created") == 0
    # the company activates the integration (the key is known now): the waiting syncs run
    sandbox.sb1.add_company(unknown_key, "Acme AS")
    wait_until(lambda: stat(r, "created") == 5, 30, message="acme's five")
    wait_until(lambda: len(to(smtp, "regnskap@acme.example")) == 2, 10, message="the all-clear")
    assert to(smtp, "regnskap@acme.example")[1]["Subject"].endswith("transfers are running again (SpareBank 1 Regnskap)")
