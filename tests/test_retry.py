import random

import pytest

from clients.http import parse_retry_after, validation_messages
from clients.retry import RetryPolicy, is_retriable_status, jitter
from errors import AuthError, NotFound, PermanentError, RecordInvalid, TransientError


@pytest.mark.parametrize("status,retriable", [
    (400, False), (401, False), (403, False), (404, False), (409, False), (422, False),
    (408, True), (429, True), (500, True), (502, True), (503, True), (504, True), (599, True),
])
def test_retriable_statuses(status, retriable):
    assert is_retriable_status(status) is retriable


@pytest.mark.parametrize("error,retries_done,expected", [
    (TransientError("x"), 0, True),
    (TransientError("x"), 3, True),
    (TransientError("x"), 4, False),       # 5 tries made, max 5
    (PermanentError("x"), 0, False),
    (RecordInvalid("x"), 0, False),
    (AuthError("x"), 0, False),
    (NotFound("x"), 0, False),
    (ValueError("bug"), 0, False),
])
def test_should_retry(error, retries_done, expected):
    assert RetryPolicy(max_attempts=5).should_retry(error, retries_done) is expected


class FixedRandom(random.Random):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def random(self):
        return self.value


@pytest.mark.parametrize("retries_done,r,retry_after,expected", [
    (0, 0.0, None, 1.0),      # base 2 → equal jitter 1..2
    (0, 1.0, None, 2.0),
    (1, 0.0, None, 2.0),      # 4 → 2..4
    (3, 1.0, None, 16.0),
    (10, 1.0, None, 60.0),    # capped
    (10, 0.0, None, 30.0),    # jitter of the capped delay: 30..60
    (0, 0.0, 7.0, 7.0),       # Retry-After wins when longer
    (0, 0.0, 0.5, 1.0),       # ...never shortens the backoff
    (0, 0.0, 600.0, 60.0),    # ...and is capped below the visibility timeout
])
def test_delay(retries_done, r, retry_after, expected):
    policy = RetryPolicy(max_attempts=20, base_delay=2.0, max_delay=60.0)
    got = policy.delay(retries_done, retry_after, FixedRandom(r))
    assert got == pytest.approx(expected)


def test_jitter_stays_in_half_to_full():
    rand = random.Random(1)
    values = [jitter(10.0, rand) for _ in range(1000)]
    assert min(values) >= 5.0 and max(values) <= 10.0
    assert max(values) - min(values) > 4.0


@pytest.mark.parametrize("header,expected", [
    (None, None), ("", None), ("3", 3.0), ("0", 0.0), ("-4", 0.0), ("1.5", 1.5), ("soon", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),   # a date in the past: no wait
])
def test_parse_retry_after(header, expected):
    assert parse_retry_after(header) == expected


def test_validation_messages_nested_and_top_level():
    body = {"Customer": {"Info": {"_validationResults": {"Name": [
                {"Message": "Name is required", "PropertyName": "Name", "EntityType": "BusinessRelation"}]}}},
            "_validationResults": {"CustomerNumber": [
                {"Message": "Kundenummer må være mellom 100000 og 199999", "PropertyName": "CustomerNumber"}]},
            "Message": "Validation failed"}
    assert validation_messages(body) == [
        "Name: Name is required",
        "CustomerNumber: Kundenummer må være mellom 100000 og 199999",
        "Validation failed",
    ]
    assert validation_messages({"Messages": ["a", "b", "a"]}) == ["a", "b"]
    assert validation_messages(None) == []
