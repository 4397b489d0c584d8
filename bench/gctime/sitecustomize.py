"""Loaded by every Python process started with this folder on PYTHONPATH (``bench.customers
--gc-time``): appends each garbage collection's generation and duration to the file named by
``BENCH_GC_LOG``. The collector holds the interpreter lock throughout, so the time is CPU the
process spent collecting. The file is opened once and written a line at a time, so the
measuring costs about the same however often the collector runs."""
import os

if os.environ.get("BENCH_GC_LOG"):
    import gc
    import time

    _log = open(os.environ["BENCH_GC_LOG"], "a", buffering=1, encoding="utf-8")
    _started: list[float] = [0.0]

    def _timed(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        took = time.perf_counter() - _started[0]
        _log.write(f"{time.time():.6f} {os.getpid()} {info['generation']} {took:.6f}\n")

    gc.callbacks.append(_timed)
