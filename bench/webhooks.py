"""Benchmark: customer webhooks at a steady rate through the receiver, the queue and the
worker into the sandbox SpareBank 1, with latency on every API call.

    .venv/bin/python -m bench.webhooks                  # 50/s for 60 s, 20 ms per call
    .venv/bin/python -m bench.webhooks --slow-clients 200   # while 200 sockets trickle headers

For each event: a change in the sandbox Moment (the customer's website becomes a marker
unique to the event), then its webhook. Reported: the receiver's response time as the
sender sees it, and the time from the receiver's 202 to the first write in SpareBank 1
that carries the event's marker (p50, p99, max), and events lost.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from sandbox.stack import Stack, percentile, wait_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="webhooks per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--customers", type=int, default=600,
                        help="each event changes one of this many customers, picked at random (with repeats: "
                             "some change again within a second)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--slow-clients", type=int, default=0,
                        help="sockets that send a request's headers one byte a second throughout (slowloris)")
    args = parser.parse_args()

    company = {"moment_company": "hooks", "moment_api_key": "hooks-key", "seed_customers": args.customers}
    stack = Stack([company], latency=args.latency)
    try:
        result = run(stack, args)
    finally:
        stack.stop()
    print(json.dumps(result, indent=2))
    r, b = result["receiver_ms"], result["change_to_books_s"]
    print(f"\n| events | lost | receiver p50 | receiver p99 | to books p50 | to books p99 | to books max |\n"
          f"|---|---|---|---|---|---|---|\n"
          f"| {result['events']} at {result['achieved_rate_per_s']:g}/s | {result['lost']} | {r['p50']:.1f} ms | {r['p99']:.1f} ms | "
          f"{b['p50'] * 1000:.0f} ms | {b['p99'] * 1000:.0f} ms | {b['max'] * 1000:.0f} ms |")


def slow_client(url: str, stop: threading.Event) -> None:
    """A request whose headers never end, one byte a second, until ``stop``."""
    import socket
    from urllib.parse import urlsplit
    where = urlsplit(url)
    try:
        with socket.create_connection((where.hostname, where.port), timeout=5) as sock:
            sock.sendall(b"POST /webhooks/hooks/x HTTP/1.1\r\nHost: x\r\n")
            while not stop.wait(1.0):
                sock.sendall(b"X")
    except OSError:
        pass


def run(stack: Stack, args) -> dict:
    from worker.config.settings import Settings
    from worker.intake.producer import enqueue
    from worker.runtime import Runtime
    rt = Runtime(Settings.from_env())
    moment = f"{stack.moment_url}/api/1.0/companies/hooks/customers"
    auth = ("apikey", "hooks-key")
    ids = [c["id"] for c in rt.moment(rt.integration("hooks")).list("customers")]
    for _ in range(args.processes):
        stack.start_worker(args.concurrency, f"worker{_}.log")
    for rid in ids:                                   # the customers exist in the books first
        enqueue("hooks", "customers", rid, runtime=rt)
    wait_for(lambda: rt.state.count("hooks", "customers") >= len(ids), 300, "the initial sync")
    receiver_url = stack.start_receiver()
    hook_url = f"{receiver_url}/webhooks/hooks/{stack.webhook_secret('hooks')}"
    stop_slow = threading.Event()
    slow = [threading.Thread(target=slow_client, args=(receiver_url, stop_slow), daemon=True)
            for _ in range(args.slow_clients)]
    for t in slow:
        t.start()
    requests.post(f"{stack.sb1_url}/_sandbox/write-log", json={"enabled": True}, timeout=10).raise_for_status()

    n_events = int(args.rate * args.seconds)
    import random
    rng = random.Random(args.seed)
    picks = [rng.choice(ids) for _ in range(n_events)]
    last: dict[int, int] = {}
    repeats_within_1s = 0
    for i, rid in enumerate(picks):          # how often a record changes again within a second
        if rid in last and (i - last[rid]) / args.rate < 1.0:
            repeats_within_1s += 1
        last[rid] = i
    accepted: dict[str, float] = {}
    order: dict[str, tuple[int, int]] = {}          # marker → (record, its place among that record's changes)
    order_lock = threading.Lock()
    changes_of: dict[int, int] = {}
    record_locks: dict[int, threading.Lock] = {}
    receiver_ms: list[float] = []
    refused: list[int] = []
    local = threading.local()
    wall0 = time.time() - time.perf_counter()         # perf_counter → wall clock (sandbox stamps)

    def event(i: int) -> None:
        """One change in Moment, then its webhook (each event on a pool thread, so a slow
        Moment call never holds back the next event's schedule)."""
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        rid = picks[i]
        marker = f"https://e{i}.example.no"
        with order_lock:
            record_lock = record_locks.setdefault(rid, threading.Lock())
        with record_lock:                             # the order Moment holds the record's changes in
            session.patch(f"{moment}/{rid}", auth=auth, json={"website": marker}, timeout=10).raise_for_status()
            with order_lock:
                changes_of[rid] = changes_of.get(rid, 0) + 1
                order[marker] = (rid, changes_of[rid])
        t0 = time.perf_counter()
        resp = session.post(hook_url, json={"event": "UPDATE", "customer": {"id": rid}}, timeout=10)
        t1 = time.perf_counter()
        receiver_ms.append((t1 - t0) * 1000)
        if resp.status_code == 202:
            accepted[marker] = wall0 + t1
        else:
            refused.append(resp.status_code)

    start = time.perf_counter() + 0.5
    lag = 0.0
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = []
        for i in range(n_events):
            due = start + i / args.rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            lag = max(lag, -pause)
            futures.append(pool.submit(event, i))
        for f in futures:
            f.result()
    sent_for = time.perf_counter() - start
    stop_slow.set()

    def log() -> list[dict]:
        return requests.get(f"{stack.sb1_url}/_sandbox/write-log", timeout=30).json()

    def first_writes() -> dict[str, float]:
        """When each change reached the books: the first write of its record that carries
        it or a later change of the same record (a later change folds an earlier one in)."""
        waiting: dict[int, list[tuple[int, str]]] = {}
        for marker, (rid, place) in order.items():
            if marker in accepted:
                waiting.setdefault(rid, []).append((place, marker))
        seen: dict[str, float] = {}
        for w in sorted(log(), key=lambda w: w["t"]):
            url = w["doc"].get("WebUrl")
            if url not in order:
                continue
            rid, place = order[url]
            for p, marker in waiting.get(rid, []):
                if p <= place and marker not in seen:
                    seen[marker] = w["t"]
        return seen

    deadline = time.time() + 60
    seen = first_writes()
    while len(seen) < len(accepted) and time.time() < deadline:
        time.sleep(1)
        seen = first_writes()
    delays = [seen[m] - accepted[m] for m in accepted if m in seen]
    return {
        "events": n_events, "accepted": len(accepted), "refused": len(refused),
        "lost": len(accepted) - len(seen), "sent_for_seconds": round(sent_for, 2),
        "achieved_rate_per_s": round(n_events / sent_for, 1), "max_schedule_lag_ms": round(lag * 1000, 1),
        "receiver_ms": {"p50": percentile(receiver_ms, 50), "p99": percentile(receiver_ms, 99),
                        "max": max(receiver_ms)},
        "change_to_books_s": {"p50": percentile(delays, 50), "p99": percentile(delays, 99), "max": max(delays)},
        "latency_ms": args.latency * 1000, "workers": f"{args.processes} x {args.concurrency} threads",
        "slow_clients": args.slow_clients,
        "changes_again_within_1s": repeats_within_1s,
    }


if __name__ == "__main__":
    main()
