"""Loaded by every Python process started with this folder on PYTHONPATH (``bench.customers
--gc-time``): appends each garbage collection's generation and duration to the file named by
``BENCH_GC_LOG``. The collector holds the interpreter lock throughout, so the time is CPU the
process spent collecting."""
import os

if os.environ.get("BENCH_GC_LOG"):
    import gc
    import time

    _started: list[float] = [0.0]

    def _timed(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        took = time.perf_counter() - _started[0]
        with open(os.environ["BENCH_GC_LOG"], "a", encoding="utf-8") as f:
            f.write(f"{time.time():.6f} {os.getpid()} {info['generation']} {took:.6f}\n")

    gc.callbacks.append(_timed)
