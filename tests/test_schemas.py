"""The mapping Moment customer → platform Customer, the rule check, and the swagger contract."""
import json
from pathlib import Path

import pytest

from errors import RecordInvalid
from schemas.moment import MOMENT_CUSTOMER
from schemas.sb1 import (
    PHONE_TYPE_FAX,
    PHONE_TYPE_PHONE,
    check_customer,
    create_guid,
    customer_body,
    customer_fields,
    fingerprint,
)

# The platform's Swagger definitions we use, kept in the repo (scripts/update-contract)
SWAGGER = Path(__file__).resolve().parents[1] / "contract" / "unieconomy-swagger.json"

MOMENT = {
    "id": 1000001, "name": "Fjordkraft Bygg AS", "customerNumber": "100001",
    "organizationNumber": "923609016", "email": "post@fjordbygg.no", "website": "https://fjordbygg.no",
    "phone": "+47 22 33 44 55", "fax": "+47 22 33 44 56", "currencyCode": "NOK", "countryCode": "NO",
    "address": {"addressLine1": "Storgata 1", "addressLine2": "2. etasje", "postalCode": "0155",
                "city": "Oslo", "countryCode": "NO"},
    "lastModifiedDate": "2026-11-25T10:00:00.000001+00:00", "someNewField": {"x": 1},
}


def guid(part):
    return create_guid("acme", "customers", 1000001, "v1", part)


def wanted(**changes):
    c = MOMENT_CUSTOMER.load({**MOMENT, **changes})
    return customer_fields(c, check_customer(c))


@pytest.mark.parametrize("number,ok", [
    ("100000", True), ("199999", True), ("150000", True),
    ("99999", False), ("200000", False), ("0", False), ("1000001", False),
    ("10001A", False), ("ABC123", False), ("", False), (" 12 ", False), ("-100001", False), ("1e5", False),
    ("１０００１２", False), ("١٠٠٠١٢", False), ("10001²", False), ("+100012", False),    # other digits, a sign
    ("100012\n", False), ("1000\n12", False), (" 100012", False), ("100012\u200b", False),  # hidden characters
    ("0100012", False), ("100 012", False), ("1" * 10000, False),
])
def test_customer_number_rule(number, ok):
    c = MOMENT_CUSTOMER.load({**MOMENT, "customerNumber": number})
    if ok:
        assert check_customer(c) == int(number)
    else:
        with pytest.raises(RecordInvalid) as err:
            check_customer(c)
        assert "between 100000 and 199999" in str(err.value)
        assert len(str(err.value)) < 300                       # a huge value is named by its length
        assert "\n" not in str(err.value) and "\u200b" not in str(err.value)
        if len(number.strip()) > 2:                              # never the value itself
            assert number.strip() not in str(err.value).split(". ")[0]


@pytest.mark.parametrize("number,shape,shown", [
    ("100012\n", "7 characters: digits and a line break", "'100012\\n'"),
    ("1000\u200b12", "7 characters: digits and an invisible character", "'1000\\u200b12'"),
    ("１０００１２", "6 characters: digits other than 0-9", "'１０００１２'"),
    ("ola.nordmann@example.no", "23 characters: letters, '@' and '.'", "'ola.nordmann@example.no'")])
def test_a_refused_number_is_named_by_its_shape_and_shown_only_to_the_company(number, shape, shown):
    with pytest.raises(RecordInvalid) as err:
        check_customer(MOMENT_CUSTOMER.load({**MOMENT, "customerNumber": number}))
    assert f"the customer number ({shape}) is not a number (only the digits 0-9)" in str(err.value)
    assert err.value.params["value"] == shown       # for the company's email (worker.notices.templates)


@pytest.mark.parametrize("org,country,error", [
    ("923609016", "NO", None), ("987654325", None, None), ("923609016", "", None),
    ("923609017", "NO", "the organization number (9 digits) has a wrong check digit (MOD11)"),
    ("923 609 016", "NO", "the organization number (11 characters: digits and spaces) must be nine digits"),
    ("01017012345", "NO", "the organization number (11 digits) must be nine digits"),   # a national id
    ("92360901", "NO", "must be nine digits"), ("９２３６０９０１６", "NO", "must be nine digits"),
    ("923609017", None, "wrong check digit"),                   # no country: Norwegian
    ("SE5560000001", "SE", None),                               # a Swedish number is not checked
])
def test_norwegian_organization_number_rule(org, country, error):
    c = MOMENT_CUSTOMER.load({**MOMENT, "organizationNumber": org, "countryCode": country,
                              "address": {**MOMENT["address"], "countryCode": country}})
    if error is None:
        assert check_customer(c) == 100001
    else:
        with pytest.raises(RecordInvalid, match=error.replace("(", r"\(").replace(")", r"\)")):
            check_customer(c)
        with pytest.raises(RecordInvalid) as err:
            check_customer(c)
        assert org not in str(err.value) and err.value.params["value"] in (org, f"'{org}'")


@pytest.mark.parametrize("kid,ok", [
    ("0000123456782", True),        # MOD10 (Luhn)
    ("1234567897", True), ("12345674", True), ("123456704", False), ("876543214", True),  # MOD11 only
    ("12345670-", True),            # MOD11 with check digit 10 written as '-'
    ("0000123456783", False), ("12345675", False), ("1", False), ("1" * 26, False),
    ("12345 678", False), ("１２３４５６７８", False), ("0000123456782\n", False), ("", True),
])
def test_kid_rule(kid, ok):
    from schemas.moment import MOMENT_INVOICE
    from schemas.vouchers import check_invoice
    inv = MOMENT_INVOICE.load({**INVOICE, "paymentId": kid})
    if ok:
        check_invoice(inv)
    else:
        with pytest.raises(RecordInvalid, match="KID") as err:
            check_invoice(inv)
        assert "the KID (" in str(err.value) and (len(kid) < 3 or kid.strip() not in str(err.value))


def test_numeric_customer_number_from_moment_is_accepted():
    c = MOMENT_CUSTOMER.load({**MOMENT, "customerNumber": 100042})
    assert check_customer(c) == 100042


def test_create_body_has_all_ten_fields():
    body = customer_body(wanted(), currency_id=11, existing=None, guid=guid)
    info = body["Info"]
    assert body["CustomerNumber"] == 100001
    assert body["OrgNumber"] == "923609016"
    assert body["WebUrl"] == "https://fjordbygg.no"
    assert body["CurrencyCodeID"] == 11
    assert body["_createguid"] == guid("")
    assert info["Name"] == "Fjordkraft Bygg AS"
    assert info["DefaultEmail"]["EmailAddress"] == "post@fjordbygg.no"
    assert info["DefaultPhone"] == {"ID": 0, "_createguid": guid("phone"), "Number": "+47 22 33 44 55",
                                    "Type": PHONE_TYPE_PHONE}
    assert info["Phones"] == [{"ID": 0, "_createguid": guid("fax"), "Number": "+47 22 33 44 56",
                               "Type": PHONE_TYPE_FAX}]
    assert info["InvoiceAddress"] == {"ID": 0, "_createguid": guid("invoice-address"),
                                      "AddressLine1": "Storgata 1", "AddressLine2": "2. etasje",
                                      "PostalCode": "0155", "City": "Oslo", "CountryCode": "NO"}


def test_update_body_keeps_child_ids_and_deletes_what_moment_cleared():
    existing = {"ID": 9, "BusinessRelationID": 3, "CustomerNumber": 100001,
                "Info": {"ID": 3, "DefaultEmail": {"ID": 4, "EmailAddress": "old@x.no"},
                         "DefaultPhone": {"ID": 5, "Number": "1", "Type": PHONE_TYPE_PHONE},
                         "InvoiceAddress": {"ID": 6, "City": "Bergen"},
                         "Phones": [{"ID": 5, "Type": PHONE_TYPE_PHONE}, {"ID": 7, "Type": PHONE_TYPE_FAX}]}}
    body = customer_body(wanted(fax=None), currency_id=11, existing=existing, guid=guid)
    info = body["Info"]
    assert body["ID"] == 9 and info["ID"] == 3
    assert "_createguid" not in body and body["CurrencyCodeID"] == 11
    assert info["DefaultEmail"] == {"ID": 4, "EmailAddress": "post@fjordbygg.no"}
    assert info["DefaultPhone"]["ID"] == 5
    assert info["InvoiceAddress"]["ID"] == 6 and info["InvoiceAddress"]["City"] == "Oslo"
    assert info["Phones"] == [{"ID": 7, "Deleted": True}]


EXISTING = {"ID": 9, "BusinessRelationID": 3, "CustomerNumber": 100001,
            "Info": {"ID": 3, "DefaultEmail": {"ID": 4}, "DefaultPhone": {"ID": 5, "Type": PHONE_TYPE_PHONE},
                     "InvoiceAddress": {"ID": 6}, "Phones": [{"ID": 5, "Type": PHONE_TYPE_PHONE},
                                                             {"ID": 7, "Type": PHONE_TYPE_FAX}]}}


@pytest.mark.parametrize("cleared,expect", [
    ({"organizationNumber": None}, lambda b: b["OrgNumber"] is None),
    ({"organizationNumber": ""}, lambda b: b["OrgNumber"] is None),
    ({"website": "  "}, lambda b: b["WebUrl"] is None),                      # blank is empty
    ({"email": ""}, lambda b: b["Info"]["DefaultEmail"] == {"ID": 4, "Deleted": True}),
    ({"phone": None}, lambda b: b["Info"]["DefaultPhone"] == {"ID": 5, "Deleted": True}),
    ({"fax": ""}, lambda b: b["Info"]["Phones"] == [{"ID": 7, "Deleted": True}]),
    ({"address": {**MOMENT["address"], "addressLine2": ""}},
     lambda b: b["Info"]["InvoiceAddress"]["AddressLine2"] is None and b["Info"]["InvoiceAddress"]["City"] == "Oslo"),
    ({"address": {**MOMENT["address"], "postalCode": None, "city": None}},
     lambda b: (b["Info"]["InvoiceAddress"]["PostalCode"], b["Info"]["InvoiceAddress"]["City"]) == (None, None)),
    ({"address": None, "countryCode": None}, lambda b: b["Info"]["InvoiceAddress"] == {"ID": 6, "Deleted": True}),
])
def test_a_value_cleared_in_moment_is_cleared_in_the_body(cleared, expect):
    body = customer_body(wanted(**cleared), currency_id=11, existing=EXISTING, guid=guid)
    assert expect(body), body


def test_no_currency_in_moment_means_the_companys_own():
    from schemas.sb1 import DEFAULT_CURRENCY
    assert wanted(currencyCode="")["currency_code"] == DEFAULT_CURRENCY == "NOK"


def test_fingerprint_changes_only_with_the_data():
    key = b"k" * 32
    assert fingerprint(wanted(), key) == fingerprint(wanted(someNewField=2, lastModifiedDate="2027-01-01T00:00:00+00:00"),
                                                     key)
    assert fingerprint(wanted(), key) != fingerprint(wanted(email="ny@fjordbygg.no"), key)
    assert fingerprint(wanted(), key) != fingerprint(wanted(address={**MOMENT["address"], "city": "Bergen"}), key)
    assert fingerprint(wanted(), key) != fingerprint(wanted(), b"j" * 32)


def test_create_guid_is_deterministic_and_distinct():
    assert guid("") == guid("")
    assert len({guid(""), guid("fax"), create_guid("fjord", "customers", 1000001, "v1", "")}) == 3


def _keys(node, definition, definitions, path="Customer"):
    """Every key we send, checked against the swagger definition it belongs to."""
    nested = {"Info": "BusinessRelation", "DefaultEmail": "Email", "DefaultPhone": "Phone",
              "InvoiceAddress": "Address", "Phones": "Phone"}
    props = definitions[definition]["properties"]
    for key, value in node.items():
        assert key in props, f"{path}.{key} is not a field of {definition} in the swagger"
        if isinstance(value, dict):
            _keys(value, nested[key], definitions, f"{path}.{key}")
        elif isinstance(value, list):
            for item in value:
                _keys(item, nested[key], definitions, f"{path}.{key}[]")


def test_every_field_we_send_exists_in_the_swagger():
    definitions = json.loads(SWAGGER.read_text())["definitions"]
    existing = {"ID": 9, "Info": {"ID": 3, "DefaultEmail": {"ID": 4}, "Phones": [{"ID": 7, "Type": PHONE_TYPE_FAX}]}}
    for body in (customer_body(wanted(), currency_id=11, existing=None, guid=guid),
                 customer_body(wanted(fax=None), currency_id=11, existing=existing, guid=guid)):
        _keys(body, "Customer", definitions)


def test_moment_schema_names_missing_fields():
    from marshmallow import ValidationError
    with pytest.raises(ValidationError) as err:
        MOMENT_CUSTOMER.load({"id": 1})
    assert set(err.value.messages) == {"name", "customerNumber"}


PROJECT = {"id": 7, "name": "Kontorbygg", "projectNumber": "1042", "projectState": "ACTIVE",
           "customer": {"id": 1000001, "customerNumber": "100001"}, "startDate": "2026-09-01",
           "endDate": None, "lastModifiedDate": "2026-11-25T10:00:00+00:00", "budget": 1}


@pytest.mark.parametrize("number,state,error", [
    ("1042", "ACTIVE", None), ("1", "PLANNED", None), ("7", "COMPLETED", None), ("9", "CANCELLED", None),
    ("007", "ACTIVE", "starts with 0"), ("1042\n", "ACTIVE", "other characters"), ("１０４２", "ACTIVE", "other characters"),
    ("-1042", "ACTIVE", "other characters"), ("1" * 19, "ACTIVE", "is too long"),
    ("P-1042", "ACTIVE", "contains other characters than digits"), ("10 42", "ACTIVE", "other characters"),
    ("", "ACTIVE", "is empty"), ("١٢", "ACTIVE", "other characters"),     # Arabic-Indic digits
    ("Kari Nordmann", "ACTIVE", r"the project number \(13 characters: letters and a space\) contains other"),
    ("1042", "ON_HOLD", r"the project state \(7 characters: letters and '_'\) is not one the integration knows"),
])
def test_project_rules(number, state, error):
    from schemas.moment import MOMENT_PROJECT
    from schemas.sb1 import check_project
    p = MOMENT_PROJECT.load({**PROJECT, "projectNumber": number, "projectState": state})
    if error is None:
        assert check_project(p) == number
    else:
        with pytest.raises(RecordInvalid, match=error) as err:
            check_project(p)
        refused = state if "state" in error else number
        assert not refused or refused not in str(err.value)      # named by its shape, never as it is


def test_every_project_field_we_send_exists_in_the_swagger():
    from schemas.moment import MOMENT_PROJECT
    from schemas.sb1 import PROJECT_STATUS, check_project, project_body, project_fields
    props = json.loads(SWAGGER.read_text())["definitions"]["Project"]["properties"]
    p = MOMENT_PROJECT.load(PROJECT)
    wanted = project_fields(p, check_project(p))
    for existing in (None, {"ID": 5}):
        body = project_body(wanted, customer_id=12, existing=existing, guid=guid)
        assert set(body) <= set(props), set(body) - set(props)
        assert body["EndDate"] is None                          # no end date: cleared in the books
    assert body == {"ID": 5, "ProjectNumber": "1042", "ProjectNumberNumeric": 1042, "Name": "Kontorbygg",
                    "ProjectCustomerID": 12, "StartDate": "2026-09-01", "EndDate": None,
                    "StatusCode": PROJECT_STATUS["ACTIVE"]}


INVOICE = {"id": 9, "invoiceNumber": 1001, "status": "FINALIZED", "invoiceDate": "2026-11-20",
           "dueDate": "2026-12-04", "paymentId": "0000123456782", "description": "Kontorbygg",
           "customer": {"id": 5, "customerNumber": "100001"}, "project": {"id": 7, "projectNumber": "1042"},
           "lines": [{"itemText": "Timer", "quantity": "2", "amountExclVat": "1000.00", "vatCode": "3",
                      "productType": "HOURS"}]}
VAT = {"0": (1, "0"), "3": (2, "25"), "31": (3, "15"), "33": (4, "12"), "5": (5, "0"), "6": (6, "0")}


def voucher(lines, **invoice):
    from decimal import Decimal

    from schemas.moment import MOMENT_INVOICE
    from schemas.vouchers import VatRate, check_invoice, voucher_body
    inv = MOMENT_INVOICE.load({**INVOICE, **invoice, "lines": lines})
    check_invoice(inv)
    return voucher_body(inv, receivable_id=100, revenue_ids={"HOURS": 30, "EXPENSES": 31, "PRODUCTS": 32},
                        vat={k: VatRate(i, Decimal(p)) for k, (i, p) in VAT.items()}, project_id=70, guid="g")


def line(amount, code="3", kind="HOURS", text="x", **more):
    return {"itemText": text, "quantity": "1", "amountExclVat": amount, "vatCode": code, "productType": kind, **more}


def booked_vat(draft_lines):
    """What the platform books as VAT from our draft lines, per VAT type ID (its rounding)."""
    from decimal import Decimal

    from schemas.vouchers import platform_vat
    out = {}
    rates = {i: Decimal(p) for i, p in VAT.values()}
    for ln in draft_lines:
        if ln.get("VatTypeID"):
            rate = rates[ln["VatTypeID"]]
            out[ln["VatTypeID"]] = out.get(ln["VatTypeID"], Decimal(0)) + platform_vat(ln["Amount"], rate)
    return out


@pytest.mark.parametrize("lines,debit,credits", [
    ([line("1000.00")], "1250.00", [(30, 2, "-1250.00")]),
    ([line("0.01", "3")], "0.01", [(30, 2, "-0.01")]),                  # 0.0025 VAT rounds to 0.00
    ([line("0.02", "3")], "0.03", [(30, 2, "-0.03")]),                  # 0.005 rounds half up
    ([line("99.99", "31"), line("0.01", "31")], "115.00", [(30, 3, "-115.00")]),  # one line per account and code
    ([line("100", "33"), line("100", "6")], "212.00", [(30, 4, "-112.00"), (30, 6, "-100.00")]),
    ([line("-500.00"), line("-80.00", "31", "PRODUCTS")], "-717.00", [(30, 2, "625.00"), (32, 3, "92.00")]),
    ([line("100"), line("200", kind="PRODUCTS"), line("0.00", "33")], "375.00",     # a 0,00 line books nothing
     [(30, 2, "-125.00"), (32, 2, "-250.00")]),
])
def test_voucher_is_gross_credits_with_vat_types_and_no_vat_lines(lines, debit, credits):
    from decimal import Decimal
    body = voucher(lines).body
    drafts = body["DraftLines"]
    assert all(isinstance(ln["Amount"], Decimal) and ln["Amount"] == ln["Amount"].quantize(Decimal("0.01"))
               for ln in drafts)                                    # never a float on the wire
    assert sum(ln["Amount"] for ln in drafts) == 0
    assert drafts[0]["Amount"] == Decimal(debit) and drafts[0]["AccountID"] == 100
    assert "VatTypeID" not in drafts[0]
    assert [(ln["AccountID"], ln["VatTypeID"], ln["Amount"]) for ln in drafts[1:]] == [
        (a, v, Decimal(x)) for a, v, x in credits]
    assert all(ln["Dimensions"] == {"ProjectID": 70} for ln in drafts)


def test_debit_carries_invoice_number_kid_and_due_date_and_readable_text():
    drafts = voucher([line("1000.00", text="Konsulenttimer")]).body["DraftLines"]
    assert (drafts[0]["InvoiceNumber"], drafts[0]["PaymentID"], drafts[0]["DueDate"]) == (
        "1001", "0000123456782", "2026-12-04")
    assert drafts[0]["Description"] == "Faktura 1001 – Kontorbygg"
    assert drafts[1]["Description"] == "Faktura 1001 – Konsulenttimer"
    assert "PaymentID" not in voucher([line("1")], paymentId="").body["DraftLines"][0]
    credit = voucher([line("-10")], description=" Retur  av\u00a0 varer ").body
    assert credit["Description"] == "Kreditnota 1001 – Retur av varer"        # spaces folded (a control
    # character is refused before: tests/test_fields.py)


def test_many_random_invoices_balance_and_the_platforms_vat_is_moments_within_an_ore_a_line():
    import random
    from decimal import Decimal
    rand = random.Random(7)
    ids = {code: i for code, (i, _) in VAT.items()}
    for _ in range(300):
        lines = [line(f"{rand.randint(-99999, 999999) / 100:.2f}", rand.choice(list(VAT)),
                      rand.choice(["HOURS", "EXPENSES", "PRODUCTS"])) for _ in range(rand.randint(1, 8))]
        v = voucher(lines)
        drafts = v.body["DraftLines"]
        assert sum(ln["Amount"] for ln in drafts) == 0
        net = sum(Decimal(ln["amountExclVat"]) for ln in lines)
        assert drafts[0]["Amount"] == v.gross == net + sum(c.moment for c in v.vat)
        booked = booked_vat(drafts)
        for check in v.vat:
            assert check.acceptable
            assert booked.get(ids[check.code], Decimal(0)) == -check.platform     # credits: negative


def test_moments_own_vat_amount_is_used_and_a_large_difference_is_caught():
    from decimal import Decimal
    v = voucher([line("100.00", vatAmount="25.00"), line("100.00", kind="PRODUCTS", vatAmount="25.00")])
    assert v.gross == Decimal("250.00") and all(c.acceptable for c in v.vat)
    off = voucher([line("1000.00", vatAmount="200.00")])
    [check] = off.vat
    assert (check.moment, check.platform, check.acceptable) == (Decimal("200.00"), Decimal("240.00"), False)


def test_an_amount_the_platform_cannot_hold_is_refused():
    with pytest.raises(RecordInvalid, match="larger than SpareBank 1 Regnskap can hold"):
        voucher([line("100000000000000.00")])


@pytest.mark.parametrize("change,error", [
    ({"lines": []}, "has no lines"),
    ({"lines": [line("1", kind="TRAVEL")]}, "unknown product type (6 characters: letters)"),
    ({"currencyCode": "Kari"}, "is in currency (4 characters: letters), which SpareBank 1 Regnskap does not know"),
    ({"currencyCode": "eur"}, "is in currency (3 characters: letters), which SpareBank 1 Regnskap does not know"),
    ({"invoiceNumber": 15058500027, "lines": []}, "the invoice has no lines"),   # a number that may be a person's
])
def test_invoice_rules(change, error):
    from schemas.moment import MOMENT_INVOICE
    from schemas.vouchers import check_invoice
    with pytest.raises(RecordInvalid) as err:
        check_invoice(MOMENT_INVOICE.load({**INVOICE, **change}))
    assert error in str(err.value)


def test_every_voucher_field_we_send_exists_in_the_swagger():
    definitions = json.loads(SWAGGER.read_text())["definitions"]
    body = voucher([line("100"), line("50", "31", "PRODUCTS")]).body
    assert set(body) <= set(definitions["JournalEntry"]["properties"])
    for ln in body["DraftLines"]:
        assert set(ln) <= set(definitions["JournalEntryLineDraft"]["properties"]), set(ln)
        assert set(ln["Dimensions"]) <= set(definitions["Dimensions"]["properties"])


@pytest.mark.parametrize("field,value", [("amountExclVat", "1e999999"), ("amountExclVat", "-1E+999999"),
                                         ("quantity", "1e20"), ("vatAmount", "1e400")])
def test_an_amount_no_invoice_has_is_refused_when_read_not_when_summed(field, value):
    """"1e999999" read as a Decimal overflowed the first sum (an unexpected error, not a refusal)."""
    from marshmallow import ValidationError

    from schemas.moment import MOMENT_INVOICE
    line = {"itemText": "x", "quantity": "1", "amountExclVat": "100.00", "vatCode": "3", "productType": "HOURS",
            field: value}
    with pytest.raises(ValidationError) as err:
        MOMENT_INVOICE.load({"id": 1, "invoiceNumber": 1001, "status": "FINALIZED", "invoiceDate": "2026-11-20",
                             "dueDate": "2026-12-04", "customer": {"id": 2, "customerNumber": "100001"},
                             "lines": [line]})
    assert err.value.normalized_messages() == {"lines": {0: {field: ["must be a number between -10^15 and 10^15"]}}}


# --- invoices in another currency (issue 26, item 2) ---------------------------------------
def currency_voucher(lines, code="EUR", rate="11.4875", factor="1", **invoice):
    from decimal import Decimal

    from schemas.moment import MOMENT_INVOICE
    from schemas.vouchers import Currency, VatRate, check_invoice, voucher_body
    inv = MOMENT_INVOICE.load({**INVOICE, "currencyCode": code, **invoice, "lines": lines})
    check_invoice(inv)
    return voucher_body(inv, receivable_id=100, revenue_ids={"HOURS": 30, "EXPENSES": 31, "PRODUCTS": 32},
                        vat={k: VatRate(i, Decimal(p)) for k, (i, p) in VAT.items()}, project_id=70, guid="g",
                        currency=Currency(code, 12, Decimal(rate), Decimal(factor)))


@pytest.mark.parametrize("rate,factor,amount,nok", [
    ("11.4875", "1", "1.00", "11.49"),          # 11.4875
    ("1.5", "1", "0.03", "0.05"),               # 0.045: half an øre rounds up (not to even)
    ("1.5", "1", "-0.03", "-0.05"),             # a credit note's the same, away from zero
    ("11.4875", "1", "100.40", "1153.35"),      # 1153.345
    ("98.52", "100", "1000.00", "985.20"),      # SEK per 100
    ("98.52", "100", "0.50", "0.49"),           # 0.4926
    ("7.251", "100", "1.00", "0.07"),           # JPY per 100: 0.07251
    ("10.9125", "1", "0.02", "0.22"),           # 0.21825
])
def test_an_amount_in_currency_in_nok_rounded_half_up_to_the_ore(rate, factor, amount, nok):
    from decimal import Decimal

    from schemas.vouchers import Currency
    assert Currency("X", 1, Decimal(rate), Decimal(factor)).nok(Decimal(amount)) == Decimal(nok)


def test_the_rate_a_line_states_is_nok_per_unit():
    from decimal import Decimal

    from schemas.vouchers import Currency
    assert Currency("SEK", 1, Decimal("98.5200"), Decimal(100)).unit_rate == Decimal("0.9852")
    assert Currency("EUR", 1, Decimal("11.4875")).unit_rate == Decimal("11.4875")
    assert Currency("X", 1, Decimal(1), Decimal(3)).unit_rate == Decimal("0.3333333333")   # ten decimals


def test_a_sek_invoice_at_four_vat_rates_worked_by_hand():
    """98,52 NOK per 100 SEK. Per credit (gross in SEK, NOK half up): 4 101,96 -> 4 041,25;
    3 503,28 -> 3 451,43; 385,90 -> 380,19; 3 176,08 -> 3 129,07. The receivable is their sum,
    11 001,94 kr, an øre below Moment's gross 11 167,22 SEK at the rate (11 001,945144)."""
    from decimal import Decimal as D
    v = currency_voucher([line("3281.57"), line("3046.33", "31", "PRODUCTS"), line("344.55", "33", "EXPENSES"),
                          line("3176.08", "5", "EXPENSES")], "SEK", "98.52", "100")
    drafts = v.body["DraftLines"]
    assert [(ln["Amount"], ln["AmountCurrency"]) for ln in drafts] == [
        (D("11001.94"), D("11167.22")), (D("-4041.25"), D("-4101.96")), (D("-3451.43"), D("-3503.28")),
        (D("-380.19"), D("-385.90")), (D("-3129.07"), D("-3176.08"))]
    assert all((ln["CurrencyCodeID"], ln["CurrencyExchangeRate"]) == (12, D("0.9852")) for ln in drafts)
    assert (v.gross, v.gross_currency) == (D("11001.94"), D("11167.22"))
    # the VAT in NOK: Moment's VAT at the rate against the platform's split of each NOK gross
    assert [(c.code, c.moment, c.platform, c.acceptable) for c in v.vat] == [
        ("3", D("808.25"), D("808.25"), True), ("31", D("450.19"), D("450.19"), True),
        ("33", D("40.74"), D("40.73"), True)]


def test_an_eur_invoice_keeps_moments_gross_in_currency_on_the_receivable():
    from decimal import Decimal as D
    v = currency_voucher([line("1234.56"), line("99.99", "31", "PRODUCTS"), line("480.00", "33", "EXPENSES"),
                          line("100.40", "5", "EXPENSES")])
    drafts = v.body["DraftLines"]
    # the receivable: Moment's gross in EUR, in NOK the credits' sum (an øre above 2 296,19 x 11,4875)
    assert drafts[0]["AmountCurrency"] == D("2296.19") == -sum(ln["AmountCurrency"] for ln in drafts[1:])
    assert drafts[0]["Amount"] == D("26377.49") == -sum(ln["Amount"] for ln in drafts[1:])
    assert [ln["Amount"] for ln in drafts[1:]] == [D("-17727.51"), D("-1320.95"), D("-6175.68"), D("-1153.35")]
    # 15 %: Moment 15,00 EUR = 172,31 kr; the platform splits 172,30 kr out of 1 320,95 kr
    assert [(c.code, c.moment, c.platform) for c in v.vat] == [
        ("3", D("3545.50"), D("3545.50")), ("31", D("172.31"), D("172.30")), ("33", D("661.68"), D("661.68"))]


def test_moments_rounding_in_euro_cents_is_not_taken_for_a_wrong_vat():
    """Moment rounds its VAT to the cent: half a cent is 5,7 øre at 11,4875; a one-line
    invoice may then differ by several øre in NOK, and is posted (the difference noted)."""
    from decimal import Decimal as D
    [check] = currency_voucher([line("0.02")]).vat       # 0,005 EUR VAT rounds up to 0,01
    assert (check.moment, check.platform) == (D("0.11"), D("0.07")) and check.acceptable
    [off] = currency_voucher([line("1000.00", vatAmount="200.00")]).vat
    assert (off.moment, off.platform, off.acceptable) == (D("2297.50"), D("2757.00"), False)


def test_many_random_invoices_in_currency_balance_in_both_and_their_vat_passes():
    import random
    from decimal import Decimal as D
    rand = random.Random(11)
    ids = {code: i for code, (i, _) in VAT.items()}
    for _ in range(300):
        code, rate, factor = rand.choice([("EUR", "11.4875", "1"), ("SEK", "98.52", "100"), ("USD", "10.9125", "1"),
                                          ("JPY", "7.251", "100"), ("GBP", "13.621", "1")])
        lines = [line(f"{rand.randint(-99999, 999999) / 100:.2f}", rand.choice(list(VAT)),
                      rand.choice(["HOURS", "EXPENSES", "PRODUCTS"])) for _ in range(rand.randint(1, 8))]
        v = currency_voucher(lines, code, rate, factor)
        drafts = v.body["DraftLines"]
        assert sum(ln["Amount"] for ln in drafts) == 0 and sum(ln["AmountCurrency"] for ln in drafts) == 0
        unit = D(rate) / D(factor)
        assert drafts[0]["AmountCurrency"] == v.gross_currency
        for ln in drafts[1:]:
            assert ln["Amount"] == (ln["AmountCurrency"] * unit).quantize(D("0.01"), "ROUND_HALF_UP")
        assert abs(v.gross - v.gross_currency * unit) <= D("0.005") * len(drafts)
        assert v.gross_currency == voucher(lines).gross         # Moment's gross, as the same invoice in NOK has it
        booked = booked_vat(drafts)
        for check in v.vat:
            assert check.acceptable, (code, lines, check)
            assert booked.get(ids[check.code], D(0)) == -check.platform


def test_an_invoice_in_nok_sends_no_currency_fields():
    for ln in voucher([line("100"), line("50", "31", "PRODUCTS")], currencyCode="NOK").body["DraftLines"]:
        assert not {"AmountCurrency", "CurrencyCodeID", "CurrencyExchangeRate"} & set(ln)


def test_every_currency_field_we_send_exists_in_the_swagger():
    definitions = json.loads(SWAGGER.read_text())["definitions"]
    for ln in currency_voucher([line("100"), line("50", "31", "PRODUCTS")]).body["DraftLines"]:
        assert {"AmountCurrency", "CurrencyCodeID", "CurrencyExchangeRate"} <= set(ln)
        assert set(ln) <= set(definitions["JournalEntryLineDraft"]["properties"]), set(ln)


@pytest.mark.parametrize("value,rate", [("11.4875", "11.4875"), (0.9852, "0.9852"), (None, None)])
def test_moments_exchange_rate_is_read_from_its_one_field(value, rate):
    from decimal import Decimal

    from schemas.moment import INVOICE_EXCHANGE_RATE_FIELD, MOMENT_INVOICE
    inv = MOMENT_INVOICE.load({**INVOICE, "currencyCode": "EUR", INVOICE_EXCHANGE_RATE_FIELD: value})
    assert inv.exchange_rate == (Decimal(rate) if rate else None)


@pytest.mark.parametrize("value", ["0", "-11.4875", "1e7", "NaN", "elleve"])
def test_an_exchange_rate_no_currency_has_is_refused_when_read(value):
    from marshmallow import ValidationError

    from schemas.moment import INVOICE_EXCHANGE_RATE_FIELD, MOMENT_INVOICE
    with pytest.raises(ValidationError) as err:
        MOMENT_INVOICE.load({**INVOICE, "currencyCode": "EUR", INVOICE_EXCHANGE_RATE_FIELD: value})
    assert INVOICE_EXCHANGE_RATE_FIELD in err.value.normalized_messages()
