"""Local stand-ins for Moment and SpareBank 1 Regnskap, for tests, the demo and the benchmark.

``sandbox.server.Sandbox`` starts both on free ports; ``sandbox.server.run_sandbox`` runs
them in the foreground. ``faults`` injects latency and errors; ``moment`` and ``sb1`` are the
two apps with their in-memory stores.
"""
