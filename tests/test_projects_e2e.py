"""Projects end to end: real worker, sandbox over real sockets, SMTP sink."""
from __future__ import annotations

import json
import time

import pytest
from conftest import COMPANY_KEYS, wait_until, write_integrations

from sandbox.moment import seed_customers

ACME = COMPANY_KEYS["acme"]
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def projects_selected(worker_env, sandbox, tmp_path):
    write_integrations(tmp_path / "integrations.toml", sandbox, data_types=("customers", "projects"),
                       fjord={"data_types": ("customers",)})


def send(name, *args):
    from worker.broker import app
    app.send_task(name, args=list(args))


def stat(r, data_type, name, integration="acme"):
    return int(r.hget(f"msb1test:stats:{integration}", f"{data_type}:{name}") or 0)


def new_project(sandbox, customer, number="1042", state="ACTIVE", company="acme"):
    return sandbox.moment.create(company, "projects", {
        "name": "Nytt kontorbygg Lysaker", "projectNumber": number, "projectState": state,
        "customer": {"id": customer["id"], "customerNumber": customer["customerNumber"]},
        "startDate": "2026-09-01", "endDate": "2027-06-30"})


def test_project_whose_customer_is_not_in_the_books_yet(sandbox, worker, r):
    [customer] = seed_customers(sandbox.moment, "acme", 1)
    project = new_project(sandbox, customer)
    send("sync.project", "acme", project["id"])
    send("sync.customer", "acme", customer["id"])          # its own sync, queued at the same time
    wait_until(lambda: stat(r, "projects", "created") == 1, 20, message="the project")
    wait_until(lambda: stat(r, "customers", "created") + stat(r, "customers", "unchanged")
               + stat(r, "customers", "updated") >= 1, 20, message="the customer's own sync")
    [c] = sandbox.sb1.customers(ACME)
    [p] = sandbox.sb1.documents(ACME, "projects")
    assert c["CustomerNumber"] == int(customer["customerNumber"])
    assert (p["ProjectNumber"], p["Name"], p["ProjectCustomerID"], p["StatusCode"]) == (
        "1042", "Nytt kontorbygg Lysaker", c["ID"], 42203)
    assert (str(p["StartDate"])[:10], str(p["EndDate"])[:10]) == ("2026-09-01", "2027-06-30")
    assert sandbox.sb1.count_writes(ACME, route="customers", method="POST") == 1


def test_project_state_change_updates_the_same_project(sandbox, worker, r):
    [customer] = seed_customers(sandbox.moment, "acme", 1)
    project = new_project(sandbox, customer)
    send("sync.project", "acme", project["id"])
    wait_until(lambda: stat(r, "projects", "created") == 1, 20, message="created")
    sandbox.moment.update("acme", "projects", project["id"], {"projectState": "COMPLETED"})
    send("sync.project", "acme", project["id"])
    wait_until(lambda: stat(r, "projects", "updated") == 1, 20, message="updated")
    [p] = sandbox.sb1.documents(ACME, "projects")
    assert p["StatusCode"] == 42204
    send("sync.project", "acme", project["id"])               # again: nothing to write
    wait_until(lambda: stat(r, "projects", "unchanged") == 1, 20, message="unchanged")
    assert sandbox.sb1.count_writes(ACME, route="projects") == 2
    sandbox.moment.update("acme", "projects", project["id"], {"endDate": None})
    send("sync.project", "acme", project["id"])               # an end date removed in Moment
    wait_until(lambda: stat(r, "projects", "updated") == 2, 20, message="the date removed")
    [p] = sandbox.sb1.documents(ACME, "projects")
    assert p.get("EndDate") is None and str(p["StartDate"])[:10] == "2026-09-01"
    assert p["StatusCode"] == 42204 and len(sandbox.sb1.documents(ACME, "projects")) == 1


def test_project_number_with_letters_one_email_no_write(sandbox, smtp, worker, r):
    [customer] = seed_customers(sandbox.moment, "acme", 1)
    project = new_project(sandbox, customer, number="P-1042")
    send("sync.project", "acme", project["id"])
    wait_until(lambda: len(smtp.messages) == 1, 20, message="the failure email")
    time.sleep(0.5)
    assert sandbox.sb1.count_writes(ACME, route="projects") == 0
    assert stat(r, "projects", "retried") == 0
    body = smtp.messages[0].get_content()
    assert "project Nytt kontorbygg Lysaker (project number P-1042)" in body
    assert "project number 'P-1042' contains other characters than digits" in body
    assert "Change the project number in Moment to digits only" in body
    [raw] = r.hgetall("msb1test:dead:acme").values()
    assert json.loads(raw)["what"] == f"project with Moment id {project['id']}" and "P-1042" not in raw
    assert json.loads(raw)["error"].startswith("the project number (6 characters: letters, digits and '-') contains")


def test_project_whose_customer_is_invalid_says_so(sandbox, smtp, worker, r):
    [customer] = seed_customers(sandbox.moment, "acme", 1, start_number=99990)
    project = new_project(sandbox, customer)
    send("sync.project", "acme", project["id"])
    wait_until(lambda: len(smtp.messages) == 1, 20, message="the failure email")
    body = smtp.messages[0].get_content()
    assert "its customer could not be transferred first: customer number 99990 is outside" in body
    assert sandbox.sb1.count_writes(ACME) == 0


def test_integration_without_projects_ignores_them(sandbox, worker, r):
    [customer] = seed_customers(sandbox.moment, "fjord", 1)
    project = new_project(sandbox, customer, company="fjord")
    send("sync.project", "fjord", project["id"])
    send("sync.customer", "fjord", customer["id"])
    wait_until(lambda: stat(r, "customers", "created", "fjord") == 1, 20, message="fjord's customer")
    wait_until(lambda: stat(r, "projects", "ignored", "fjord") == 1, 20, message="project ignored")
    assert sandbox.sb1.documents(COMPANY_KEYS["fjord"], "projects") == []
