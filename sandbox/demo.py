"""The demo: the whole flow on this machine, against the sandbox.

    scripts/demo

Starts a private Redis, the sandbox (Moment and SpareBank 1 Regnskap stand-ins), an SMTP
sink and a real worker; creates customers in the sandbox Moment, changes two of them,
adds one with an invalid customer number, and shows what arrives in the books and in
the notification mailbox.
"""
from __future__ import annotations

import time
import requests

from sandbox.mail import Mailbox
from sandbox.stack import Stack, wait_for

COMPANY = {"moment_company": "demo", "moment_api_key": "demo-moment-key", "seed_customers": 5,
           "company_key": "3f2504e0-4f89-41d3-9a0c-0305e82c3301"}


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def main() -> None:
    mailbox = Mailbox()
    step("starting Redis, the sandbox and a worker")
    stack = Stack([COMPANY], latency=0.02, smtp_port=mailbox.port)
    try:
        run(stack, mailbox)
    finally:
        stack.stop()
        mailbox.stop()


def run(stack: Stack, mailbox: Mailbox) -> None:
    from worker.producer import enqueue
    from worker.runtime import Runtime
    from worker.settings import Settings
    rt = Runtime(Settings.from_env())
    moment = f"{stack.moment_url}/api/1.0/companies/demo/customers"
    auth = ("apikey", COMPANY["moment_api_key"])
    books_url = f"{stack.sb1_url}/_sandbox/companies/{COMPANY['company_key']}/customers"
    stack.start_worker(8)
    hook_url = f"{stack.start_receiver()}/webhooks/demo/{stack.webhook_secret('demo')}"
    print(f"  Moment sandbox {stack.moment_url}, SpareBank 1 sandbox {stack.sb1_url}")
    print(f"  webhook receiver {hook_url.rsplit('/', 1)[0]}/<secret>")

    def webhook(event: str, record: dict) -> None:
        resp = requests.post(hook_url, json={"event": event, "customer": {
            "id": record["id"], "customerNumber": record["customerNumber"]}}, timeout=10)
        print(f"  webhook {event} customer {record['id']} → {resp.status_code} {resp.json()['status']}")

    def books() -> list[dict]:
        return requests.get(books_url, timeout=10).json()

    def show_books() -> None:
        print(f"  {'number':>7}  {'name':<28} {'email':<30} {'city':<12} fax")
        for c in sorted(books(), key=lambda c: c["CustomerNumber"]):
            info = c["Info"]
            fax = next((p["Number"] for p in info.get("Phones", []) if p.get("Type") == 150103), "")
            print(f"  {c['CustomerNumber']:>7}  {info['Name']:<28} "
                  f"{(info.get('DefaultEmail') or {}).get('EmailAddress', ''):<30} "
                  f"{(info.get('InvoiceAddress') or {}).get('City', ''):<12} {fax}")

    def synced(n: int) -> None:
        wait_for(lambda: sum(int(v) for k, v in rt.stats.get("demo").items()
                             if ":last_" not in k and not k.endswith(":retried")) >= n, 60, "the worker")

    customers = requests.get(moment, auth=auth, params={"size": 50}, timeout=10).json()["content"]
    step(f"Moment has {len(customers)} customers; Moment sends a webhook for each one")
    for c in customers:
        webhook("CREATE_NEW", c)
    synced(len(customers))
    step("SpareBank 1 Regnskap now has")
    show_books()

    step("two customers change in Moment (new email; a move to Bergen)")
    first, second = customers[0], customers[1]
    requests.patch(f"{moment}/{first['id']}", auth=auth, json={"email": "faktura@ny-adresse.no"},
                   timeout=10).raise_for_status()
    requests.patch(f"{moment}/{second['id']}", auth=auth, timeout=10, json={
        "address": {**second["address"], "addressLine1": "Bryggen 1", "postalCode": "5003", "city": "Bergen"}}
    ).raise_for_status()
    done = len(customers)
    for c in (first, second):
        webhook("UPDATE", c)
    synced(done + 2)
    done += 2
    show_books()
    print(f"  (still {len(books())} customers: updates change records in place)")

    step("a customer with customer number 'ABC-12' is created in Moment")
    bad = requests.post(moment, auth=auth, timeout=10, json={
        "name": "Feilnummer Consulting AS", "customerNumber": "ABC-12", "email": "post@feilnummer.no",
        "currencyCode": "NOK", "countryCode": "NO"}).json()
    webhook("CREATE_NEW", bad)
    wait_for(lambda: mailbox.messages, 30, "the failure email")
    msg = mailbox.messages[0]
    print("  the notification address got one email:\n")
    print(f"  To: {msg['To']}\n  Subject: {msg['Subject']}\n")
    print("  " + msg.get_content().replace("\n", "\n  "))
    letters = rt.dead_letters.list("demo")
    print(f"  dead letters kept for replay: {[(d.data_type, d.record_id, d.what) for d in letters]}")

    step("fixed in Moment (number 100777) and replayed (moment-sb1 replay does the same)")
    requests.patch(f"{moment}/{bad['id']}", auth=auth, json={"customerNumber": "100777"}, timeout=10)
    for d in letters:
        enqueue(d.integration_id, d.data_type, d.record_id)
    wait_for(lambda: not rt.dead_letters.list("demo"), 30, "the replay")
    show_books()
    time.sleep(0.2)
    print(f"\nDone: {len(books())} customers in the books, {len(mailbox.messages)} email, "
          f"{len(rt.dead_letters.list('demo'))} dead letters.")


if __name__ == "__main__":
    main()
