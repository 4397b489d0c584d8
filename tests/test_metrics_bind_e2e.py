"""A worker's metrics endpoint (its figures name every integration) listens on this machine
only unless configured: ``MSB1_METRICS_HOST``, 127.0.0.1 by default. What the kernel says
each socket listens on is read from /proc/net/tcp."""
from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest
import requests
from conftest import free_port, wait_until

pytestmark = pytest.mark.slow


def listening_on(port: int) -> set[str]:
    """The IPv4 addresses a socket listens on at ``port`` (LISTEN is state 0A)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(struct.pack("<I", int(address, 16))))
    return found


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
