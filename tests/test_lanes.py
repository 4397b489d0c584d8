"""The bulk lane's refill against a real Redis: companies take turns, and a refill that
fails or dies half-way loses no record (the next refill publishes what it left)."""
from __future__ import annotations

import pytest
import redis

from worker.config.queues import BULK_QUEUE
from worker.store.keys import Keys
from worker.store.lanes import Lanes


class Publisher:
    """Stands in for publishing a bulk task; ``fail_after``: how many go out before the
    broker is gone."""

    def __init__(self, fail_after: int | None = None):
        self.sent: list[tuple[str, str, int]] = []
        self.fail_after = fail_after

    def __call__(self, company: str, data_type: str, record_id: int) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise redis.ConnectionError("Connection refused")
        self.sent.append((company, data_type, record_id))


@pytest.fixture
def lanes(r):
    return Lanes(r, Keys("msb1test"), target=40)


def test_companies_take_turns_a_chunk_at_a_time(lanes, r):
    lanes.add_bulk("a", "customers", range(1, 101))
    lanes.add_bulk("b", "customers", range(1001, 1011))
    publish = Publisher()
    assert lanes.refill(publish) == 40
    companies = [company for company, _, _ in publish.sent]
    assert companies[:32] == ["a"] * 16 + ["b"] * 10 + ["a"] * 6     # b's ten come after a's first chunk
    assert r.llen(lanes.handover) == 0


def test_a_refill_that_loses_redis_half_way_loses_no_record(lanes, r):
    lanes.add_bulk("a", "customers", range(1, 31))
    broken = Publisher(fail_after=5)               # the sixth publish finds Redis gone
    with pytest.raises(redis.ConnectionError):
        lanes.refill(broken)
    assert r.llen(lanes.handover) == 11            # the rest of the chunk it had taken
    again = Publisher()
    assert lanes.refill(again) == 25
    published = [rid for _, _, rid in broken.sent + again.sent]
    assert sorted(published) == list(range(1, 31))  # every record, each once
    assert r.llen(lanes.handover) == 0


def test_a_refill_that_died_after_taking_is_finished_by_the_next(lanes, r):
    lanes.add_bulk("a", "customers", range(1, 11))
    # a refill took a chunk (the script ran) and its process was killed before publishing
    lanes._take(keys=[lanes.rotation, lanes.handover], args=[16, "msb1test:bulk:"])
    assert r.llen("msb1test:bulk:a") == 0 and r.llen(lanes.handover) == 10
    # the queue is full enough, but what was taken is published all the same
    r.rpush(BULK_QUEUE, *["x"] * 40)
    publish = Publisher()
    assert lanes.refill(publish) == 10
    assert sorted(rid for _, _, rid in publish.sent) == list(range(1, 11))
    assert r.llen(lanes.handover) == 0
