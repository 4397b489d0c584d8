"""How steady is this machine? The same pure-CPU loop in one thread, counted per interval.

    .venv/bin/python -m bench.steadiness                 # 40 s, counted every 2 s

Every benchmark here is bound by the CPU, so before trusting a difference of 10 % between
two runs (or two phases of one run), look at how much the machine's own speed moves while
nothing else runs: the loop does the same work all the time, so any change in its count is
the machine (other guests on the host, the processor's clock), not the code. It also
prints the CPU time the kernel reports as stolen by the host meanwhile.
"""
from __future__ import annotations

import argparse
import json
import os
import time


def stolen_seconds() -> float:
    """The host's "steal" time of all CPUs so far, from /proc/stat (0 where there is none)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0
    except OSError:
        return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args()
    counts: list[int] = []
    steal_before, end = stolen_seconds(), time.monotonic() + args.seconds
    while time.monotonic() < end:
        start, n = time.monotonic(), 0
        while time.monotonic() - start < args.interval:
            for _ in range(10_000):
                pass
            n += 1
        counts.append(n)
    steal = stolen_seconds() - steal_before
    low, high = min(counts), max(counts)
    print(json.dumps({"interval_s": args.interval, "counts": counts, "stolen_s": round(steal, 2)}))
    print(f"\nloops per {args.interval:g} s: {low:,}–{high:,} (the slowest interval at {low / high * 100:.0f} % "
          f"of the fastest) over {len(counts) * args.interval:.0f} s; CPU time stolen by the host: {steal:.2f} s")


if __name__ == "__main__":
    main()
