"""A chaos run anyone can repeat: a few minutes of trouble, then the books must equal Moment.

    .venv/bin/python -m bench.chaos [--seconds 120] [--customers 150] [--seed 7]

The real stack on this machine (Redis with AOF, the sandbox in its own process, the webhook
receiver, celery beat and two worker processes) while, all at once:

* Moment changes customers and finalizes invoices; its webhooks go to the receiver;
* SpareBank 1 answers 10 % of calls with 503 and 5 % with 429, and loses the answer of
  3 % of its writes (the write happened, the worker sees a 503);
* SpareBank 1 is out for 30 seconds (every call 503);
* Redis is restarted (AOF, as docker-compose runs it);
* every worker is killed with SIGKILL twice, and started again as a supervisor would.

Then the trouble stops, the run waits until everything settled, and checks: every Moment
customer is in the books once, field by field; every finalized invoice is one voucher
whose receivable holds its gross; no dead letter; the outage gave the operator one notice
and one recovery notice and the company none. It prints the figures and exits 1 if any
check fails.
"""
from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal

import requests

from sandbox.mail import Mailbox
from sandbox.moment import kid_mod10, sample_customer
from sandbox.stack import Stack

COMPANY = "chaos"
API_KEY = "chaos-moment-key-0123"
OPERATOR = "drift@integrator.example"
ORE = Decimal("0.01")
RATES = {"3": Decimal(25), "31": Decimal(15), "33": Decimal(12), "5": Decimal(0)}
CHAOS = {"error_rate": 0.10, "rate_limit_rate": 0.05, "lost_write_rate": 0.03}
ENV = {   # quick enough for minutes, not hours: the same mechanisms, shorter clocks
    "MSB1_OPERATOR_EMAIL": OPERATOR, "MSB1_RETRY_MAX_ATTEMPTS": "8", "MSB1_RETRY_BASE_DELAY": "0.5",
    "MSB1_RETRY_MAX_DELAY": "8", "MSB1_VISIBILITY_TIMEOUT": "40", "MSB1_RESTORE_INTERVAL": "2",
    "MSB1_RESTORE_LOCK_TIMEOUT": "5", "MSB1_LOCK_TIMEOUT": "15", "MSB1_LOCK_WAIT": "3",
    "MSB1_CIRCUIT_PROBE_INTERVAL": "3", "MSB1_CIRCUIT_THRESHOLD": "10", "MSB1_CIRCUIT_WINDOW": "60",
    "MSB1_POLL_INTERVAL": "10", "MSB1_POLL_OVERLAP": "10", "MSB1_DIGEST_WINDOW": "30",
    "MSB1_HTTP_READ_TIMEOUT": "10",
}


class Run:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.mail = Mailbox()
        self.stack = Stack([{"moment_company": COMPANY, "moment_api_key": API_KEY, "name": "Kaos AS",
                             "data_types": ["customers", "projects", "invoices"]}],
                           latency=0.0, smtp_port=self.mail.port, aof=True, env=ENV)
        self.key = self.stack.companies[0]["company_key"]
        self.moment = f"{self.stack.moment_url}/api/1.0/companies/{COMPANY}"
        self.counts: Counter[str] = Counter()
        self.workers: list = []
        self.log: list[str] = []
        self.started = time.monotonic()

    # --- the parts ---------------------------------------------------------------------------
    def say(self, text: str) -> None:
        line = f"{time.monotonic() - self.started:6.1f}s  {text}"
        self.log.append(line)
        print(line, flush=True)

    def call(self, method: str, path: str, **kw):
        resp = requests.request(method, f"{self.moment}/{path}", auth=("apikey", API_KEY), timeout=10, **kw)
        resp.raise_for_status()
        return resp.json()

    def faults(self, **settings) -> None:
        requests.post(f"{self.stack.sb1_url}/_sandbox/faults", json=settings, timeout=10).raise_for_status()

    def start_workers(self) -> None:
        for n in range(2):
            self.workers.append(self.stack.start_worker(8, log_name=f"worker{n}.log"))

    def supervise(self) -> None:
        """What docker-compose's restart policy does: a worker that exited is started again."""
        for n, proc in enumerate(self.workers):
            if proc.poll() is not None:
                self.say(f"worker {n} exited ({proc.returncode}); starting it again")
                self.workers[n] = self.stack.start_worker(8, log_name=f"worker{n}.log")
                self.counts["worker restarts"] += 1

    def kill(self, n: int) -> None:
        import os
        import signal
        os.killpg(self.workers[n].pid, signal.SIGKILL)
        self.workers[n].wait(10)
        self.counts["SIGKILLs"] += 1
        self.say(f"worker {n} killed (SIGKILL)")

    # --- Moment, changing ------------------------------------------------------------------
    def seed(self) -> None:
        used: set[str] = set()
        self.customers = []
        for i in range(self.args.customers):
            self.customers.append(self.call("POST", "customers", json=sample_customer(self.rng, str(100001 + i), used)))
        self.projects = [self.call("POST", "projects", json={
            "name": f"Prosjekt {n}", "projectNumber": str(2000 + n), "projectState": "ACTIVE",
            "customer": {"id": c["id"], "customerNumber": c["customerNumber"]}})
            for n, c in enumerate(self.customers[:10])]
        self.invoices: list[dict] = []

    def change(self) -> None:
        c = self.rng.choice(self.customers)
        field = self.rng.choice(["email", "phone", "website", "name", "address", "fax"])
        n = self.rng.randrange(10 ** 6)
        value = {"email": f"post{n}@kaos.example", "phone": f"+47 9{n:07d}", "website": f"https://kaos{n}.example",
                 "name": f"Kaos {n} AS", "fax": f"+47 2{n:07d}",
                 "address": {"addressLine1": f"Gate {n}", "postalCode": f"{n % 9000 + 1000}", "city": "Bergen",
                             "countryCode": "NO"}}[field]
        self.call("PATCH", f"customers/{c['id']}", json={field: value})
        self.counts["customer changes"] += 1

    def invoice(self) -> None:
        number = 50001 + len(self.invoices)
        c = self.rng.choice(self.customers)
        project = self.rng.choice(self.projects + [None])
        lines = [{"itemText": f"Linje {k}", "quantity": "1",
                  "amountExclVat": f"{self.rng.randint(100, 2_000_000) / 100:.2f}",
                  "vatCode": self.rng.choice(list(RATES)), "productType": self.rng.choice(["HOURS", "PRODUCTS"])}
                 for k in range(self.rng.randint(1, 4))]
        body = {"invoiceNumber": number, "status": "FINALIZED", "invoiceDate": "2026-11-20",
                "dueDate": "2026-12-04", "paymentId": kid_mod10(f"{number:012d}"), "description": "Kaos",
                "currencyCode": "NOK", "customer": {"id": c["id"], "customerNumber": c["customerNumber"]},
                "lines": lines}
        if project:
            body["project"] = {"id": project["id"], "projectNumber": project["projectNumber"]}
        self.invoices.append(self.call("POST", "invoices", json=body))
        self.counts["invoices finalized"] += 1

    def traffic(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if self.rng.random() < 0.2:
                    self.invoice()
                else:
                    self.change()
            except requests.RequestException as exc:
                self.say(f"Moment call failed ({type(exc).__name__}); going on")
            stop.wait(0.15)

    # --- the run ---------------------------------------------------------------------------
    def run(self) -> int:
        stack, secs = self.stack, self.args.seconds
        self.start_workers()
        receiver = stack.start_receiver()
        # moment-sb1 beat starts celery beat again when a Redis restart ends it
        stack._spawn([sys.executable, "-m", "worker.cli", "beat", "--schedule", str(stack.tmp / "beat.db")],
                     "beat.log", env=stack.env)
        self.seed()
        requests.post(f"{stack.moment_url}/_sandbox/webhooks", timeout=10, json={
            "company": COMPANY, "url": f"{receiver}/webhooks/{COMPANY}/{stack.webhook_secret(COMPANY)}"})
        from worker.intake.producer import enqueue
        for c in self.customers:          # the backfill of what Moment had before
            enqueue(COMPANY, "customers", c["id"])
        self.faults(**CHAOS)
        self.say(f"chaos on: SpareBank 1 {CHAOS}; Moment changing; {len(self.customers)} customers")
        stop = threading.Event()
        driver = threading.Thread(target=self.traffic, args=(stop,), daemon=True)
        driver.start()
        plan = [(0.15, "outage"), (0.40, "back"), (0.50, "kill0"), (0.55, "kill1"), (0.65, "redis"),
                (0.80, "kill0"), (0.85, "kill1")]
        t0 = time.monotonic()
        for at, step in plan:
            while time.monotonic() - t0 < at * secs:
                self.supervise()
                time.sleep(0.2)
            if step == "outage":
                self.faults(error_rate=1.0, rate_limit_rate=0.0, lost_write_rate=0.0)
                self.outage_started = time.monotonic()
                self.say("SpareBank 1 is out (every call 503)")
            elif step == "back":
                while time.monotonic() - self.outage_started < 30:
                    time.sleep(0.2)
                self.faults(**CHAOS)
                self.say("SpareBank 1 is back (10 % 503, 5 % 429, 3 % lost answers)")
            elif step.startswith("kill"):
                n = int(step[-1])
                self.kill(n)
                time.sleep(1)
                self.workers[n] = stack.start_worker(8, log_name=f"worker{n}.log")
            elif step == "redis":
                stack.restart_redis(down=2)
                self.counts["Redis restarts"] += 1
                self.say("Redis restarted (AOF)")
        while time.monotonic() - t0 < secs:
            self.supervise()
            time.sleep(0.2)
        stop.set()
        driver.join(10)
        requests.post(f"{stack.sb1_url}/_sandbox/reset-faults", timeout=10)
        self.say("trouble over; waiting for the books to settle")
        settled = self.settle()
        return self.report(settled)

    def settle(self) -> float | None:
        """Seconds until the books equal Moment (the poll covers what the kills lost)."""
        t = time.monotonic()
        deadline = t + self.args.settle
        while time.monotonic() < deadline:
            self.supervise()
            if not self.differences(quick=True):
                return time.monotonic() - t
            time.sleep(2)
        return None

    # --- the checks ------------------------------------------------------------------------
    def moment_records(self, entity: str) -> list[dict]:
        out, page = [], 1
        while True:
            body = self.call("GET", entity, params={"page": page, "size": 500})
            out += body["content"]
            if len(body["content"]) < 500:
                return out
            page += 1

    def books(self, route: str) -> list[dict]:
        resp = requests.get(f"{self.stack.sb1_url}/_sandbox/companies/{self.key}/{route}", timeout=30)
        resp.raise_for_status()
        return resp.json()

    def differences(self, quick: bool = False) -> list[str]:
        problems = []
        books = Counter(c["CustomerNumber"] for c in self.books("customers"))
        by_number = {c["CustomerNumber"]: c for c in self.books("customers")}
        currencies = {x["ID"]: x["Code"] for x in self.books("currencycodes")}
        for m in self.moment_records("customers"):
            number = int(m["customerNumber"])
            if books[number] != 1:
                problems.append(f"customer {number}: {books[number]} in the books")
                continue
            b = by_number[number]
            info, address = b["Info"], b["Info"].get("InvoiceAddress") or {}
            faxes = [p["Number"] for p in info.get("Phones") or [] if p["Type"] == 150103]
            a = m.get("address") or {}
            pairs = [("name", info["Name"], m["name"]), ("org", b.get("OrgNumber"), m.get("organizationNumber")),
                     ("email", (info.get("DefaultEmail") or {}).get("EmailAddress"), m.get("email")),
                     ("web", b.get("WebUrl"), m.get("website")),
                     ("phone", (info.get("DefaultPhone") or {}).get("Number"), m.get("phone")),
                     ("fax", faxes[0] if faxes else None, m.get("fax")),
                     ("currency", currencies.get(b.get("CurrencyCodeID")), m.get("currencyCode") or "NOK"),
                     ("street", address.get("AddressLine1"), a.get("addressLine1")),
                     ("postcode", address.get("PostalCode"), a.get("postalCode")),
                     ("city", address.get("City"), a.get("city"))]
            problems += [f"customer {number}: {name} {have!r} in the books, {want!r} in Moment"
                         for name, have, want in pairs if (have or None) != (want or None)]
            if quick and problems:
                return problems
        receivables = Counter()
        gross = {}
        for v in self.books("journalentries"):
            for line in v.get("Lines") or []:
                if line.get("SubAccountID") and line.get("InvoiceNumber"):
                    receivables[line["InvoiceNumber"]] += 1
                    gross[line["InvoiceNumber"]] = Decimal(str(line["Amount"]))
        for inv in self.invoices:
            n = str(inv["invoiceNumber"])
            if receivables[n] != 1:
                problems.append(f"invoice {n}: {receivables[n]} vouchers")
            elif gross[n] != self.moment_gross(inv):
                problems.append(f"invoice {n}: receivable {gross[n]}, Moment's gross {self.moment_gross(inv)}")
            if quick and problems:
                return problems
        return problems

    @staticmethod
    def moment_gross(inv: dict) -> Decimal:
        net: dict[str, Decimal] = {}
        for ln in inv["lines"]:
            net[ln["vatCode"]] = net.get(ln["vatCode"], Decimal(0)) + Decimal(ln["amountExclVat"])
        return sum((n + (n * RATES[c] / 100).quantize(ORE, ROUND_HALF_UP) for c, n in net.items()), Decimal(0))

    def report(self, settled: float | None) -> int:
        problems = self.differences()
        r = self.stack.redis
        stats = {k: int(v) for k, v in r.hgetall(f"bench:stats:{COMPANY}").items() if ":last_" not in k}
        dead = r.hgetall(f"bench:dead:{COMPANY}")
        injected = requests.get(f"{self.stack.sb1_url}/_sandbox/faults", timeout=10).json()["injected"]
        ops = [m["Subject"] for m in self.mail.messages if m["To"] == OPERATOR]
        company = [m["Subject"] for m in self.mail.messages if m["To"] != OPERATOR]
        opened = [s for s in ops if "SpareBank 1 Regnskap does not answer" in s]
        closed = [s for s in ops if "SpareBank 1 Regnskap is back" in s]
        checks = {
            "books equal Moment (every customer once, every field)": not [p for p in problems if "customer" in p],
            "every finalized invoice is one voucher with Moment's gross": not [p for p in problems if "invoice" in p],
            "no dead letters": not dead,
            "the outage: one operator notice and one recovery notice": len(opened) == 1 and len(closed) == 1,
            "no email to the company": not company,
        }
        print("\n=== figures")
        print(f"  run {self.args.seconds:.0f}s of trouble; settled {'in %.0fs' % settled if settled is not None else 'NOT within %ds' % self.args.settle}")
        print(f"  Moment: {len(self.customers)} customers, {self.counts['customer changes']} changes, "
              f"{self.counts['invoices finalized']} invoices finalized")
        print(f"  SpareBank 1 faults injected: {injected.get('503', 0)} × 503, {injected.get('429', 0)} × 429, "
              f"{injected.get('-1', 0)} lost answers; 30 s outage; {self.counts['Redis restarts']} Redis restart; "
              f"{self.counts['SIGKILLs']} SIGKILLs; {self.counts['worker restarts']} worker restarts by the supervisor")
        print("  syncs: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())))
        print(f"  operator emails: {ops}")
        print(f"  company emails: {company}")
        print(f"  dead letters: {len(dead)}")
        for p in problems[:20]:
            print(f"  PROBLEM {p}")
        print("\n=== checks")
        for name, ok in checks.items():
            print(f"  {'ok  ' if ok else 'FAIL'} {name}")
        failed = not all(checks.values()) or settled is None
        print(f"\n{'FAILED' if failed else 'PASSED'} (logs in {self.stack.tmp})" if failed else "\nPASSED")
        return 1 if failed else 0

    def close(self) -> None:
        self.stack.stop(keep_files=getattr(self, "keep", False))
        self.mail.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120, help="how long the trouble lasts")
    parser.add_argument("--customers", type=int, default=150)
    parser.add_argument("--settle", type=int, default=180, help="seconds the books get to settle afterwards")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    run = Run(args)
    code = 1
    try:
        code = run.run()
        run.keep = code != 0
    finally:
        run.close()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
