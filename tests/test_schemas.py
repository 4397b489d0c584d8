"""The mapping Moment customer → platform Customer, the rule check, and the swagger contract."""
import json
from pathlib import Path

import pytest

from clients.errors import RecordInvalid
from schemas.moment import MOMENT_CUSTOMER
from schemas.sb1 import (PHONE_TYPE_FAX, PHONE_TYPE_PHONE, check_customer, create_guid,
                         customer_body, customer_fields, fingerprint)

SWAGGER = Path(__file__).resolve().parents[2] / "shared" / "domain" / "unieconomy-swagger.json"

MOMENT = {
    "id": 1000001, "name": "Fjordkraft Bygg AS", "customerNumber": "100001",
    "organizationNumber": "923456789", "email": "post@fjordbygg.no", "website": "https://fjordbygg.no",
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
])
def test_customer_number_rule(number, ok):
    c = MOMENT_CUSTOMER.load({**MOMENT, "customerNumber": number})
    if ok:
        assert check_customer(c) == int(number)
    else:
        with pytest.raises(RecordInvalid) as err:
            check_customer(c)
        assert "between 100000 and 199999" in str(err.value)
        assert repr(number.strip()) in str(err.value) or number.strip() in str(err.value)


def test_numeric_customer_number_from_moment_is_accepted():
    c = MOMENT_CUSTOMER.load({**MOMENT, "customerNumber": 100042})
    assert check_customer(c) == 100042


def test_create_body_has_all_ten_fields():
    body = customer_body(wanted(), currency_id=11, existing=None, guid=guid)
    info = body["Info"]
    assert body["CustomerNumber"] == 100001
    assert body["OrgNumber"] == "923456789"
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
    body = customer_body(wanted(fax=None), currency_id=None, existing=existing, guid=guid)
    info = body["Info"]
    assert body["ID"] == 9 and info["ID"] == 3
    assert "_createguid" not in body and "CurrencyCodeID" not in body
    assert info["DefaultEmail"] == {"ID": 4, "EmailAddress": "post@fjordbygg.no"}
    assert info["DefaultPhone"]["ID"] == 5
    assert info["InvoiceAddress"]["ID"] == 6 and info["InvoiceAddress"]["City"] == "Oslo"
    assert info["Phones"] == [{"ID": 7, "Deleted": True}]


def test_fingerprint_changes_only_with_the_data():
    assert fingerprint(wanted()) == fingerprint(wanted(someNewField=2, lastModifiedDate="2027-01-01T00:00:00+00:00"))
    assert fingerprint(wanted()) != fingerprint(wanted(email="ny@fjordbygg.no"))
    assert fingerprint(wanted()) != fingerprint(wanted(address={**MOMENT["address"], "city": "Bergen"}))


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


@pytest.mark.skipif(not SWAGGER.exists(), reason="shared/domain/unieconomy-swagger.json not beside the repo")
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
    ("1042", "ACTIVE", None), ("1", "PLANNED", None), ("007", "COMPLETED", None), ("9", "CANCELLED", None),
    ("P-1042", "ACTIVE", "contains other characters than digits"), ("10 42", "ACTIVE", "other characters"),
    ("", "ACTIVE", "other characters"), ("١٢", "ACTIVE", "other characters"),     # Arabic-Indic digits
    ("1042", "ON_HOLD", "project state 'ON_HOLD' is not one the integration knows"),
])
def test_project_rules(number, state, error):
    from schemas.moment import MOMENT_PROJECT
    from schemas.sb1 import check_project
    p = MOMENT_PROJECT.load({**PROJECT, "projectNumber": number, "projectState": state})
    if error is None:
        assert check_project(p) == number
    else:
        with pytest.raises(RecordInvalid, match=error):
            check_project(p)


@pytest.mark.skipif(not SWAGGER.exists(), reason="shared/domain/unieconomy-swagger.json not beside the repo")
def test_every_project_field_we_send_exists_in_the_swagger():
    from schemas.moment import MOMENT_PROJECT
    from schemas.sb1 import PROJECT_STATUS, check_project, project_body, project_fields
    props = json.loads(SWAGGER.read_text())["definitions"]["Project"]["properties"]
    p = MOMENT_PROJECT.load(PROJECT)
    wanted = project_fields(p, check_project(p))
    for existing in (None, {"ID": 5}):
        body = project_body(wanted, customer_id=12, existing=existing, guid=guid)
        assert set(body) <= set(props), set(body) - set(props)
        assert ("EndDate" in body) == (existing is not None)   # no end date: cleared on update only
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
    from schemas.sb1 import VatRate, check_invoice, voucher_body
    inv = MOMENT_INVOICE.load({**INVOICE, **invoice, "lines": lines})
    check_invoice(inv)
    return voucher_body(inv, receivable_id=100, revenue_ids={"HOURS": 30, "EXPENSES": 31, "PRODUCTS": 32},
                        vat={k: VatRate(i, Decimal(p)) for k, (i, p) in VAT.items()}, vat_account_id=27,
                        project_id=70, guid="g")


def line(amount, code="3", kind="HOURS"):
    return {"itemText": "x", "quantity": "1", "amountExclVat": amount, "vatCode": code, "productType": kind}


@pytest.mark.parametrize("lines,debit,vat_lines", [
    ([line("1000.00")], "1250.00", ["-250.00"]),
    ([line("0.01", "3")], "0.01", []),                          # 0.0025 VAT rounds to 0.00: no VAT line
    ([line("0.02", "3")], "0.03", ["-0.01"]),                   # 0.005 rounds half up
    ([line("99.99", "31"), line("0.01", "31")], "115.00", ["-15.00"]),   # VAT on the code's total
    ([line("100", "33"), line("100", "6")], "212.00", ["-12.00"]),
    ([line("-500.00"), line("-80.00", "31", "PRODUCTS")], "-717.00", ["125.00", "12.00"]),   # credit note
])
def test_voucher_balances_to_the_ore(lines, debit, vat_lines):
    from decimal import Decimal
    body = voucher(lines)
    amounts = [Decimal(str(ln["Amount"])) for ln in body["DraftLines"]]
    assert sum(amounts) == 0
    assert amounts[0] == Decimal(debit)
    assert [Decimal(str(ln["Amount"])) for ln in body["DraftLines"] if ln["AccountID"] == 27] == [
        Decimal(v) for v in vat_lines]
    assert all(ln["Dimensions"] == {"ProjectID": 70} for ln in body["DraftLines"])


def test_many_random_invoices_balance():
    import random
    from decimal import Decimal
    rand = random.Random(7)
    for _ in range(300):
        lines = [line(f"{rand.randint(-99999, 999999) / 100:.2f}", rand.choice(list(VAT)),
                      rand.choice(["HOURS", "EXPENSES", "PRODUCTS"])) for _ in range(rand.randint(1, 8))]
        assert sum(Decimal(str(ln["Amount"])) for ln in voucher(lines)["DraftLines"]) == 0


@pytest.mark.parametrize("change,error", [
    ({"lines": []}, "has no lines"),
    ({"lines": [line("1", kind="TRAVEL")]}, "unknown product type (TRAVEL)"),
    ({"currencyCode": "EUR"}, "is in EUR; the integration posts invoices in NOK only"),
])
def test_invoice_rules(change, error):
    from schemas.moment import MOMENT_INVOICE
    from schemas.sb1 import check_invoice
    with pytest.raises(RecordInvalid) as err:
        check_invoice(MOMENT_INVOICE.load({**INVOICE, **change}))
    assert error in str(err.value)


@pytest.mark.skipif(not SWAGGER.exists(), reason="shared/domain/unieconomy-swagger.json not beside the repo")
def test_every_voucher_field_we_send_exists_in_the_swagger():
    definitions = json.loads(SWAGGER.read_text())["definitions"]
    body = voucher([line("100"), line("50", "31", "PRODUCTS")])
    assert set(body) <= set(definitions["JournalEntry"]["properties"])
    for ln in body["DraftLines"]:
        assert set(ln) <= set(definitions["JournalEntryLineDraft"]["properties"]), set(ln)
        assert set(ln["Dimensions"]) <= set(definitions["Dimensions"]["properties"])
