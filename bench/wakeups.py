"""Benchmark: the CPU of one call, made back to back and made after the thread slept.

A worker thread sleeps while each API call is on the wire (20 ms in the customer
benchmark) and wakes for the answer. This measures, in one thread against the sandbox with
no added latency, what the same call costs in CPU both ways:

    .venv/bin/python -m bench.wakeups                 # 300 calls of each kind, 20 ms asleep

On the machines this was built on, a call after a sleep cost about three times the CPU of
the same call back to back (caches gone cold, the processor woken): a large part of the
worker's CPU per record comes from how often its threads wait, not from what they do.
"""
from __future__ import annotations

import argparse
import json
import time

from sandbox.stack import Stack


def cpu_per_call(call, count: int, pause: float) -> float:
    """Microseconds of this process's CPU per call; ``pause``: seconds asleep before each."""
    spent = 0.0
    for n in range(count):
        if pause:
            time.sleep(pause)
        started = time.process_time()
        call(n)
        spent += time.process_time() - started
    return spent / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--pause", type=float, default=0.02, help="seconds asleep before each call")
    args = parser.parse_args()
    stack = Stack([{"moment_company": "bench", "moment_api_key": "bench-key", "seed_customers": 50}], latency=0)
    try:
        from worker.config.settings import Settings
        from worker.runtime import Runtime
        rt = Runtime(Settings.from_env())
        integration = rt.integration("bench")
        moment, sb1 = rt.moment(integration), rt.sb1(integration)
        ids = [rec["id"] for rec in moment.list("customers")]
        sb1.tokens.token()
        kinds = {
            "moment_get": lambda n: moment.get("customers", ids[n % len(ids)]),
            "sb1_find": lambda n: sb1.find_by("customers", "CustomerNumber", 100000 + n % 50),
            "redis_get": lambda n: rt.redis.get("msb1bench:wakeups"),
        }
        result = {}
        for name, call in kinds.items():
            call(0)                                            # connections open before measuring
            result[name] = {"back_to_back_us": round(cpu_per_call(call, args.calls, 0)),
                            "after_sleep_us": round(cpu_per_call(call, args.calls, args.pause))}
            result[name]["ratio"] = round(result[name]["after_sleep_us"] / result[name]["back_to_back_us"], 2)
    finally:
        stack.stop()
    print(json.dumps({"calls": args.calls, "pause_s": args.pause, "cpu_per_call": result}, indent=2))


if __name__ == "__main__":
    main()
