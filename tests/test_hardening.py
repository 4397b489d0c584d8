"""Small guards a review asked for: where a hostile value must get a clear refusal."""
from __future__ import annotations

import pytest

from clients.http import parse_retry_after
from worker.console.views import _local
from worker.intake.events import check_signature, sign


@pytest.mark.parametrize("target", ["/\t/evil.example", "/\n/evil.example", "//evil.example", "https://evil.example",
                                    "/\\evil.example", "\\\\evil.example", "evil.example", "/a b"])
def test_the_login_goes_back_only_to_a_path_of_this_site(target):
    assert _local(target) is None


def test_a_path_of_this_site_is_kept():
    assert _local("/company/acme?problems=1") == "/company/acme?problems=1"


def test_a_signature_with_a_digit_that_is_not_ascii_is_refused_not_a_crash():
    body = b'{"EntityID": 1}'
    good = sign("k" * 32, body, t=1_800_000_000)
    assert check_signature("k" * 32, good, body, now=1_800_000_000) is None
    assert check_signature("k" * 32, "t=\u00b2,v1=ab", body, now=1_800_000_000)          # "²"
    assert check_signature("k" * 32, good.replace("t=1", "t=\u0661", 1), body, now=1_800_000_000)  # Arabic-Indic one


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_a_retry_after_that_is_no_number_of_seconds_is_ignored(value):
    assert parse_retry_after(value) is None
