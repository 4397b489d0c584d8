"""A worker's metrics endpoint (its figures name every integration) listens on this machine
only unless configured: ``MSB1_METRICS_HOST``, 127.0.0.1 by default. What the kernel says
each socket listens on is read from /proc/net/tcp."""
from __future__ import annotations

import pytest
import requests
from conftest import free_port, wait_until

from sandbox.local import listening_on

pytestmark = pytest.mark.slow


def scrape(port: int) -> str:
    answer = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    answer.raise_for_status()
    return answer.text


@pytest.mark.parametrize("host,expected", [(None, {"127.0.0.1"}), ("0.0.0.0", {"0.0.0.0"})])
def test_the_worker_metrics_listen_on_this_machine_unless_configured(start_worker, host, expected):
    port = free_port()
    overrides = {"MSB1_METRICS_PORT": port, **({"MSB1_METRICS_HOST": host} if host else {})}
    start_worker(**overrides)
    wait_until(lambda: listening_on(port), 30, message="the metrics endpoint")
    assert listening_on(port) == expected
    assert 'msb1_dead_letters{integration="acme"}' in scrape(port)
