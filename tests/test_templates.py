"""The texts people read: every problem has Norwegian words, digests group, amounts read right."""
from decimal import Decimal

import pytest

from errors import AuthError, PermanentError, RecordInvalid, TransientError
from schemas.fields import FIELD_CODES
from schemas.text import kroner, label, plain, shown
from worker.notices import templates

SAMPLES = {
    "customer-number-missing": {}, "customer-number-not-digits": {"value": "'1A'"},
    "customer-number-range": {"value": "99"}, "name-missing": {"noun": "projects", "number": "1042"},
    "org-number-format": {"value": "'12 3'"}, "org-number-check": {"value": "923609017"},
    "kid-format": {"value": "'1'", "low": 2, "high": 25}, "kid-check": {"value": "12345675"},
    "project-number": {"value": "'P-1'", "why": "x"}, "project-customer-missing": {},
    "project-state": {"value": "'ON_HOLD'"}, "invoice-no-lines": {"number": 1},
    "invoice-product-type": {"number": 1, "types": "TRAVEL"}, "invoice-currency": {"number": 1, "currency": "EUR"},
    "invoice-amount": {"number": 1, "amount": Decimal("1e15")}, "currency-unknown": {"value": "'XXX'"},
    "moment-unreadable": {"noun": "customers", "fields": "id"}, "number-taken": {"noun": "customers", "number": 1},
    "number-shared": {"noun": "customers", "number": 100001, "this": {"number": "100001", "name": "A AS"},
                      "other": {"number": "100001", "name": "B AS"}},
    "dependency-missing": {"noun": "customers"},
    "lookups-missing": {"accounts": [(3000, "HOURS")], "vat_codes": ["99"]},
    "receivable-missing": {}, "vat-mismatch": {"number": 1, "checks": [("3", Decimal("200"), Decimal("240"))]},
    "credentials": {},
    **{code: {"status": 500} for code in ("document-fetch", "document-missing", "document-not-pdf",
                                          "document-not-stored", "document-attach")},   # tasks/documents.py
    **{code: {"field": "email", "char": "U+000A LINE FEED", "position": 3, "length": 300, "limit": 250}
       for code in FIELD_CODES},         # a field refused before it reaches the books (schemas/fields.py)
}


def test_every_problem_code_has_norwegian_words():
    assert set(SAMPLES) == set(templates.NB_PROBLEMS)
    for code, params in SAMPLES.items():
        what, todo = templates.problem("nb", RecordInvalid("x", code=code, params=params), "RecordInvalid", "x")
        assert what and todo and what != "x", code


@pytest.mark.parametrize("exc,kind,words", [
    (TransientError("t", service="SpareBank 1 Regnskap", params={"tries": 8}), "retries-exhausted",
     "SpareBank 1 Regnskap svarte ikke som den skulle på en stund (integrasjonen ga opp etter 8 forsøk)."),
    (AuthError("a", service="Moment"), "AuthError", "Moment avviste integrasjonens API-nøkkel."),
    (RecordInvalid("r", service="SpareBank 1 Regnskap", status=400), "RecordInvalid",
     "SpareBank 1 Regnskap avviste posten (HTTP 400)."),
    (PermanentError("p", service="Moment", status=409), "PermanentError",
     "Moment svarte med en feil som ikke går over av seg selv (HTTP 409)."),
    (ValueError("boom"), "unexpected", "En uventet feil i integrasjonen."),
])
def test_problems_without_a_code_are_named_by_their_kind(exc, kind, words):
    assert templates.problem("nb", exc, kind, "x")[0] == words


def test_english_uses_our_own_words_and_the_hint():
    exc = RecordInvalid("the customer has no name", hint="Change it in Moment.", code="name-missing")
    assert templates.problem("en", exc, "RecordInvalid", str(exc)) == ("the customer has no name",
                                                                       "Change it in Moment.")


def test_english_shows_a_refused_value_that_our_own_words_name_by_its_shape():
    exc = RecordInvalid("the customer number (23 characters: letters, '@' and '.') is not a number",
                        hint="Change it in Moment.", code="customer-number-not-digits",
                        params={"value": "'ola.nordmann@example.no'"})
    what, todo = templates.problem("en", exc, "RecordInvalid", str(exc))
    assert what.startswith("customer number 'ola.nordmann@example.no' is not a number (only the digits 0-9). ")
    assert todo == "Change it in Moment."
    outer = RecordInvalid(f"its customer could not be transferred first: {exc}", code="dependency",
                          params={"noun": "customers", "inner": exc}, hint="Correct the customer in Moment first.")
    what, _ = templates.problem("en", outer, "RecordInvalid", str(outer))
    assert what.startswith("its customer could not be transferred first: customer number 'ola.nordmann@example.no'")


def test_every_english_problem_with_a_value_has_words():
    assert set(templates.EN_PROBLEMS) <= set(SAMPLES)
    for code in templates.EN_PROBLEMS:
        what, _ = templates.problem("en", RecordInvalid("x", code=code, params=SAMPLES[code]), "RecordInvalid", "x")
        assert what and what != "x", code


def test_a_problem_of_a_record_it_depends_on_is_said_through_it():
    inner = RecordInvalid("x", code="customer-number-range", params={"value": "99"})
    outer = RecordInvalid("y", code="dependency", params={"noun": "customers", "inner": inner})
    what, todo = templates.problem("nb", outer, "RecordInvalid", "y")
    assert what == ("Kunden den hører til, måtte overføres først, men kunne ikke: Kundenummeret 99 er utenfor det "
                    "tillatte området 100000–199999.")
    assert templates.group_of(outer, "RecordInvalid") == "dependency/customer-number-range"


def test_digest_groups_by_problem_and_counts_the_rest():
    items = [{"group": "g1", "todo": "Gjør A.", "record": f"kunde K{i}", "what": "feil", "at": i} for i in range(250)]
    items += [{"group": "g2", "todo": "Gjør B.", "record": "kunde Z", "what": "annen feil", "at": 0}]
    body = templates.digest_body("nb", "acme", 15, items)
    assert "250 poster – hva du må gjøre: Gjør A." in body and "1 post – hva du må gjøre: Gjør B." in body
    assert body.count("  • ") == templates.DIGEST_LIMIT and "… og 51 til." in body
    assert templates.digest_subject("nb", 251) == "Moment → SpareBank 1 Regnskap: 251 poster ble ikke overført"


def test_a_digest_says_the_other_systems_own_words_as_the_single_email_does():
    items = [{"group": "g", "todo": "Rett posten.", "record": "kunde Per Hansen (kundenummer 100004)", "at": 0,
              "what": "SpareBank 1 Regnskap avviste posten (HTTP 400).", "service": "SpareBank 1 Regnskap",
              "detail": "E-postadressen per.hansen@example.no er allerede i bruk"},
             {"group": "g", "todo": "Rett posten.", "record": "kunde B", "what": "feil", "at": 1}]
    body = templates.digest_body("nb", "acme", 15, items)
    assert ("  • kunde Per Hansen (kundenummer 100004): SpareBank 1 Regnskap avviste posten (HTTP 400). SpareBank 1 "
            "Regnskap svarte: «E-postadressen per.hansen@example.no er allerede i bruk»\n") in body
    assert "  • kunde B: feil\n" in body


@pytest.mark.parametrize("amount,text", [(Decimal("12500"), "12 500,00 kr"), (Decimal("-0.5"), "-0,50 kr"),
                                         (Decimal("1234567.891"), "1 234 567,89 kr")])
def test_amounts_read_as_norwegians_write_them(amount, text):
    assert kroner(amount) == text


def test_values_from_moment_are_made_safe_to_show():
    assert shown("100001\r\nBcc: x") == "'100001\\r\\nBcc: x'"
    assert label("100001") == "100001" and label("1 2") == "'1 2'"
    assert plain("Fjord\u200bBygg\n\nAS  ") == "Fjord Bygg AS" and len(plain("x" * 10_000, 50)) == 50
    assert templates.failure_subject("nb", "customers", "100001\nBcc") .count("\n") == 0
