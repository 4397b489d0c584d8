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


def _books(rows, *, ignore_filters=False, calls=None):
    """A query over ``rows`` that understands ``a eq x or ...`` and ``a ge x and a le y``, or
    (``ignore_filters``) answers the first ``top`` rows as the platform does for a filter it
    does not understand."""
    def query(route, filter=None, expand=None, top=None):
        calls.append(filter) if calls is not None else None
        if ignore_filters:
            return rows[:top]
        if " ge " in filter:
            low, high = (int(part.split()[-1]) for part in filter.split(" and "))
            hits = [r for r in rows if low <= r["N"] <= high]
        else:
            wanted = {unquote(term.split(" eq ")[1]) for term in filter.split(" or ")}
            hits = [r for r in rows if str(r["N"]) in wanted]
        return hits[:top]
    return query


def test_find_many_reads_close_numbers_in_one_call_and_says_what_it_cannot_know():
    from clients.filters import find_many
    rows = [{"ID": i, "N": 100000 + i} for i in range(1, 301) if i % 3] + [{"ID": 999, "N": 100002}]
    calls: list = []
    found = find_many(_books(rows, calls=calls), "customers", "N", list(range(100001, 100201)))
    assert len(calls) == 1 and " ge " in calls[0]
    assert found["100001"] == {"ID": 1, "N": 100001}
    assert found["100003"] is None                       # the books have none
    assert "100002" not in found                          # two records hold it: not known
    # scattered numbers: a few "or" filters; a filter the platform ignores: nothing is "none"
    calls.clear()
    found = find_many(_books(rows, calls=calls), "customers", "N", [100001, 150000, 190000, 100004])
    assert len(calls) == 1 and " or " in calls[0] and found["150000"] is None
    big = [{"ID": i, "N": i} for i in range(1, 2000)]
    found = find_many(_books(big, ignore_filters=True), "customers", "N", [5, 900, 1500, 3000])
    assert None not in found.values() and "3000" not in found
