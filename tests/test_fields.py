"""The text fields we send, checked before the books see them (schemas/fields.py): a table of
hostile and harmless values, the error each refusal raises, and the company's words for it."""
from __future__ import annotations

import pytest

from errors import RecordInvalid
from schemas.base import camel
from schemas.datatypes import CUSTOMERS, PROJECTS
from schemas.fields import (
    CUSTOMER_TEXTS,
    EMAIL,
    FIELD_CODES,
    FIELD_NAMES,
    INVOICE_TEXTS,
    TEXT_MAX_LENGTH,
    WEBSITE,
    Text,
    text_problem,
    website_problem,
)
from schemas.moment import MOMENT_CUSTOMER, MOMENT_INVOICE, MOMENT_PROJECT
from schemas.vouchers import check_invoice, voucher_text
from worker.notices import templates

NAME, MAIL, SITE = Text("name", "name"), Text("email", "email", EMAIL), Text("website", "website", WEBSITE)


def code_of(value: str, spec: Text = NAME) -> str | None:
    problem = text_problem(value, spec)
    return problem.code if problem else None


@pytest.mark.parametrize("value", [
    "Fjord Bygg AS", "Blåbær & Søn ANS", "ÆØÅ æøå Ærlig Øl Å", "Café Lumière",
    "Cafe\u0301 (a combining accent)", "Zoë Ørsted-Müller", "Ελληνικά ΑΕ", "株式会社テスト", "مؤسسة",
    "Non\u00a0breaking space", "O'Brien, Smith & Co. (Norge) – avd. 2/3", "Emoji ☕ AS", "😀" * 125,
    "x" * TEXT_MAX_LENGTH, "<b>Not HTML</b> & \"quotes\"",
])
def test_text_a_person_types_is_fine(value):
    assert code_of(value) is None


@pytest.mark.parametrize("value,code", [
    ("A\x00B", "field-control-character"), ("A\tB", "field-control-character"),
    ("A\nB", "field-control-character"), ("A\rB", "field-control-character"),
    ("x@y.no\r\nBcc: evil@attacker.example", "field-control-character"),
    ("A\x1b[31mB", "field-control-character"), ("A\x7fB", "field-control-character"),
    ("A\x85B", "field-control-character"), ("A\x0bB", "field-control-character"),
    ("A\u2028B", "field-control-character"), ("A\u2029B", "field-control-character"),
    ("Fjord\u202eSA ggyB", "field-format-character"), ("A\u202aB", "field-format-character"),
    ("A\u202dB", "field-format-character"), ("A\u2066B\u2069", "field-format-character"),
    ("A\u2067B", "field-format-character"), ("A\u200eB", "field-format-character"),
    ("A\u200fB", "field-format-character"), ("A\u061cB", "field-format-character"),
    ("A\u200bB", "field-format-character"), ("A\u200dB", "field-format-character"),
    ("\ufeffFjord", "field-format-character"), ("A\u2060B", "field-format-character"),
    ("A\u00adB", "field-format-character"), ("A\U000e0041B", "field-format-character"),
    ("A\ud800B", "field-invalid-character"), ("A\udfffB", "field-invalid-character"),
    ("A\ue000B", "field-invalid-character"), ("A\U000f0000B", "field-invalid-character"),
    ("A\U0010fffdB", "field-invalid-character"), ("A\uffffB", "field-invalid-character"),
    ("A\u0378B", "field-invalid-character"),
    ("\u3164", "field-format-character"), ("A\u115fB", "field-format-character"),     # Hangul fillers: blank
    ("A\u034fB", "field-format-character"), ("A\uffa0B", "field-format-character"),
    ("A\u17b4B", "field-format-character"), ("A\u180eB", "field-format-character"),
    ("A\x1fB", "field-control-character"), ("A\x0cB", "field-control-character"),
    ("x" * (TEXT_MAX_LENGTH + 1), "field-too-long"), ("N" * 10_000, "field-too-long"),
    ("😀" * 126, "field-too-long"),        # 252 UTF-16 code units, as the platform counts
])
def test_hostile_text_is_refused(value, code):
    assert code_of(value) == code


def test_a_refusal_names_the_character_and_where_it_is_not_the_value():
    problem = text_problem("Ola\u202eNordmann", NAME)
    assert (problem.facts["char"], problem.facts["position"], problem.facts["length"]) == (
        "U+202E RIGHT-TO-LEFT OVERRIDE", 4, 12)
    assert "Ola" not in problem.what and "Nordmann" not in problem.what
    assert text_problem("x\r", NAME).facts["char"] == "U+000D CARRIAGE RETURN"


@pytest.mark.parametrize("value", [
    "post@firma.no", "Ola.Nordmann+faktura@Firma.NO", "post@blåbær.no", "øyvind@firma.no",
    "post@xn--blbr-roah.no", "faktura@sub.domene.example.no", "a@b.co",
])
def test_email_addresses_that_are_fine(value):
    assert code_of(value, MAIL) is None


@pytest.mark.parametrize("value,code", [
    ("x@y.no\r\nBcc: evil@attacker.example", "field-control-character"),
    ("x@y.no\nBcc: evil@attacker.example", "field-control-character"),
    ("x@y.no%0d%0aBcc:evil@attacker.example", "email-invalid"),
    ("Ola Nordmann <ola@firma.no>", "email-invalid"), ("<ola@firma.no>", "email-invalid"),
    ("ola@firma.no, kari@firma.no", "email-invalid"), ("ola@firma.no;kari@firma.no", "email-invalid"),
    ("ola@firma.no kari@firma.no", "email-invalid"), (" ola@firma.no", "email-invalid"),
    ("ola@firma.no ", "email-invalid"), ("ola", "email-invalid"), ("ola@", "email-invalid"),
    ("@firma.no", "email-invalid"), ("ola@localhost", "email-invalid"), ("ola@[127.0.0.1]", "email-invalid"),
    ('"ola nordmann"@firma.no', "email-invalid"), ("ola..x@firma.no", "email-invalid"),
    ("ola@firma..no", "email-invalid"), ("ola@-firma.no", "email-invalid"),
    ("ola@firma.invalid", "email-invalid"), ("javascript:alert(1)//@firma.no", "email-invalid"),
    ("ola@fir\u202ema.no", "field-format-character"), ("ola@firma.no\x00", "field-control-character"),
    ("o" * 245 + "@firma.no", "field-too-long"), ("o" * 65 + "@firma.no", "email-invalid"),
])
def test_email_addresses_that_are_refused(value, code):
    assert code_of(value, MAIL) == code


@pytest.mark.parametrize("value", [
    "https://www.firma.no", "http://firma.no", "HTTPS://WWW.FIRMA.NO/Om-Oss", "https://firma.no:8443/a?b=1#c",
    "https://blåbær.no/søk", "https://xn--blbr-roah.no", "https://sub.domene.firma.no/path/@handle",
    "www.firma.no", "firma.no", "www.firma.no:8080/kontakt", "https://192.0.2.10/", "https://[2001:db8::1]/",
])
def test_websites_that_are_fine(value):
    assert website_problem(value) is None and code_of(value, SITE) is None


@pytest.mark.parametrize("value,code", [
    ("javascript:alert(1)", "website-scheme"), ("JAVASCRIPT:alert(1)", "website-scheme"),
    ("JavaScript:alert(1)", "website-scheme"), (" javascript:alert(1)", "website-scheme"),
    ("javascript://%0aalert(1)", "website-scheme"), ("vbscript:msgbox(1)", "website-scheme"),
    ("data:text/html;base64,PHNjcmlwdD4=", "website-scheme"), ("file:///etc/passwd", "website-scheme"),
    ("file://server/share", "website-scheme"), ("ftp://firma.no", "website-scheme"),
    ("mailto:post@firma.no", "website-scheme"), ("tel:+4722334455", "website-scheme"),
    ("https://user:pass@firma.no", "website-credentials"), ("https://user@firma.no", "website-credentials"),
    ("http://firma.no@evil.example", "website-credentials"), ("www.firma.no@evil.example", "website-credentials"),
    ("https:firma.no", "website-invalid"), ("https:/firma.no", "website-invalid"),
    ("//evil.example", "website-invalid"), ("https://", "website-invalid"), ("https://localhost", "website-invalid"),
    ("https://firma", "website-invalid"), ("https://fir ma.no", "website-invalid"),
    ("https://firma.no/<script>", "website-invalid"), ('https://firma.no/"onmouseover="x', "website-invalid"),
    ("https:\\\\evil.example", "website-invalid"), ("https://evil.example\\@firma.no", "website-invalid"),
    ("https://firma.no:99999", "website-invalid"), ("https://firma.no:abc", "website-invalid"),
    ("https://-firma.no", "website-invalid"), ("https://fir_ma.no", "website-invalid"),
    ("https://1.2.3", "website-invalid"), (" https://firma.no", "website-invalid"),
    ("jav&#x09;ascript:alert(1)", "website-invalid"), ("javascript:1", "website-invalid"),
    ("java\tscript:alert(1)", "field-control-character"), ("\x01javascript:alert(1)", "field-control-character"),
    ("https://firma.no\u202e", "field-format-character"),
    ("https://\u0430pple.com", "website-invalid"), ("www.fj\u03bfrd.no", "website-invalid"),   # look-alike letters
    ("j\u0430vascript:alert(1)", "website-invalid"), ("https:javascript:alert(1)", "website-invalid"), ("https://firma.no/" + "a" * 250, "field-too-long"),
])
def test_websites_that_are_refused(value, code):
    assert code_of(value, SITE) == code


def customer(**fields):
    return MOMENT_CUSTOMER.load({"id": 7, "name": "Fjord Bygg AS", "customerNumber": "100001", **fields})


def test_a_customer_is_refused_for_any_hostile_field_and_names_them_all():
    record = customer(website="javascript:alert(1)", email="x@y.no\r\nBcc: evil@attacker.example",
                      address={"addressLine1": "Storgata 1\x00", "city": "Oslo"})
    with pytest.raises(RecordInvalid) as caught:
        CUSTOMERS.check(record)
    err = caught.value
    assert err.code == "field-control-character"
    assert err.params["field"] == "email" and err.params["char"] == "U+000D CARRIAGE RETURN"
    assert err.params["also"] == [("website", None), ("address-line1", None)]
    assert err.fields == ["email", "website", "address-line1"]
    assert str(err) == ("the email field contains a control character (line breaks, tabs, NUL and the like): "
                        "U+000D CARRIAGE RETURN at character 7 of 34; also refused: website, address line 1")
    for part in ("evil", "attacker", "Bcc", "x@y.no", "javascript", "alert", "Storgata"):
        assert part not in str(err) and part not in repr(err)


@pytest.mark.parametrize("field,path", [(t.field, t.path) for t in CUSTOMER_TEXTS])
def test_every_customer_text_field_is_checked(field, path):
    top, _, sub = path.partition(".")
    hostile = {camel(top): {camel(sub): "a\u202eb"}} if sub else {camel(top): "a\u202eb"}
    record = customer(**{"countryCode": "SE", **hostile})   # not Norwegian: the org. number is free text
    with pytest.raises(RecordInvalid) as caught:
        CUSTOMERS.check(record)
    assert caught.value.params["field"] == field


def test_a_clean_customer_passes_and_blank_fields_are_not_checked():
    record = customer(email="post@firma.no", website="www.firma.no", phone="+47 22 33 44 55", fax="",
                      organizationNumber="923609016", currencyCode="NOK", countryCode="NO",
                      address={"addressLine1": "Storgata 1", "addressLine2": "  ", "postalCode": "0155",
                               "city": "Oslo", "countryCode": "NO"})
    assert CUSTOMERS.check(record) == 100001
    # the rule of the data type comes first: a wrong number is still said as such
    with pytest.raises(RecordInvalid) as caught:
        CUSTOMERS.check(customer(customerNumber="99", email="not an email"))
    assert caught.value.code == "customer-number-range"


def test_a_project_name_is_checked():
    project = MOMENT_PROJECT.load({"id": 3, "name": "Tilbygg\u2066 Lysaker", "projectNumber": "1042",
                                   "customer": {"id": 7}})
    with pytest.raises(RecordInvalid) as caught:
        PROJECTS.check(project)
    assert (caught.value.code, caught.value.params["field"]) == ("field-format-character", "name")
    assert PROJECTS.check(MOMENT_PROJECT.load({"id": 3, "name": "Tilbygg Lysaker", "projectNumber": "1042",
                                               "customer": {"id": 7}})) == "1042"


def invoice(**fields):
    return MOMENT_INVOICE.load({
        "id": 9, "invoiceNumber": 10001, "status": "FINALIZED", "invoiceDate": "2026-11-20",
        "customer": {"id": 7}, "description": "Kontorbygg Lysaker", "paymentId": "0000123456782",
        "lines": [{"itemText": "Timer", "amountExclVat": "100.00", "vatCode": "3", "productType": "HOURS"},
                  {"itemText": "Lisens", "amountExclVat": "10.00", "vatCode": "3", "productType": "PRODUCTS"}],
        **fields})


def test_invoice_texts_are_checked_and_the_line_is_named():
    check_invoice(invoice())
    check_invoice(invoice(description="D" * 1000))      # cut to the voucher's length, not refused
    lines = [{"itemText": "Timer", "amountExclVat": "1", "vatCode": "3", "productType": "HOURS"},
             {"itemText": "Lisens\u202e", "amountExclVat": "1", "vatCode": "3", "productType": "PRODUCTS"}]
    with pytest.raises(RecordInvalid) as caught:
        check_invoice(invoice(lines=lines))
    assert (caught.value.params["field"], caught.value.params["line"]) == ("line-text", 2)
    assert "the line text (line 2) field" in str(caught.value)
    # a finalized invoice over several lines is ordinary (and cannot be changed in Moment): its
    # line breaks and tabs are folded into spaces in the voucher, every other control refused
    check_invoice(invoice(description="Kontorbygg\r\nLysaker\tfase 2\u2028"))
    assert voucher_text(invoice(description="Kontorbygg\r\nLysaker")) == "Faktura 10001 – Kontorbygg Lysaker"
    for bad in ("Kontorbygg\x00Lysaker", "Kontorbygg\x1b[31m", "Kontorbygg\x0bLysaker"):
        with pytest.raises(RecordInvalid) as caught:
            check_invoice(invoice(description=bad))
        assert (caught.value.code, caught.value.params["field"]) == ("field-control-character", "description")
    with pytest.raises(RecordInvalid) as caught:
        check_invoice(invoice(paymentId="0000123\n456782"))     # a KID is one line
    assert "0000123" not in str(caught.value)
    assert {t.field for t in INVOICE_TEXTS} == {"description", "kid", "line-text"}


def test_every_field_has_a_name_in_both_languages_and_every_code_norwegian_words():
    assert all(nb and en for nb, en in FIELD_NAMES.values())
    assert {t.field for t in CUSTOMER_TEXTS + INVOICE_TEXTS} <= set(FIELD_NAMES)
    for code in FIELD_CODES:
        exc = RecordInvalid("x", code=code, params={"field": "email", "line": None, "char": "U+000A LINE FEED",
                                                    "position": 3, "length": 300, "limit": 250,
                                                    "also": [("website", None), ("line-text", 2)]})
        what, todo = templates.problem("nb", exc, "RecordInvalid", "x")
        assert "«e-post»" in what + todo and "Også «nettside» og «linjetekst (linje 2)» må rettes." in what, code
        assert "Moment" in todo, code


def test_a_malformed_address_is_named_by_its_shape_in_our_words():
    problem = text_problem("Ola Nordmann <ola@firma.no>", MAIL)
    assert problem.what.startswith("the email field is not one valid email address (27 characters: letters,")
    assert "Ola" not in problem.what and "firma" not in problem.what
    problem = text_problem("https://fir ma.no", SITE)
    assert problem.what.startswith("the website field is not a valid web address (17 characters: letters,")
    assert "fir" not in problem.what


def test_the_norwegian_email_says_what_to_do():
    record = customer(email="Ola <ola@firma.no>")
    with pytest.raises(RecordInvalid) as caught:
        CUSTOMERS.check(record)
    what, todo = templates.problem("nb", caught.value, "RecordInvalid", str(caught.value))
    assert what == "Feltet «e-post» er ikke én gyldig e-postadresse."
    assert todo.startswith("Rett e-postadressen i feltet «e-post» i Moment, og lagre.")
    what, _ = templates.problem("nb", RecordInvalid("x", code="field-control-character", params={
        "field": "name", "char": "U+000D CARRIAGE RETURN", "position": 4}), "RecordInvalid", "x")
    assert what.startswith("Feltet «navn» inneholder et kontrolltegn (linjeskift (CR), tegn nummer 4)")


def test_a_blank_looking_name_is_shown_escaped_and_its_shape_says_invisible():
    """A name of Hangul fillers reads as blank: the company's email shows it written out."""
    from schemas.text import shape, shown
    assert shown("\u3164\u3164") == "'\\u3164\\u3164'"
    assert shape("A\u115fB") == "3 characters: letters and an invisible character"


def test_a_look_alike_host_is_refused_in_its_xn_form_too():
    """"аpple.com" with a Cyrillic а is the same host as xn--pple-43d.com: refused both ways,
    while a Norwegian name in either form is fine."""
    assert website_problem("https://аpple.com/login") == "website-invalid"
    assert website_problem("https://xn--pple-43d.com/login") == "website-invalid"
    assert website_problem("https://www.bjørn.no") is None
    assert website_problem("https://www.xn--bjrn-ura.no") is None
