"""The demo (scripts/demo) runs from start to end and shows what it promises."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def test_the_demo_runs_to_the_end():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSB1_")}
    out = subprocess.run([sys.executable, "-m", "sandbox.demo"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "booked by SpareBank 1 Regnskap (VAT split out onto each code's account):" in text
    assert "    2700            -11718.75  mva 3" in text and "balance 0.00" in text
    assert "Subject: Moment → SpareBank 1 Regnskap: Kunde ABC-12 ble ikke overført" in text   # Norwegian
    assert text.rstrip().endswith("Done: 7 customers, 1 project, 1 voucher in the books; 1 email; 0 dead letters.")
