"""Benchmark: sync customers through the real worker against the sandbox with latency on
every API call, and in the same run a naive baseline (one record at a time, no queue).

    .venv/bin/python -m bench.customers               # 2,000 records, 20 ms per call
    .venv/bin/python -m bench.customers --records 500 --concurrency 32
    .venv/bin/python -m bench.customers --rate 100     # a steady 100 records/s, not all at once
    .venv/bin/python -m bench.customers --gc-time      # + the workers' time in the garbage collector
    .venv/bin/python -m bench.customers --floor        # + Celery's own CPU per task (bench/floor.py)
    .venv/bin/python -m bench.customers --gc-time --no-gc-freeze   # the workers without gc.freeze()

Prints records/s, p50/p99 time per record, the worker's peak memory (VmHWM), its CPU and
thread switches per record, and the Redis commands per record.

To look inside a worker while it runs (``{pid}``: the first worker process, ``{sandbox}``:
the sandbox's):

    BENCH_PROFILE=/tmp/profile.txt BENCH_PROFILE_SECONDS=8 ...    # py-spy --gil, raw stacks
    BENCH_ATTACH="timeout -s INT 5 perf record -F 499 -p {pid} -o /tmp/perf.data" ...
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

from sandbox.stack import ROOT, Stack, context_switches, cpu_seconds, cpu_times, peak_rss_mib, percentile, wait_for


def baseline(stack: Stack, rt, count: int) -> dict:
    """The naive way: fetch, find, write, one record after the other, in one thread."""
    from schemas.moment import MOMENT_CUSTOMER
    from schemas.sb1 import CUSTOMER_EXPAND, check_customer, create_guid, customer_body, customer_fields
    integration = rt.integration("baseline")
    moment, sb1 = rt.moment(integration), rt.sb1(integration)
    ids = [rec["id"] for rec in moment.list("customers")][:count]
    sb1.tokens.token()
    times = []
    started = time.perf_counter()
    for rid in ids:
        t0 = time.perf_counter()
        customer = MOMENT_CUSTOMER.load(moment.get("customers", rid))
        wanted = customer_fields(customer, check_customer(customer))
        currency = sb1.find_by("currencycodes", "Code", wanted["currency_code"] or "NOK")
        existing = sb1.find_by("customers", "CustomerNumber", wanted["customer_number"], expand=CUSTOMER_EXPAND)
        body = customer_body(wanted, currency_id=currency["ID"], existing=existing,
                             guid=lambda part: create_guid("baseline", rid, part))
        if existing:
            sb1.update("customers", existing["ID"], body)
        else:
            sb1.create("customers", body)
        times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return {"records": len(ids), "seconds": elapsed, "per_second": len(ids) / elapsed,
            "p50_ms": percentile(times, 50) * 1000, "p99_ms": percentile(times, 99) * 1000}


def through_worker(stack: Stack, rt, count: int, concurrency: int, processes: int, rate: float = 0,
                   gc_time: bool = False, app: str = "worker.app") -> dict:
    from worker.intake.producer import enqueue
    integration = rt.integration("bench")
    ids = [rec["id"] for rec in rt.moment(integration).list("customers")][:count]
    gc_log = stack.tmp / "gc.log"
    if gc_time:         # bench/gctime/sitecustomize.py times each collection in the workers
        stack.env.update(PYTHONPATH=f"{ROOT / 'bench' / 'gctime'}:{stack.env['PYTHONPATH']}",
                         BENCH_GC_LOG=str(gc_log))
    procs = [stack.start_worker(concurrency, f"worker{n}.log", app=app) for n in range(processes)]
    sandbox_pid = stack.sandbox_proc.pid

    def usage() -> dict:
        """CPU seconds and thread switches so far (their differences make the figures)."""
        return {"worker": sum(cpu_seconds(p.pid) for p in procs), "sandbox": cpu_seconds(sandbox_pid),
                # of the worker's: in the kernel (system calls: sockets, locks, thread switches)
                "worker_system": sum(cpu_times(p.pid)[1] for p in procs),
                "switches": sum(context_switches(p.pid) for p in procs)}
    before = usage()
    if os.environ.get("BENCH_PROFILE"):
        subprocess.Popen(["py-spy", "record", "-p", str(procs[0].pid), "-o", os.environ["BENCH_PROFILE"],
                          "-f", "raw", "-d", os.environ.get("BENCH_PROFILE_SECONDS", "8"),
                          "-r", os.environ.get("BENCH_PROFILE_RATE", "200"), "--gil", "--nonblocking"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
    if os.environ.get("BENCH_ATTACH"):      # a command to run beside the first worker (see above)
        subprocess.Popen(os.environ["BENCH_ATTACH"].format(pid=procs[0].pid, sandbox=sandbox_pid), shell=True)
        time.sleep(0.5)
    stack.redis.config_resetstat()
    started = time.time()
    for n, rid in enumerate(ids):
        if rate:        # a steady flow instead of everything at once
            time.sleep(max(0.0, started + n / rate - time.time()))
        enqueue("bench", "customers", rid)
    queued = time.time() - started
    wait_for(lambda: rt.state.count("bench", "customers") >= len(ids), 600, "every record", interval=0.2)
    synced = [json.loads(v)["synced_at"] for v in rt.redis.hgetall(rt.keys.state("bench", "customers")).values()]
    elapsed = max(synced) - started
    commands = {name.removeprefix("cmdstat_"): row["calls"]
                for name, row in stack.redis.info("commandstats").items()}
    peak = sum(peak_rss_mib(p.pid) for p in procs)
    cpu = {name: value - before[name] for name, value in usage().items()}
    switches = cpu.pop("switches")
    for proc in procs:          # measured: they make way (for --floor's workers)
        stack.stop_process(proc)
    # each sync's own log line (JSON) says how long its fetch, map and write took
    lines = (json.loads(line) for n in range(processes)
             for line in (stack.tmp / f"worker{n}.log").read_text().splitlines() if line.startswith("{"))
    times = [e["seconds"] for e in lines if e.get("logger") == "worker.sync.task" and "seconds" in e]
    latencies = sorted(t - started for t in synced)
    extra = {}
    if gc_time:         # the collections during the run (not start-up's), per generation
        rows = [line.split() for line in gc_log.read_text().splitlines()]
        runs = [(int(gen), float(took)) for at, _pid, gen, took in rows if float(at) >= started]
        extra["worker_gc"] = {
            "ms_per_record": round(sum(t for _, t in runs) / len(ids) * 1000, 3),
            "share_of_worker_cpu": round(sum(t for _, t in runs) / cpu["worker"], 4),
            "collections_by_generation": {g: sum(1 for gen, _ in runs if gen == g) for g in (0, 1, 2)},
            "ms_by_generation": {g: round(sum(t for gen, t in runs if gen == g) * 1000, 1) for g in (0, 1, 2)}}
    return {**extra, "records": len(ids), "seconds": elapsed, "per_second": len(ids) / elapsed,
            "enqueue_seconds": queued, "concurrency": concurrency, "processes": processes,
            "p50_ms": percentile(times, 50) * 1000, "p99_ms": percentile(times, 99) * 1000,
            "enqueue_to_books_p50_s": percentile(latencies, 50),
            "enqueue_to_books_p99_s": percentile(latencies, 99),
            "peak_rss_mib_all_workers": peak, "tasks_logged": len(times),
            "cpu_seconds": cpu, "worker_cpu_ms_per_record": cpu["worker"] / len(ids) * 1000,
            # the workers' threads stopping and starting again, per record (see context_switches)
            "worker_thread_switches_per_record": round(switches / len(ids), 1),
            # every Redis command of the run, the producer's included, per record
            "redis_commands_per_record": round(sum(commands.values()) / len(ids), 1),
            "redis_commands": dict(sorted(commands.items(), key=lambda kv: -kv[1]))}


def celery_floor(stack: Stack, count: int, concurrency: int, processes: int, latency: float,
) -> dict:
    """Celery's own CPU per task (``bench.floor``): the same workers, tasks that do nothing of
    ours, once returning at once and once waiting as long as a sync's three API calls."""
    from bench.floor import noop, waits
    from worker.config.queues import LIVE_QUEUE
    procs = [stack.start_worker(concurrency, f"floor{n}.log", app="bench.floor")
             for n in range(processes)]
    r = stack.redis

    def empty() -> bool:        # nothing waiting in the queue, nothing handed out and not acked
        return r.llen(LIVE_QUEUE) == 0 and r.hlen("unacked") == 0       # kombu's unacked hash

    def drained() -> bool:      # and still so a moment later (a message just taken is in neither)
        if not empty():
            return False
        time.sleep(0.2)
        return empty()
    result = {}
    try:
        for name, send in (("noop", lambda: noop.delay()), ("waits", lambda: waits.delay(latency))):
            before = sum(cpu_seconds(p.pid) for p in procs)
            started = time.time()
            for _ in range(count):
                send()
            wait_for(drained, 600, f"the {name} tasks", interval=0.05)
            seconds = time.time() - started
            result[name] = {"tasks": count, "per_second": round(count / seconds, 1),
                            "cpu_ms_per_task": round((sum(cpu_seconds(p.pid) for p in procs) - before)
                                                     / count * 1000, 3)}
    finally:
        for proc in procs:
            stack.stop_process(proc)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--baseline-records", type=int, default=300,
                        help="the baseline is slow; its rate is measured on this many records")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added to every API call")
    parser.add_argument("--concurrency", type=int, default=32, help="threads per worker process")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (one per core)")
    parser.add_argument("--rate", type=float, default=0,
                        help="enqueue at this many records/s instead of all at once")
    parser.add_argument("--gc-time", action="store_true",
                        help="time every garbage collection in the workers (bench/gctime)")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="workers without the product's gc.freeze() after start-up (bench/nofreeze.py)")
    parser.add_argument("--floor", action="store_true",
                        help="after the run, Celery's own CPU per task with the same workers (bench/floor.py)")
    args = parser.parse_args()

    stack = Stack([{"moment_company": "bench", "moment_api_key": "bench-key", "seed_customers": args.records},
                   {"moment_company": "baseline", "moment_api_key": "baseline-key",
                    "seed_customers": args.baseline_records}], latency=args.latency)
    try:
        from worker.config.settings import Settings
        from worker.runtime import Runtime
        rt = Runtime(Settings.from_env())
        base = baseline(stack, rt, args.baseline_records)
        work = through_worker(stack, rt, args.records, args.concurrency, args.processes, args.rate,
                              args.gc_time, "bench.nofreeze" if args.no_gc_freeze else "worker.app")
        state = stack.sb1_state()
        if args.floor:
            work["celery_floor"] = celery_floor(stack, args.records, args.concurrency, args.processes,
                                                args.latency)
    finally:
        stack.stop()
    books = {c: v.get("customers") for c, v in state.get("companies", {}).items()}
    result = {"latency_ms": args.latency * 1000, "baseline": base, "worker": work,
              "speedup": work["per_second"] / base["per_second"], "customers_in_books": books}
    print(json.dumps(result, indent=2))
    print(f"\n| | records | records/s | p50 per record | p99 per record | peak memory |\n|---|---|---|---|---|---|\n"
          f"| naive loop | {base['records']} | {base['per_second']:.1f} | {base['p50_ms']:.0f} ms | {base['p99_ms']:.0f} ms | – |\n"
          f"| worker ({work['processes']} × {work['concurrency']} threads) | {work['records']} | {work['per_second']:.1f} | "
          f"{work['p50_ms']:.0f} ms | {work['p99_ms']:.0f} ms | {work['peak_rss_mib_all_workers']:.0f} MiB |\n"
          f"\nspeed-up {result['speedup']:.1f}x; latency {args.latency * 1000:.0f} ms per API call; "
          f"worker CPU {work['worker_cpu_ms_per_record']:.2f} ms per record")
    if "celery_floor" in work:
        from bench.floor import API_CALLS_PER_CUSTOMER
        floor = work["celery_floor"]
        print(f"Celery's floor, same workers: {floor['noop']['cpu_ms_per_task']:.2f} ms per no-op task, "
              f"{floor['waits']['cpu_ms_per_task']:.2f} ms per task waiting {API_CALLS_PER_CUSTOMER} × "
              f"{args.latency * 1000:.0f} ms")


if __name__ == "__main__":
    main()
