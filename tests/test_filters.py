"""Pure parts of the page-wise backfill: filters of many values, and "the books already say it"."""
from __future__ import annotations

from urllib.parse import quote_plus

from clients.filters import chunks, quote, unquote
from schemas.base import covers


def test_many_values_make_few_filters_each_within_the_budget():
    terms = [f"CustomerNumber eq {quote(100000 + i)}" for i in range(200)]
    parts = chunks(terms, 1600)
    assert [t for part in parts for t in part] == terms            # all, in order, once
    assert 3 <= len(parts) <= 5
    assert all(len(quote_plus(" or ".join(part))) <= 1600 for part in parts)
    assert chunks(["x" * 3000], 1600) == [["x" * 3000]]            # a long term still goes, alone


def test_a_quoted_text_reads_back_as_the_platform_gives_it():
    assert unquote(quote("O'Brien")) == "O'Brien" and unquote(quote(1042)) == "1042"


def test_covers_sees_what_a_put_would_change():
    books = {"ID": 7, "CustomerNumber": 100001, "OrgNumber": None, "WebUrl": "",
             "Info": {"ID": 3, "Name": "Fjord AS", "DefaultEmail": {"ID": 9, "EmailAddress": "a@b.no"}}}
    body = {"ID": 7, "CustomerNumber": 100001, "OrgNumber": "", "WebUrl": None,
            "Info": {"ID": 3, "Name": "Fjord AS", "DefaultEmail": {"ID": 9, "EmailAddress": "a@b.no"}}}
    assert covers(books, body)
    assert not covers(books, {**body, "Info": {**body["Info"], "Name": "Fjord Bygg AS"}})
    # a child deleted, a child created, a value cleared: all writes
    assert not covers(books, {**body, "Info": {**body["Info"], "DefaultEmail": {"ID": 9, "Deleted": True}}})
    assert not covers(books, {**body, "Info": {**body["Info"], "DefaultPhone": {"ID": 0, "_createguid": "g",
                                                                               "Number": "1"}}})
    assert not covers({**books, "OrgNumber": "912345678"}, body)
    # numbers by value, a list's children by ID
    assert covers({"Amount": 10, "Phones": [{"ID": 1, "Number": "9"}, {"ID": 2}]},
                  {"Amount": "10.00", "Phones": [{"ID": 1, "Number": "9"}]})
    assert not covers({"Phones": [{"ID": 2}]}, {"Phones": [{"ID": 1, "Number": "9"}]})
