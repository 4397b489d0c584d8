"""Benchmark: live changes during a big backfill (worker.store.lanes).

    .venv/bin/python -m bench.fairness                    # 10,000 customers, 20 ms per call
    .venv/bin/python -m bench.fairness --records 2000     # shorter

Company B's customers change at 5/s (a real change in the sandbox Moment, then its
webhook through the receiver), 100 changes; time to books runs from the receiver's 202 to
the first write in SpareBank 1 that carries the change. Measured in one run, on one stack
(2 worker processes × 32 threads taking live work first, then bulk, and one process × 8
threads taking live work only, `moment-sb1 worker --lanes live`; 20 ms added to every API
call):

1. B's changes alone;
2. company A1's backfill alone (bulk lane): records per second;
3. company A2's backfill (bulk lane) with B's changes at the same time;
4. company A4's backfill alone again: the speed alone is the mean of 2 and 4, one before
   and one after 3, so that the stack slowing as its stores fill up does not count
   against phase 3;
5. the baseline, as before the lanes: company A3's backfill queued like changes
   (``backfill --lane live``), with B's changes at the same time.

Each backfill has a company of its own, so each writes its records anew. Goals: B's p99
≤ 1 s during the backfill, the backfill at ≥ 90 % of its speed alone, worker peak RSS ≤ 300 MB.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from sandbox.stack import ROOT, Stack, peak_rss_mib, percentile, wait_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000, help="customers per backfill")
    parser.add_argument("--changes", type=int, default=100, help="B's live changes per phase")
    parser.add_argument("--rate", type=float, default=5.0, help="B's changes per second")
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--live-workers", type=int, default=1,
                        help="worker processes beside the others that take live work only (moment-sb1 worker "
                             "--lanes live)")
    parser.add_argument("--live-concurrency", type=int, default=8)
    parser.add_argument("--skip-baseline", action="store_true", help="leave out phase 5 (it takes longest)")
    args = parser.parse_args()
    companies = [{"moment_company": name, "moment_api_key": f"{name}-key", "seed_customers": args.records}
                 for name in ("a1", "a2", "a3", "a4")]
    companies.append({"moment_company": "b", "moment_api_key": "b-key", "seed_customers": 100, "start_number": 190001})
    stack = Stack(companies, latency=args.latency)
    try:
        result = run(stack, args)
    finally:
        stack.stop(keep_files=bool(__import__("os").environ.get("BENCH_KEEP")))
        if __import__("os").environ.get("BENCH_KEEP"):
            print(f"logs kept in {stack.tmp}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    rows = [("B alone", None, result["b_alone"]), ("A1 backfill alone", result["a1_alone"], None),
            ("A2 backfill (bulk lane) + B", result["a2_with_b"], result["b_during_bulk"]),
            ("A4 backfill alone, again", result["a4_alone"], None)]
    if "a3_with_b" in result:
        rows.append(("baseline: A3 backfill queued as live + B", result["a3_with_b"], result["b_during_live_backfill"]))
    print("\n| phase | backfill records/s | B to books p50 | B to books p99 | B max | B lost |\n|---|---|---|---|---|---|")
    for name, fill, b in rows:
        print(f"| {name} | {fill['per_second'] if fill else '–'} | " +
              (f"{b['p50_ms']:.0f} ms | {b['p99_ms']:.0f} ms | {b['max_ms']:.0f} ms | {b['lost']} |" if b else "– | – | – | – |"))
    print(f"\nbackfill with B at {result['backfill_with_b_share'] * 100:.0f} % of its speed alone (the mean of A1 and A4); "
          f"worker peak RSS {result['worker_peak_rss_mib']} MiB")


def run(stack: Stack, args) -> dict:
    from worker.config.settings import Settings
    from worker.intake.producer import enqueue
    from worker.runtime import Runtime
    rt = Runtime(Settings.from_env())
    workers = [stack.start_worker(args.concurrency, f"worker{n}.log")
               for n in range(args.processes)]
    workers += [stack.start_worker(args.live_concurrency, f"live{n}.log", queues="moment-sb1")
                for n in range(args.live_workers)]
    receiver = stack.start_receiver()
    b_key = next(c["company_key"] for c in stack.companies if c["moment_company"] == "b")
    b_ids = [c["id"] for c in rt.moment(rt.integration("b")).list("customers")]
    for rid in b_ids:                                  # B's customers are in the books first
        enqueue("b", "customers", rid, runtime=rt)
    wait_for(lambda: rt.state.count("b", "customers") >= len(b_ids), 120, "B's customers")
    requests.post(f"{stack.sb1_url}/_sandbox/write-log", json={"enabled": True, "company_key": b_key},
                  timeout=10).raise_for_status()
    hook = f"{receiver}/webhooks/b/{stack.webhook_secret('b')}"
    moment = f"{stack.moment_url}/api/1.0/companies/b/customers"
    counter = iter(range(10 ** 9))

    def b_changes() -> dict:
        """B's changes at the rate; each one's time from the 202 to the books."""
        accepted: dict[str, float] = {}
        local = threading.local()

        def event(i: int) -> None:
            session = getattr(local, "s", None) or requests.Session()
            local.s = session
            rid = b_ids[i % len(b_ids)]
            marker = f"https://b{next(counter)}.example.no"
            session.patch(f"{moment}/{rid}", auth=("apikey", "b-key"), json={"website": marker},
                          timeout=10).raise_for_status()
            resp = session.post(hook, json={"event": "UPDATE", "customer": {"id": rid}}, timeout=10)
            if resp.status_code == 202:
                accepted[marker] = time.time()
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            for i in range(args.changes):
                pause = start + i / args.rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                pool.submit(event, i)
        return accepted

    def b_result(accepted: dict[str, float], wait: float) -> dict:
        deadline = time.time() + wait
        while True:
            seen: dict[str, float] = {}
            for w in requests.get(f"{stack.sb1_url}/_sandbox/write-log", timeout=60).json():
                url = w["doc"].get("WebUrl")
                if url in accepted and url not in seen:
                    seen[url] = w["t"]
            if len(seen) == len(accepted) or time.time() > deadline:
                break
            time.sleep(1)
        delays = [(seen[m] - accepted[m]) * 1000 for m in accepted if m in seen]
        return {"changes": len(accepted), "lost": len(accepted) - len(seen),
                "p50_ms": percentile(delays, 50), "p99_ms": percentile(delays, 99), "max_ms": max(delays)}

    def backfill(company: str, lane: str, with_b: bool) -> tuple[dict, dict | None]:
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "backfill", company, "--lane", lane,
                                 "--page-size", "500"], cwd=ROOT, env=stack.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        accepted = b_changes() if with_b else None
        wait_for(lambda: rt.state.count(company, "customers") >= args.records, 1800, f"{company}'s backfill",
                 interval=0.2)
        # until its last record was written: B's changes (20 s) may outlast a short backfill
        synced = [json.loads(v)["synced_at"] for v in rt.redis.hvals(rt.keys.state(company, "customers"))]
        elapsed = max(synced) - t0
        proc.wait(60)
        fill = {"records": args.records, "seconds": round(elapsed, 1), "per_second": round(args.records / elapsed, 1)}
        return fill, (b_result(accepted, 300) if accepted is not None else None)

    result: dict = {"latency_ms": args.latency * 1000,
                    "workers": f"{args.processes} x {args.concurrency} threads (all lanes) + "
                               f"{args.live_workers} x {args.live_concurrency} threads (live only)"}
    print("phase 1: B alone", file=sys.stderr, flush=True)
    result["b_alone"] = b_result(b_changes(), 60)
    print("phase 2: A1's backfill alone", file=sys.stderr, flush=True)
    result["a1_alone"], _ = backfill("a1", "bulk", with_b=False)
    print("phase 3: A2's backfill with B", file=sys.stderr, flush=True)
    result["a2_with_b"], result["b_during_bulk"] = backfill("a2", "bulk", with_b=True)
    print("phase 4: A4's backfill alone", file=sys.stderr, flush=True)
    result["a4_alone"], _ = backfill("a4", "bulk", with_b=False)
    alone = (result["a1_alone"]["per_second"] + result["a4_alone"]["per_second"]) / 2
    result["backfill_with_b_share"] = round(result["a2_with_b"]["per_second"] / alone, 3)
    if not args.skip_baseline:
        print("phase 5: baseline, A3's backfill queued as live, with B", file=sys.stderr, flush=True)
        result["a3_with_b"], result["b_during_live_backfill"] = backfill("a3", "live", with_b=True)
    result["worker_peak_rss_mib"] = round(max(peak_rss_mib(w.pid) for w in workers), 1)
    return result


if __name__ == "__main__":
    main()
