"""The demo: the whole flow on this machine, against the sandbox.

    scripts/demo

Starts a private Redis, the sandbox (Moment and SpareBank 1 Regnskap stand-ins), the
webhook receiver, an SMTP sink and a real worker, and points the sandbox Moment's
webhooks at the receiver. Then, through Moment's API only: customers are brought over,
two are changed, a project and a finalized invoice are created, and a customer with an
invalid number shows the failure email.
"""
from __future__ import annotations

import time
from decimal import Decimal

import requests

from sandbox.mail import Mailbox
from sandbox.stack import Stack, wait_for

COMPANY = {"moment_company": "demo", "moment_api_key": "demo-moment-key", "seed_customers": 5,
           "company_key": "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
           "data_types": ["customers", "projects", "invoices"]}


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def main() -> None:
    mailbox = Mailbox()
    step("starting Redis, the sandbox, the webhook receiver and a worker")
    stack = Stack([COMPANY], latency=0.02, smtp_port=mailbox.port)
    try:
        Demo(stack, mailbox).run()
    finally:
        stack.stop()
        mailbox.stop()


class Demo:
    def __init__(self, stack: Stack, mailbox: Mailbox):
        from worker.runtime import Runtime
        from worker.config.settings import Settings
        self.stack, self.mailbox = stack, mailbox
        self.rt = Runtime(Settings.from_env())
        self.moment = f"{stack.moment_url}/api/1.0/companies/demo"
        self.auth = ("apikey", COMPANY["moment_api_key"])

    # --- Moment's API (what a user does in Moment) and the books (what the accountant sees)
    def moment_call(self, method: str, path: str, **kw) -> dict:
        resp = requests.request(method, f"{self.moment}/{path}", auth=self.auth, timeout=10, **kw)
        resp.raise_for_status()
        return resp.json()

    def books(self, route: str) -> list[dict]:
        url = f"{self.stack.sb1_url}/_sandbox/companies/{COMPANY['company_key']}/{route}"
        return requests.get(url, timeout=10).json()

    def done(self, data_type: str) -> int:
        stats = self.rt.stats.get("demo")
        return sum(int(v) for k, v in stats.items() if k.startswith(f"{data_type}:")
                   and ":last_" not in k and not k.endswith(":retried"))

    def wait(self, data_type: str, n: int) -> None:
        wait_for(lambda: self.done(data_type) >= n, 60, f"{n} {data_type} syncs")

    def show_customers(self) -> None:
        print(f"  {'number':>7}  {'name':<28} {'email':<30} {'city':<12} fax")
        for c in sorted(self.books("customers"), key=lambda c: c["CustomerNumber"]):
            info = c["Info"]
            fax = next((p["Number"] for p in info.get("Phones", []) if p.get("Type") == 150103), "")
            email = (info.get("DefaultEmail") or {}).get("EmailAddress") or ""
            city = (info.get("InvoiceAddress") or {}).get("City") or ""
            print(f"  {c['CustomerNumber']:>7}  {info['Name']:<28} {email:<30} {city:<12} {fax}")

    def run(self) -> None:
        from worker.intake.producer import enqueue
        stack = self.stack
        self.stack.start_worker(8)
        receiver = stack.start_receiver()
        hook_url = f"{receiver}/webhooks/demo/{stack.webhook_secret('demo')}"
        requests.post(f"{stack.moment_url}/_sandbox/webhooks", json={"company": "demo", "url": hook_url},
                      timeout=10).raise_for_status()
        print(f"  Moment sandbox {stack.moment_url} sends its webhooks to {receiver}/webhooks/demo/<secret>")
        print(f"  SpareBank 1 sandbox {stack.sb1_url}")

        customers = self.moment_call("GET", "customers", params={"size": 50})["content"]
        step(f"Moment already has {len(customers)} customers: a backfill queues them (moment-sb1 backfill)")
        for c in customers:
            enqueue("demo", "customers", c["id"], runtime=self.rt)
        self.wait("customers", len(customers))
        step("SpareBank 1 Regnskap now has")
        self.show_customers()

        step("two customers change in Moment (new email; a move to Bergen); Moment sends webhooks")
        first, second = customers[0], customers[1]
        self.moment_call("PATCH", f"customers/{first['id']}", json={"email": "faktura@ny-adresse.no"})
        self.moment_call("PATCH", f"customers/{second['id']}", json={
            "address": {**second["address"], "addressLine1": "Bryggen 1", "postalCode": "5003", "city": "Bergen"}})
        self.wait("customers", len(customers) + 2)
        self.show_customers()
        print(f"  (still {len(self.books('customers'))} customers: updates change records in place)")

        step("a project is created in Moment for a new customer")
        customer = self.moment_call("POST", "customers", json={
            "name": "Lysaker Eiendom AS", "customerNumber": "100100", "organizationNumber": "987654325",
            "email": "post@lysaker-eiendom.no", "currencyCode": "NOK", "countryCode": "NO",
            "address": {"addressLine1": "Lysaker torg 5", "postalCode": "1366", "city": "Lysaker",
                        "countryCode": "NO"}})
        ref = {"id": customer["id"], "customerNumber": "100100"}
        project = self.moment_call("POST", "projects", json={
            "name": "Nytt kontorbygg Lysaker", "projectNumber": "1042", "projectState": "ACTIVE",
            "customer": ref, "startDate": "2026-09-01", "endDate": "2027-06-30"})
        self.wait("projects", 1)
        for p in self.books("projects"):
            print(f"  project {p['ProjectNumber']} {p['Name']}: customer ID {p['ProjectCustomerID']}, "
                  f"status {p['StatusCode']}, {str(p['StartDate'])[:10]} – {str(p['EndDate'])[:10]}")

        step("an invoice is finalized in Moment: posted as one voucher")
        self.moment_call("POST", "invoices", json={
            "invoiceNumber": 10001, "status": "FINALIZED", "invoiceDate": "2026-11-20", "dueDate": "2026-12-04",
            "paymentId": "0001000100014", "description": "Kontorbygg Lysaker, november", "currencyCode": "NOK",
            "customer": ref, "project": {"id": project["id"], "projectNumber": "1042"}, "lines": [
                {"itemText": "Prosjektledelse", "quantity": "37.5", "amountExclVat": "46875.00", "vatCode": "3",
                 "productType": "HOURS"},
                {"itemText": "Servering byggemøte", "quantity": "1", "amountExclVat": "2450.50", "vatCode": "31",
                 "productType": "PRODUCTS"},
                {"itemText": "Avfallshåndtering", "quantity": "1", "amountExclVat": "3990.00", "vatCode": "6",
                 "productType": "EXPENSES"}]})
        self.wait("invoices", 1)
        accounts = {a["ID"]: a["AccountNumber"] for a in self.books("accounts")}
        codes = {v["ID"]: v["VatCode"] for v in self.books("vattypes")}

        def show(line: dict) -> str:
            amount = Decimal(str(line["Amount"]))
            vat = f"mva {codes[line['VatTypeID']]}" if line.get("VatTypeID") else ""
            sub = f" / {accounts[line['SubAccountID']]}" if line.get("SubAccountID") else ""
            return f"    {accounts.get(line['AccountID'], '?')}{sub:<9} {amount:>11.2f}  {vat:<7} {line.get('Description', '')}"
        for voucher in self.books("journalentries"):
            print(f"  voucher {voucher['JournalEntryNumber']} \"{voucher['Description']}\"")
            print("  sent (gross amounts with their VAT code):")
            for line in voucher["DraftLines"]:
                print(show(line))
            print("  booked by SpareBank 1 Regnskap (VAT split out onto each code's account):")
            for line in voucher["Lines"]:
                print(show(line))
            total = sum((Decimal(str(ln["Amount"])) for ln in voucher["Lines"]), Decimal(0))
            print(f"    balance {total:.2f}")

        step("a customer with customer number 'ABC-12' is created in Moment")
        bad = self.moment_call("POST", "customers", json={
            "name": "Feilnummer Consulting AS", "customerNumber": "ABC-12", "email": "post@feilnummer.no",
            "currencyCode": "NOK", "countryCode": "NO"})
        wait_for(lambda: self.mailbox.messages, 30, "the failure email")
        msg = self.mailbox.messages[0]
        print("  the notification address got one email:\n")
        print(f"  To: {msg['To']}\n  Subject: {msg['Subject']}\n")
        print("  " + msg.get_content().replace("\n", "\n  "))
        letters = self.rt.dead_letters.list("demo")
        print(f"  dead letters kept for replay: {[(d.data_type, d.record_id, d.what) for d in letters]}")

        step("fixed in Moment (number 100777): its webhook brings it over and clears the dead letter")
        self.moment_call("PATCH", f"customers/{bad['id']}", json={"customerNumber": "100777"})
        wait_for(lambda: not self.rt.dead_letters.list("demo"), 30, "the fixed customer")
        self.show_customers()
        time.sleep(0.2)
        print(f"\nDone: {len(self.books('customers'))} customers, {len(self.books('projects'))} project, "
              f"{len(self.books('journalentries'))} voucher in the books; {len(self.mailbox.messages)} email; "
              f"{len(self.rt.dead_letters.list('demo'))} dead letters.")


if __name__ == "__main__":
    main()
