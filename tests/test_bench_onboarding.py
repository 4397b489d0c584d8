"""The onboarding benchmark (bench/onboarding.py) at a tiny size, end to end: its own stack,
real workers, the backfill commands one data type after the other; every seeded record once
in the books, and the calls counted at the sandbox. No figure is asserted (they belong to
the benchmark), only that it measures what it says."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sandbox.stack import ROOT
from worker.config.settings import Settings

SIZES = {"customers": 30, "projects": 6, "invoices": 12}


@pytest.mark.slow
def test_onboarding_benchmark_books_every_seeded_record_once():
    out = subprocess.run(
        [sys.executable, "-m", "bench.onboarding", "--customers", "30", "--projects", "6", "--invoices", "12",
         "--processes", "1", "--concurrency", "8", "--latency", "0", "--timeout", "120"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "| total | 48 |" in out.stdout                                   # the markdown table
    result = json.loads(out.stdout.strip().splitlines()[-1])              # the JSON line
    assert result["books"]["ok"]
    assert [result["books"][k]["count"] for k in ("customers", "projects", "vouchers")] == [30, 6, 12]
    assert result["product_limits"] == {"sb1_rate_limit": Settings.sb1_rate_limit,
                                        "sb1_host_rate_limit": Settings.sb1_host_rate_limit,
                                        "moment_rate_limit": Settings.moment_rate_limit}
    figures = result["figures"]
    for data_type, n in SIZES.items():
        row, calls = figures[data_type], result["calls_by_route"][data_type]
        assert row["records"] == row["in_books"] == n
        write = "POST journalentries" if data_type == "invoices" else f"POST {data_type}"
        assert calls["sb1"][write] == n                 # one write per record, counted at the sandbox
        assert row["sb1_calls"] == sum(calls["sb1"].values()) + row["sb1_429"]
        assert row["moment_calls"] >= 1                 # at least the list page
        assert row["floor_seconds"] == round(n / result["sb1_limit"], 1)
    total = figures["total"]
    assert total["records"] == sum(SIZES.values())
    assert total["sb1_calls"] == sum(figures[dt]["sb1_calls"] for dt in SIZES)
