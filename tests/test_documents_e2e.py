"""An invoice's PDF as its voucher's documentation (bilag), end to end: a real worker, the
stand-ins of both services (Moment's PDF route, the platform's Files host, link and list)
and an SMTP server. Linked once whatever runs twice or dies; a document that cannot be
attached is a dead letter and one email of its own, and the voucher is posted anyway."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from conftest import COMPANY_KEYS, ROOT, wait_until, write_integrations
from test_invoices_e2e import REVENUE, new_invoice, send, vouchers

from errors import PermanentError

ACME = COMPANY_KEYS["acme"]
pytestmark = pytest.mark.slow


def selected(sandbox, tmp_path, *extra, language="en"):
    write_integrations(tmp_path / "integrations.toml", sandbox, data_types=("customers", "projects", "invoices"),
                       acme={"extra": [REVENUE, *extra], "language": language}, fjord={"data_types": ("customers",)})


@pytest.fixture(autouse=True)
def invoices_selected(worker_env, sandbox, tmp_path):
    selected(sandbox, tmp_path)


def stat(r, name, data_type="documents"):
    return int(r.hget("msb1test:stats:acme", f"{data_type}:{name}") or 0)


def files(sandbox):
    return sandbox.sb1.files.of(ACME)


def linked_once(sandbox, voucher_id):
    found = files(sandbox)
    return len(found) == 1 and found[0]["EntityLinks"] == [{"EntityType": "JournalEntry", "EntityID": voucher_id}]


def test_posted_invoice_has_its_pdf_linked_once(sandbox, worker, r):
    _, invoice = new_invoice(sandbox)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "created") == 1, 30, message="the document")
    [voucher] = vouchers(sandbox)
    assert linked_once(sandbox, voucher["ID"])
    [stored] = files(sandbox)
    assert stored["Name"] == f"Faktura-1001-moment-{invoice['id']}.pdf"
    assert sandbox.sb1.files.content[stored["ID"]].startswith(b"%PDF-")
    # the task twice more: found linked (the state), nothing uploaded again
    for _ in range(2):
        send("sync.document", "acme", invoice["id"])
    wait_until(lambda: stat(r, "unchanged") == 2, 30, message="two more runs")
    # without the state, the voucher's own files say it is linked
    r.delete("msb1test:state:acme:documents")
    send("sync.document", "acme", invoice["id"])
    wait_until(lambda: stat(r, "unchanged") == 3, 30, message="a run without state")
    assert linked_once(sandbox, voucher["ID"]) and sandbox.sb1.files.uploads == 1


def test_worker_killed_between_upload_and_link_gives_one_linked_document(sandbox, start_worker, r):
    w = start_worker()
    killed = []

    def kill_worker(key, method, route, doc):       # the file is stored; the answer never arrives
        if route == "files-host" and not killed:
            killed.append(doc["ID"])
            os.killpg(w.proc.pid, signal.SIGKILL)
    sandbox.sb1.write_listeners.append(kill_worker)
    _, invoice = new_invoice(sandbox)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: killed, 30, message="the upload")
    w.proc.wait(10)
    [voucher] = vouchers(sandbox)
    assert files(sandbox)[0]["EntityLinks"] == []           # stored, not linked
    start_worker()                                          # the unacked task comes back
    wait_until(lambda: stat(r, "created") == 1, 40, message="the redelivered document")
    assert linked_once(sandbox, voucher["ID"]) and files(sandbox)[0]["ID"] == killed[0]
    assert sandbox.sb1.files.uploads == 1 and len(vouchers(sandbox)) == 1


def test_pdf_route_failing_dead_letters_the_document_not_the_voucher(sandbox, smtp, worker_env, start_worker,
                                                                      r, tmp_path):
    selected(sandbox, tmp_path, language=None)             # the product's default: Norwegian
    start_worker()
    sandbox.moment_faults.script("/pdf", 500, times=1000)
    _, invoice = new_invoice(sandbox)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: len(smtp.messages) == 1, 40, message="the email")
    assert len(vouchers(sandbox)) == 1 and stat(r, "posted", "invoices") == 1
    assert r.hexists("msb1test:dead:acme", f"documents:{invoice['id']}")
    assert not r.hexists("msb1test:dead:acme", f"invoices:{invoice['id']}")
    message = smtp.messages[0]
    body = message.get_content()
    assert message["Subject"].endswith("Faktura-pdf 1001 ble ikke overført")
    assert ("Fakturaen er bokført, men PDF-en av den kunne ikke hentes fra Moment (HTTP 500), så den er ikke "
            "lagt ved bilaget.") in body
    assert files(sandbox) == [] and not r.exists("msb1test:circuit:acme:moment")
    # Moment's route works again: the replay attaches it, and the dead letter is gone
    sandbox.reset_faults()
    subprocess.run([sys.executable, "-m", "worker.cli", "replay", "--integration", "acme", "--data-type",
                    "documents"], cwd=ROOT, env=worker_env, check=True, capture_output=True, timeout=30)
    wait_until(lambda: stat(r, "created") == 1, 30, message="the replay")
    assert linked_once(sandbox, vouchers(sandbox)[0]["ID"])
    assert not r.hexists("msb1test:dead:acme", f"documents:{invoice['id']}") and len(smtp.messages) == 1


def test_attach_invoices_false_uploads_nothing(sandbox, start_worker, r, tmp_path):
    selected(sandbox, tmp_path, "attach_invoices = false")
    start_worker()
    _, invoice = new_invoice(sandbox)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "posted", "invoices") == 1, 30, message="the voucher")
    send("sync.document", "acme", invoice["id"])            # even when asked: not this integration's
    wait_until(lambda: stat(r, "ignored") == 1, 30, message="the document task")
    assert files(sandbox) == [] and sandbox.sb1.files.uploads == 0 and stat(r, "created") == 0


def test_upload_answered_200_without_a_stored_file_is_caught(sandbox, worker_env):
    """The Files host's trap: a part not named File stores nothing and still answers 200."""
    from worker.config.settings import Settings
    from worker.runtime import Runtime
    rt = Runtime(Settings.from_env(worker_env))
    client = rt.files(rt.integration("acme"))
    with pytest.raises(PermanentError) as caught:
        client.upload("Faktura-1.pdf", b"%PDF-1.4 x", field="Attachment")
    assert caught.value.code == "document-not-stored" and "answered 200 but stored no file" in str(caught.value)
    assert files(sandbox) == [] and sandbox.sb1.files.uploads == 1
    assert client.upload("Faktura-1.pdf", b"%PDF-1.4 x") == files(sandbox)[0]["ID"]
