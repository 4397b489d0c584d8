"""Benchmark: the shared rate limit under the product's default settings (issue 25, items 1
and 4). Every mode starts its own stack; the workers run with the product's defaults (no
MSB1_*_RATE_LIMIT in their environment).

    .venv/bin/python -m bench.burst                     # a burst: 50 changes/s for 60 s, one company
    .venv/bin/python -m bench.burst --mode limit        # a 1,200-customer backfill, a true limit of 30/s
    .venv/bin/python -m bench.burst --mode random       # the backfill without faults, then with 5 % random 429s

``burst``: the company's customers are in the books first; then changes at ``--rate`` a
second, each a change in the sandbox Moment (the website becomes a marker unique to the
change) and its webhook; ``--repeat`` of the changes (60 %) are of a record changed among
the last ``--recent`` changes (repeats, some within a second), the others of any record. The
sandbox does not limit. Reported: the time from the receiver's 202 to the first write in
the books carrying the change (or a later change of the same record), p50/p99/max, and the
calls each change cost at each service (every call, at the sandbox).

``limit``: the sandbox limits the company at ``--limit`` calls a second on each side (a token
bucket holding a second's calls; above it a 429 with ``Retry-After: 1``), and ``moment-sb1
backfill`` brings ``--customers`` customers to the books. Reported: SpareBank 1's accepted
calls a second against the limit, and the share of its calls answered 429, over the whole
backfill (the start-up included); Moment's too.

``random``: the same backfill without a limit, once without faults and once (a new stack)
with ``--noise`` of every call answered 429 at random (``Retry-After: 1``). Reported:
records a second of each, and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from sandbox.stack import ROOT, Stack, percentile, wait_for

COMPANY = "burst"
RATE_LIMIT_VARS = ("MSB1_SB1_RATE_LIMIT", "MSB1_SB1_HOST_RATE_LIMIT", "MSB1_MOMENT_RATE_LIMIT")


def new_stack(customers: int, latency: float, limits_off: bool = False) -> Stack:
    stack = Stack([{"moment_company": COMPANY, "moment_api_key": "burst-key", "seed_customers": customers}],
                  latency=latency)
    for name in RATE_LIMIT_VARS:                # the product's defaults, whatever the stack was given
        stack.env.pop(name, None)
        os.environ.pop(name, None)
        if limits_off:                          # or none at all, to compare
            stack.env[name] = os.environ[name] = "0"
    return stack


def faults(stack: Stack, **settings) -> list[dict]:
    """Set (or, without settings, read) both sandboxes' faults."""
    out = []
    for url in (stack.sb1_url, stack.moment_url):
        if settings:
            resp = requests.post(f"{url}/_sandbox/faults", json=settings, timeout=10)
        else:
            resp = requests.get(f"{url}/_sandbox/faults", timeout=10)
        resp.raise_for_status()
        out.append(resp.json())
    return out


def counted(stack: Stack) -> dict:
    """Calls each sandbox answered for the company (not a fault) and answered 429, so far."""
    sb1, moment = faults(stack)
    key = stack.companies[0]["company_key"]
    return {"sb1": (sb1["passed"].get(key, 0), sb1["limited"].get(key, 0)),
            "moment": (moment["passed"].get(COMPANY, 0), moment["limited"].get(COMPANY, 0))}


def books(stack: Stack) -> int:
    state = requests.get(f"{stack.sb1_url}/_sandbox/state", timeout=30).json()
    return state["companies"].get(stack.companies[0]["company_key"], {}).get("customers", 0)


def backfill(stack: Stack, args) -> dict:
    """``moment-sb1 backfill`` of the company's customers, until the books hold them all."""
    workers = [stack.start_worker(args.concurrency, f"worker{i}.log") for i in range(args.processes)]
    before, started = counted(stack), time.time()
    with open(stack.tmp / "backfill.log", "wb") as log:
        cli = subprocess.Popen([sys.executable, "-m", "worker.cli", "backfill", COMPANY, "--data-type", "customers",
                                "--wait"], cwd=ROOT, env=stack.env, stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: books(stack) >= args.customers, args.timeout, "every customer in the books", interval=0.1)
    elapsed = time.time() - started
    after = counted(stack)
    try:
        cli.wait(60)
    except subprocess.TimeoutExpired:
        cli.kill()
    out = {"customers": args.customers, "seconds": round(elapsed, 1),
           "records_per_second": round(args.customers / elapsed, 1), "workers": len(workers)}
    for side in ("sb1", "moment"):
        ok, limited = (a - b for a, b in zip(after[side], before[side]))
        out[side] = {"accepted": ok, "answered_429": limited,
                     "accepted_per_second": round(ok / elapsed, 1),
                     "share_429": round(limited / max(1, ok + limited), 4)}
    return out


def limit_mode(args) -> dict:
    stack = new_stack(args.customers, args.latency)
    try:
        faults(stack, company_limit=args.limit)
        result = backfill(stack, args)
    finally:
        stack.stop()
    result["limit"] = args.limit
    result["sb1"]["share_of_limit"] = round(result["sb1"]["accepted_per_second"] / args.limit, 3)
    return result


def random_mode(args) -> dict:
    runs = {}
    for name, noise in (("clean", 0.0), ("noisy", args.noise)):
        stack = new_stack(args.customers, args.latency)
        try:
            if noise:
                faults(stack, rate_limit_rate=noise)
            runs[name] = backfill(stack, args)
        finally:
            stack.stop()
    runs["noise"] = args.noise
    runs["throughput_ratio"] = round(runs["noisy"]["records_per_second"] / runs["clean"]["records_per_second"], 3)
    return runs


def picks(args, ids: list[int]) -> list[int]:
    """Which record each change changes: ``repeat`` of them one of the last ``recent`` changed."""
    rng, out = random.Random(args.seed), []
    for _ in range(int(args.rate * args.seconds)):
        recent = out[-args.recent:]
        out.append(rng.choice(recent) if recent and rng.random() < args.repeat else rng.choice(ids))
    return out


def burst_mode(args) -> dict:
    stack = new_stack(args.customers, args.latency, args.limits_off)
    try:
        return burst(stack, args)
    finally:
        stack.stop()


def burst(stack: Stack, args) -> dict:
    from worker.config.settings import Settings
    from worker.intake.producer import enqueue
    from worker.runtime import Runtime
    rt = Runtime(Settings.from_env())
    ids = [c["id"] for c in rt.moment(rt.integration(COMPANY)).list("customers")]
    for i in range(args.processes):
        stack.start_worker(args.concurrency, f"worker{i}.log")
    for rid in ids:                                    # the customers are in the books first
        enqueue(COMPANY, "customers", rid, runtime=rt)
    wait_for(lambda: rt.state.count(COMPANY, "customers") >= len(ids), 300, "the initial sync")
    receiver = stack.start_receiver()
    hook_url = f"{receiver}/webhooks/{COMPANY}/{stack.webhook_secret(COMPANY)}"
    moment = f"{stack.moment_url}/api/1.0/companies/{COMPANY}/customers"
    requests.post(f"{stack.sb1_url}/_sandbox/write-log", json={"enabled": True}, timeout=10).raise_for_status()
    chosen = picks(args, ids)
    last: dict[int, int] = {}
    again_within_1s = 0
    for i, rid in enumerate(chosen):
        again_within_1s += rid in last and (i - last[rid]) / args.rate < 1.0
        last[rid] = i
    accepted: dict[str, float] = {}
    order: dict[str, tuple[int, int]] = {}            # marker -> (record, its place among that record's changes)
    lock, record_locks, changes_of = threading.Lock(), {}, {}
    local = threading.local()
    wall0 = time.time() - time.perf_counter()
    before = counted(stack)

    def change(i: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        rid, marker = chosen[i], f"https://b{i}.example.no"
        with lock:
            record_lock = record_locks.setdefault(rid, threading.Lock())
        with record_lock:                              # the order Moment holds the record's changes in
            session.patch(f"{moment}/{rid}", auth=("apikey", "burst-key"), json={"website": marker},
                          timeout=10).raise_for_status()
            with lock:
                changes_of[rid] = changes_of.get(rid, 0) + 1
                order[marker] = (rid, changes_of[rid])
        resp = session.post(hook_url, json={"event": "UPDATE", "customer": {"id": rid}}, timeout=10)
        if resp.status_code == 202:
            accepted[marker] = wall0 + time.perf_counter()

    start = time.perf_counter() + 0.5
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = []
        for i in range(len(chosen)):
            pause = start + i / args.rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            futures.append(pool.submit(change, i))
        for f in futures:
            f.result()
    sent_for = time.perf_counter() - start

    def first_writes() -> dict[str, float]:
        waiting: dict[int, list[tuple[int, str]]] = {}
        for marker, (rid, place) in order.items():
            if marker in accepted:
                waiting.setdefault(rid, []).append((place, marker))
        seen: dict[str, float] = {}
        log = requests.get(f"{stack.sb1_url}/_sandbox/write-log", timeout=30).json()
        for w in sorted(log, key=lambda w: w["t"]):
            if w["doc"].get("WebUrl") in order:
                rid, place = order[w["doc"]["WebUrl"]]
                for p, marker in waiting.get(rid, []):
                    if p <= place and marker not in seen:
                        seen[marker] = w["t"]
        return seen

    deadline, seen = time.time() + 60, first_writes()
    while len(seen) < len(accepted) and time.time() < deadline:
        time.sleep(1)
        seen = first_writes()
    after = counted(stack)
    delays = [seen[m] - accepted[m] for m in accepted if m in seen]
    calls = {side: {"accepted": after[side][0] - before[side][0], "answered_429": after[side][1] - before[side][1]}
             for side in ("sb1", "moment")}
    return {"changes": len(chosen), "accepted": len(accepted), "lost": len(accepted) - len(seen),
            "rate_per_s": round(len(chosen) / sent_for, 1), "repeats_of_recent": args.repeat,
            "changes_again_within_1s": again_within_1s,
            "change_to_books_ms": {"p50": round(percentile(delays, 50) * 1000), "p99": round(percentile(delays, 99) * 1000),
                                   "max": round(max(delays) * 1000)},
            # the product's calls: Moment's count less the benchmark's own change of the record
            "calls_per_change": {side: round((c["accepted"] - (len(chosen) if side == "moment" else 0))
                                             / len(chosen), 3) for side, c in calls.items()},
            "calls": calls, "latency_ms": args.latency * 1000,
            "workers": f"{args.processes} x {args.concurrency} threads",
            "rate_limits": "off" if args.limits_off else "the product's defaults"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("burst", "limit", "random"), default="burst")
    parser.add_argument("--rate", type=float, default=50.0, help="burst: changes per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="burst: for how long")
    parser.add_argument("--repeat", type=float, default=0.6, help="burst: the share of changes of a recent record")
    parser.add_argument("--recent", type=int, default=20, help="burst: how many of the last changes are recent")
    parser.add_argument("--customers", type=int, default=None,
                        help="the company's customers (burst: 600; limit and random: 1,200)")
    parser.add_argument("--limit", type=float, default=30.0, help="limit: the sandbox's calls/s per company")
    parser.add_argument("--noise", type=float, default=0.05, help="random: the share of calls answered 429")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added to every API call")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="threads per worker process (default: the product's, MSB1_CONCURRENCY)")
    parser.add_argument("--limits-off", action="store_true", help="burst: no rate limits at all (to compare)")
    parser.add_argument("--timeout", type=float, default=600.0, help="backfills: the longest wait")
    args = parser.parse_args()
    if args.concurrency is None:
        from worker.config.settings import Settings
        args.concurrency = Settings.concurrency
    if args.customers is None:
        args.customers = 600 if args.mode == "burst" else 1200
    result = {"burst": burst_mode, "limit": limit_mode, "random": random_mode}[args.mode](args)
    result["mode"] = args.mode
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
