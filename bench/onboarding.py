"""Benchmark: onboarding one company (issue 25, item 3) under the product's default rate
limits, against a sandbox that truly limits the company's calls per second.

    .venv/bin/python -m bench.onboarding                 # 10,000 customers, 2,000 projects, 5,000 invoices
    .venv/bin/python -m bench.onboarding --customers 1000 --projects 200 --invoices 500   # a quick run

One company is seeded in the sandbox Moment (customers, projects spread over them, finalized
invoices on those projects: lines at 25/15/12/0 % VAT). The sandbox limits the company on
each side (``company_limit``: a token bucket of N calls/s, above it a 429 with
``Retry-After: 1``; --sb1-limit 50 and --moment-limit 25, the static limits the product
guesses). The workers run with the product's default limits (no MSB1_*_RATE_LIMIT in their
environment, whatever sandbox.stack sets). Then, as a user would, one command per data
type, one after the other: ``moment-sb1 backfill <company> --data-type customers --wait``,
then projects, then invoices; each phase ends when the books (the SpareBank 1 sandbox) hold
every record of its type.

Per data type and in total: records, wall time, records/s; calls per record to SpareBank 1
and to Moment (counted at the sandbox: every call that reached it, 429s included; the token
endpoint apart); the 429s; the floor, the calls the books strictly need over the true limit
(one write per record / the SpareBank 1 limit, Moment's list pages / the Moment limit; the
larger) and the time against it; the workers' CPU per record. A markdown table, then one
JSON line. At the end the books are checked: every seeded customer, project and invoice
once, by number.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter

import requests

from sandbox.stack import ROOT, Stack, cpu_seconds, wait_for

COMPANY = "onboard"
DATA_TYPES = ("customers", "projects", "invoices")
BOOKS_ROUTE = {"customers": "customers", "projects": "projects", "invoices": "journalentries"}
# the product's rate-limit settings: left out of the workers' environment, so they run with
# the product's defaults (worker.config.settings.Settings)
RATE_LIMIT_VARS = ("MSB1_SB1_RATE_LIMIT", "MSB1_SB1_HOST_RATE_LIMIT", "MSB1_MOMENT_RATE_LIMIT")


def sandbox_calls(stack: Stack) -> dict:
    """Every call each sandbox has seen so far: those the limit let through (by method and
    route) and those it answered 429 (the faults' counter; no other fault is set)."""
    out = {}
    for side, url, key in (("sb1", stack.sb1_url, "route"), ("moment", stack.moment_url, "entity")):
        state = requests.get(f"{url}/_sandbox/state", timeout=30).json()
        by_route = Counter({f"{r['method']} {r[key]}": r["count"] for r in state["requests"]})
        limited = int(state["faults"]["injected"].get("429", 0))
        out[side] = {"calls": sum(by_route.values()) + limited, "429": limited, "by_route": by_route}
        if side == "sb1":
            out[side]["token_calls"] = state["token_requests"]
            out[side]["books"] = state["companies"]
    return out


def books_count(stack: Stack, company_key: str, data_type: str) -> int:
    state = requests.get(f"{stack.sb1_url}/_sandbox/state", timeout=30).json()
    return state["companies"].get(company_key, {}).get(BOOKS_ROUTE[data_type], 0)


def phase(stack: Stack, company_key: str, data_type: str, expected: int, workers: list, args) -> dict:
    """One backfill command, until the books hold ``expected`` records of its type."""
    before, cpu_before = sandbox_calls(stack), sum(cpu_seconds(p.pid) for p in workers)
    already = books_count(stack, company_key, data_type)
    started = time.time()
    with open(stack.tmp / f"backfill-{data_type}.log", "wb") as log:
        cli = subprocess.Popen([sys.executable, "-m", "worker.cli", "backfill", COMPANY, "--data-type", data_type,
                                "--page-size", str(args.page_size), "--wait"],
                               cwd=ROOT, env=stack.env, stdout=log, stderr=subprocess.STDOUT)
    seen = {"count": already, "at": started}

    def done() -> bool:
        count = books_count(stack, company_key, data_type)
        if count != seen["count"]:
            seen.update(count=count, at=time.time())
        if count - already >= expected:
            return True
        # the command ended (every sync ended) and nothing came in for 10 s: some never will
        return cli.poll() is not None and time.time() - seen["at"] > 10
    wait_for(done, args.timeout, f"the {data_type} in the books", interval=0.2)
    elapsed = seen["at"] - started
    cpu = sum(cpu_seconds(p.pid) for p in workers) - cpu_before
    try:
        cli.wait(120)
    except subprocess.TimeoutExpired:
        cli.kill()
    after = sandbox_calls(stack)
    written = seen["count"] - already
    calls = {side: {"calls": after[side]["calls"] - before[side]["calls"],
                    "429": after[side]["429"] - before[side]["429"],
                    "by_route": dict(sorted((after[side]["by_route"] - before[side]["by_route"]).items()))}
             for side in ("sb1", "moment")}
    return {"records": expected, "in_books": written, "seconds": elapsed, "cpu_seconds": cpu,
            "calls": calls, "pages": math.ceil(expected / args.page_size),
            "command_exit": cli.returncode,
            "command_output": (stack.tmp / f"backfill-{data_type}.log").read_text(errors="replace")[-400:]}


def figures(p: dict, args) -> dict:
    """The row of one phase (or the total): rates, calls per record, 429s, the floor."""
    n, sb1, moment = p["records"], p["calls"]["sb1"], p["calls"]["moment"]
    floor_sb1 = n / args.sb1_limit                       # one write per record
    floor_moment = p["pages"] / args.moment_limit         # the list pages, nothing else
    floor = max(floor_sb1, floor_moment)
    return {"records": n, "in_books": p["in_books"], "seconds": round(p["seconds"], 1),
            "records_per_second": round(n / p["seconds"], 2) if p["seconds"] else None,
            "sb1_calls": sb1["calls"], "sb1_calls_per_record": round(sb1["calls"] / n, 3),
            "moment_calls": moment["calls"], "moment_calls_per_record": round(moment["calls"] / n, 3),
            "sb1_429": sb1["429"], "sb1_429_share": round(sb1["429"] / sb1["calls"], 4) if sb1["calls"] else 0,
            "moment_429": moment["429"],
            "moment_429_share": round(moment["429"] / moment["calls"], 4) if moment["calls"] else 0,
            "sb1_accepted_per_second": round((sb1["calls"] - sb1["429"]) / p["seconds"], 1) if p["seconds"] else None,
            "floor_sb1_seconds": round(floor_sb1, 1), "floor_moment_seconds": round(floor_moment, 1),
            "floor_seconds": round(floor, 1), "time_over_floor": round(p["seconds"] / floor, 2),
            "worker_cpu_ms_per_record": round(p["cpu_seconds"] / n * 1000, 2)}


def check_books(stack: Stack, company_key: str, args) -> dict:
    """Every seeded record once in the books, by number."""
    def docs(route: str) -> list[dict]:
        resp = requests.get(f"{stack.sb1_url}/_sandbox/companies/{company_key}/{route}", timeout=120)
        resp.raise_for_status()
        return resp.json()

    def verdict(numbers: list[str], wanted: set[str]) -> dict:
        counts = Counter(numbers)
        return {"count": len(numbers), "expected": len(wanted),
                "duplicates": sum(c - 1 for c in counts.values() if c > 1),
                "missing": len(wanted - set(counts)), "unexpected": len(set(counts) - wanted)}
    # the sandbox's numbering (sandbox.moment.seed_*): customers from 100001, projects from
    # 1001, invoices from 10001
    customers = verdict([str(d["CustomerNumber"]) for d in docs("customers")],
                        {str(100001 + i) for i in range(args.customers)})
    projects = verdict([str(d["ProjectNumber"]) for d in docs("projects")],
                       {str(1001 + i) for i in range(args.projects)})
    vouchers = []
    for doc in docs("journalentries"):      # a voucher's invoice number: on its receivable line
        numbers = {str(ln["InvoiceNumber"]) for ln in doc.get("Lines") or doc.get("DraftLines") or []
                   if ln.get("InvoiceNumber")}
        vouchers.append(numbers.pop() if len(numbers) == 1 else f"?{doc.get('ID')}")
    invoices = verdict(vouchers, {str(10001 + i) for i in range(args.invoices)})
    result = {"customers": customers, "projects": projects, "vouchers": invoices}
    result["ok"] = all(v["count"] == v["expected"] and not (v["duplicates"] or v["missing"] or v["unexpected"])
                       for v in (customers, projects, invoices))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--projects", type=int, default=2_000)
    parser.add_argument("--invoices", type=int, default=5_000)
    parser.add_argument("--sb1-limit", type=float, default=50.0,
                        help="the SpareBank 1 sandbox's true limit, calls/s for the company")
    parser.add_argument("--moment-limit", type=float, default=25.0,
                        help="the Moment sandbox's true limit, calls/s for the company")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added to every API call")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (one per core)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="threads per worker process (default: the product's, MSB1_CONCURRENCY's default)")
    parser.add_argument("--page-size", type=int, default=200,
                        help="the backfill's --page-size (the command's default: 200)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one phase may take")
    args = parser.parse_args()
    if args.projects and not args.customers or args.invoices and not args.projects:
        parser.error("projects need customers, and the seeded invoices need projects")

    from worker.config.settings import Settings
    defaults = {"sb1_rate_limit": Settings.sb1_rate_limit, "sb1_host_rate_limit": Settings.sb1_host_rate_limit,
                "moment_rate_limit": Settings.moment_rate_limit}
    concurrency = args.concurrency or Settings.concurrency
    t0 = time.time()
    stack = Stack([{"moment_company": COMPANY, "moment_api_key": f"{COMPANY}-key",
                    "seed_customers": args.customers, "seed_projects": args.projects,
                    "seed_invoices": args.invoices, "data_types": list(DATA_TYPES)}], latency=args.latency)
    seeded_in = time.time() - t0
    print(f"sandbox seeded in {seeded_in:.1f}s; logs in {stack.tmp}", file=sys.stderr, flush=True)
    for name in RATE_LIMIT_VARS:        # the product's defaults, not the stack's
        stack.env.pop(name, None)
        os.environ.pop(name, None)
    company_key = stack.companies[0]["company_key"]
    try:
        for url, limit in ((stack.sb1_url, args.sb1_limit), (stack.moment_url, args.moment_limit)):
            requests.post(f"{url}/_sandbox/faults", json={"company_limit": limit}, timeout=10).raise_for_status()
        workers = [stack.start_worker(concurrency, f"worker{n}.log") for n in range(args.processes)]
        phases = {}
        started = time.time()
        for data_type, n in zip(DATA_TYPES, (args.customers, args.projects, args.invoices)):
            if n:
                print(f"backfill of {n} {data_type}", file=sys.stderr, flush=True)
                phases[data_type] = phase(stack, company_key, data_type, n, workers, args)
        total_seconds = time.time() - started
        books = check_books(stack, company_key, args)
        tokens = sandbox_calls(stack)["sb1"]["token_calls"]
    finally:
        stack.stop(keep_files=bool(os.environ.get("BENCH_KEEP")))
    rows = {dt: figures(p, args) for dt, p in phases.items()}
    total = {"records": sum(p["records"] for p in phases.values()),
             "in_books": sum(p["in_books"] for p in phases.values()),
             "seconds": total_seconds, "cpu_seconds": sum(p["cpu_seconds"] for p in phases.values()),
             "pages": sum(p["pages"] for p in phases.values()),
             "calls": {side: {k: sum(p["calls"][side][k] for p in phases.values()) for k in ("calls", "429")}
                       for side in ("sb1", "moment")}}
    rows["total"] = figures(total, args)

    print("\n| data type | records | time | records/s | SB1 calls/record | Moment calls/record | "
          "429s SB1 | 429s Moment | floor | time / floor | worker CPU/record |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, f in rows.items():
        print(f"| {name} | {f['records']:,} | {f['seconds']:.0f} s | {f['records_per_second']} | "
              f"{f['sb1_calls_per_record']:.2f} | {f['moment_calls_per_record']:.3f} | "
              f"{f['sb1_429']} ({f['sb1_429_share'] * 100:.1f} %) | {f['moment_429']} ({f['moment_429_share'] * 100:.1f} %) | "
              f"{f['floor_seconds']:.0f} s | {f['time_over_floor']:.2f} | {f['worker_cpu_ms_per_record']:.2f} ms |")
    print(f"\ntrue limits {args.sb1_limit:g} (SpareBank 1) and {args.moment_limit:g} (Moment) calls/s for the company; "
          f"the product's default limits ({defaults['sb1_rate_limit']:g}, {defaults['moment_rate_limit']:g}, "
          f"host {defaults['sb1_host_rate_limit']:g}); {args.processes} worker processes x {concurrency} threads; "
          f"{args.latency * 1000:.0f} ms per call; page size {args.page_size}; floor: one write per record / "
          f"the SpareBank 1 limit, or Moment's list pages / the Moment limit, the larger")
    print(f"books: {'right' if books['ok'] else 'WRONG'} "
          + "; ".join(f"{k} {v['count']}/{v['expected']}, {v['duplicates']} duplicates, {v['missing']} missing"
                      for k, v in books.items() if k != "ok"))
    result = {"benchmark": "onboarding", "customers": args.customers, "projects": args.projects,
              "invoices": args.invoices, "sb1_limit": args.sb1_limit, "moment_limit": args.moment_limit,
              "product_limits": defaults, "processes": args.processes, "concurrency": concurrency,
              "latency_ms": args.latency * 1000, "page_size": args.page_size,
              "seed_seconds": round(seeded_in, 1), "figures": rows, "sb1_token_calls": tokens,
              "calls_by_route": {dt: {side: p["calls"][side]["by_route"] for side in ("sb1", "moment")}
                                 for dt, p in phases.items()},
              "command_exit": {dt: p["command_exit"] for dt, p in phases.items()}, "books": books}
    print(json.dumps(result))
    if not books["ok"]:
        for dt, p in phases.items():
            print(f"backfill {dt} said: {p['command_output']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
