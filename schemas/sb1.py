"""SpareBank 1 Regnskap's side: its rules, and the records we send (swagger names only).

The mapping from a Moment customer to a platform ``Customer`` is one pure function,
``customer_body``; it keeps the IDs of child records that already exist so that a PUT
updates email, phone, fax and invoice address in place instead of adding new ones.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from dataclasses import asdict
from typing import Any, Callable

from marshmallow import fields

from errors import RecordInvalid

from .base import SB1Schema
from .moment import MomentCustomer, MomentProject
from .text import label, plain, shape, shown

# --- the platform's rules (verified, quoted in the domain brief) -------------------------
CUSTOMER_NUMBER_MIN, CUSTOMER_NUMBER_MAX = 100000, 199999


# ASCII digits only: str.isdigit() and \\d also accept full-width, Arabic-Indic and
# superscript digits, which int() would quietly turn into another customer's number.
_CUSTOMER_NUMBER = re.compile(r"[0-9]{6}")


_PROJECT_NUMBER = re.compile(r"[1-9][0-9]{0,17}")


_ORG_NUMBER = re.compile(r"[0-9]{9}")


_KID = re.compile(r"[0-9]{1,24}[0-9-]")


KID_LENGTH = (2, 25)


# Countries whose organization numbers are Norwegian (a customer with no country is too)
NORWEGIAN = ("", "NO")


# --- codes (verified, swagger) -------------------------------------------------------------
PHONE_TYPE_PHONE, PHONE_TYPE_MOBILE, PHONE_TYPE_FAX = 150101, 150102, 150103


# The expand that returns a customer with the child records we manage.
CUSTOMER_EXPAND = "Info,Info.DefaultEmail,Info.DefaultPhone,Info.InvoiceAddress,Info.Phones"


# A currency code as the platform writes it (ISO 4217): only such a code is named outside
# the company's email; anything else by its shape.
CURRENCY_CODE = r"[A-Z]{3}"


# Assumed: the currency a customer gets when Moment has none (the company's own currency).
DEFAULT_CURRENCY = "NOK"


# Bump when the mapping changes, so every record is written once more with the new mapping.
MAPPING_VERSION = 2


def customer_number_ok(raw: str) -> bool:
    """A customer number the platform takes: six digits (0-9) in the allowed range. Only
    such a number names a customer outside the company's email (see ``schemas.text``)."""
    return bool(_CUSTOMER_NUMBER.fullmatch(raw)) and CUSTOMER_NUMBER_MIN <= int(raw) <= CUSTOMER_NUMBER_MAX


def project_number_ok(raw: str) -> bool:
    """A project number the platform takes: 1 to 18 digits (0-9), not starting with 0."""
    return bool(_PROJECT_NUMBER.fullmatch(raw))


_NATIONAL_ID_WEIGHTS = ([3, 7, 6, 1, 8, 9, 4, 5, 2], [5, 4, 3, 2, 7, 6, 5, 4, 3, 2])


def looks_like_national_id(text: str) -> bool:
    """Eleven digits whose last two are the check digits of a Norwegian national identity
    number (fødselsnummer, D-number): a number of another kind that may be one is named by
    the record's Moment id, never by itself (one 11-digit number in 121 matches by chance).
    Ten digits are tried with the leading zero a number read as an integer loses (a person
    born on the 1st to the 9th of a month)."""
    if not (len(text) in (10, 11) and text.isascii() and text.isdigit()):
        return False
    text = text.zfill(11)
    for n, weights in enumerate(_NATIONAL_ID_WEIGHTS):
        check = (11 - sum(int(d) * w for d, w in zip(text, weights)) % 11) % 11
        if check == 10 or check != int(text[9 + n]):
            return False
    return True


# Refused values: each error's str() (logs, Sentry, dead letters, history, the CLI) names a
# value by its shape ("11 digits"), never the value; ``params`` keep the value for the
# company's email (``worker.notices.templates``), which is the only reader of params.

def check_customer(customer: MomentCustomer) -> int:
    """The customer number as the platform needs it, or ``RecordInvalid`` saying why not;
    also the organization number of a Norwegian customer."""
    raw = customer.customer_number
    rule = (f"SpareBank 1 Regnskap needs a customer number of six digits (0-9) "
            f"between {CUSTOMER_NUMBER_MIN} and {CUSTOMER_NUMBER_MAX}")
    hint = "Change the customer number in Moment to a number in that range."
    if not raw:
        raise RecordInvalid(f"the customer has no customer number. {rule}.", hint=hint,
                            code="customer-number-missing")
    if not re.fullmatch(r"[0-9]+", raw):
        raise RecordInvalid(f"the customer number ({shape(raw)}) is not a number (only the digits 0-9). {rule}.",
                            hint=hint, code="customer-number-not-digits",
                            params={"value": shown(raw), "shape": shape(raw)})
    if not customer_number_ok(raw):
        raise RecordInvalid(f"the customer number ({shape(raw)}) is outside the allowed range. {rule}.", hint=hint,
                            code="customer-number-range", params={"value": label(raw), "shape": shape(raw)})
    number = int(raw)
    if not plain(customer.name):
        raise RecordInvalid(f"customer {number} has no name; SpareBank 1 Regnskap needs one",
                            code="name-missing", params={"noun": "customers", "number": number},
                            hint="Give the customer a name in Moment.")
    country = (customer.country_code or (customer.address.country_code if customer.address else None) or "")
    if given(customer.organization_number) and country.strip().upper() in NORWEGIAN:
        check_org_number(customer.organization_number)
    return number


def mod11_check_digit(digits: str, weights: list[int]) -> int | None:
    """The MOD11 check digit of ``digits`` (None when the remainder makes it 10)."""
    total = sum(int(d) * w for d, w in zip(reversed(digits), weights))
    check = (11 - total % 11) % 11
    return None if check == 10 else check


def check_org_number(value: str) -> str:
    """A Norwegian organization number: nine digits, the last a MOD11 check digit."""
    hint = ("Correct the organization number in Moment; look it up in Brønnøysundregistrene "
            "(brreg.no) if unsure.")
    if not _ORG_NUMBER.fullmatch(value):
        raise RecordInvalid(f"the organization number ({shape(value)}) must be nine digits (0-9, no spaces)",
                            hint=hint, code="org-number-format", params={"value": shown(value), "shape": shape(value)})
    if mod11_check_digit(value[:8], [2, 3, 4, 5, 6, 7, 2, 3]) != int(value[8]):
        raise RecordInvalid(f"the organization number ({shape(value)}) has a wrong check digit (MOD11); "
                            "it is probably mistyped", hint=hint, code="org-number-check",
                            params={"value": value, "shape": shape(value)})
    return value


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def check_kid(value: str) -> str:
    """A KID: 2-25 digits whose last is a MOD10 (Luhn) or MOD11 check digit (``-`` for 10)."""
    hint = "Correct the KID (payment id) of the invoice in Moment, then finalize or save it again."
    low, high = KID_LENGTH
    if not (low <= len(value) <= high and _KID.fullmatch(value)):
        raise RecordInvalid(f"the KID ({shape(value)}) must be {low}-{high} digits (0-9)", hint=hint,
                            code="kid-format", params={"value": shown(value), "shape": shape(value),
                                                       "low": low, "high": high})
    body, last = value[:-1], value[-1]
    mod11 = mod11_check_digit(body, [2, 3, 4, 5, 6, 7] * 5)
    if (last != "-" and luhn_ok(value)) or (mod11 is None and last == "-") or (
            mod11 is not None and last == str(mod11)):
        return value
    raise RecordInvalid(f"the KID ({shape(value)}) has a wrong check digit (neither MOD10 nor MOD11); "
                        "the bank would refuse the payment", hint=hint, code="kid-check",
                        params={"value": value, "shape": shape(value)})


# --- outbound schemas: every key must exist in the swagger definitions --------------------
class ChildOut(SB1Schema):
    id = fields.Integer(metadata={"omit_none": True})
    deleted = fields.Boolean(metadata={"omit_none": True})
    createguid = fields.String(data_key="_createguid", metadata={"omit_none": True})


class EmailOut(ChildOut):
    email_address = fields.String()


class PhoneOut(ChildOut):
    number = fields.String()
    type = fields.Integer()


class AddressOut(ChildOut):
    address_line1 = fields.String()
    address_line2 = fields.String()
    postal_code = fields.String()
    city = fields.String()
    country_code = fields.String()


class BusinessRelationOut(ChildOut):
    name = fields.String()
    default_email = fields.Nested(EmailOut)
    default_phone = fields.Nested(PhoneOut)
    invoice_address = fields.Nested(AddressOut)
    phones = fields.List(fields.Nested(PhoneOut))


class CustomerOut(ChildOut):
    customer_number = fields.Integer()
    org_number = fields.String()
    web_url = fields.String()
    currency_code_id = fields.Integer()
    info = fields.Nested(BusinessRelationOut)


SB1_CUSTOMER = CustomerOut()


def customer_fields(customer: MomentCustomer, number: int) -> dict[str, Any]:
    """What the books should say about this customer: the ten fields, nothing else."""
    addr = {k: given(v) for k, v in asdict(customer.address).items()} if customer.address else {}
    return {
        "customer_number": number,
        "name": customer.name,
        "org_number": given(customer.organization_number),
        "email": given(customer.email),
        "web_url": given(customer.website),
        "phone": given(customer.phone),
        "fax": given(customer.fax),
        # none in Moment: the company's own currency
        "currency_code": given(customer.currency_code) or DEFAULT_CURRENCY,
        "country_code": given(customer.country_code) or addr.get("country_code"),
        "address": addr if any(addr.values()) else None,
    }


def given(text: str | None) -> str | None:
    """Moment's value, or None when it is empty (blank counts as empty): cleared in the books."""
    return text if text is not None and text.strip() else None


def fingerprint(wanted: dict[str, Any], key: bytes) -> str:
    """A stable digest of what we want in the books; equal digests mean nothing to write.

    Keyed (HMAC-SHA256) with the deployment's secret ``key``, which Redis, where the digest
    is kept, never holds: a plain hash of a phone or organization number could be reversed
    by trying every value."""
    text = json.dumps({"v": MAPPING_VERSION, **wanted}, sort_keys=True, default=str)
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def field_digests(wanted: dict[str, Any], key: bytes) -> dict[str, str]:
    """A short keyed digest per field of what we want in the books (HMAC-SHA256 with the
    deployment's secret ``key``, as ``fingerprint``; the field's name in it, so two fields
    with one value do not show it): the next write names the fields it changes (the
    history), without keeping their values or anything a guess could be checked against."""
    return {name: hmac.new(key, f"{name}\0{json.dumps(value, sort_keys=True, default=str)}".encode(),
                           hashlib.sha256).hexdigest()[:12]
            for name, value in wanted.items()}


def create_guid(*parts: Any) -> str:
    """A deterministic ``_createguid``: the same logical create always carries the same one."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "moment-sb1:" + "/".join(str(p) for p in parts)))


def _child(existing: dict | None, values: dict[str, Any] | None, guid: str) -> dict | None:
    """One child record for a POST or PUT: updated in place by ID, created with a
    ``_createguid``, or deleted when Moment no longer has a value."""
    if values is None:
        return {"id": existing["ID"], "deleted": True} if existing else None
    if existing:
        return {"id": existing["ID"], **values}
    return {"id": 0, "createguid": guid, **values}


def customer_body(wanted: dict[str, Any], *, currency_id: int | None, existing: dict | None,
                  guid: Callable[[str], str]) -> dict[str, Any]:
    """The JSON for ``POST customers`` (``existing`` None) or ``PUT customers/{ID}``.

    ``guid(part)`` makes the ``_createguid`` of the customer (part ``""``) and of each new
    child record. ``existing`` is the customer as the platform returned it with
    ``CUSTOMER_EXPAND``.
    """
    info_now = (existing or {}).get("Info") or {}
    fax_now = next((p for p in info_now.get("Phones") or []
                    if p.get("Type") == PHONE_TYPE_FAX and not p.get("Deleted")), None)
    addr = wanted["address"] or {}
    address = {k: addr.get(k) for k in ("address_line1", "address_line2", "postal_code", "city")}
    address["country_code"] = addr.get("country_code") or wanted["country_code"]
    has_address = any(address.values())
    info = {
        "name": wanted["name"],
        "default_email": _child(info_now.get("DefaultEmail"),
                                {"email_address": wanted["email"]} if wanted["email"] else None,
                                guid("email")),
        "default_phone": _child(info_now.get("DefaultPhone"),
                                {"number": wanted["phone"], "type": PHONE_TYPE_PHONE} if wanted["phone"] else None,
                                guid("phone")),
        "invoice_address": _child(info_now.get("InvoiceAddress"), address if has_address else None,
                                  guid("invoice-address")),
    }
    fax = _child(fax_now, {"number": wanted["fax"], "type": PHONE_TYPE_FAX} if wanted["fax"] else None,
                 guid("fax"))
    if fax:
        info["phones"] = [fax]
    body: dict[str, Any] = {
        "customer_number": wanted["customer_number"],
        "org_number": wanted["org_number"],
        "web_url": wanted["web_url"],
        "currency_code_id": currency_id,
        "info": info,
    }
    if existing:
        body["id"] = existing["ID"]
        info["id"] = info_now.get("ID") or existing.get("BusinessRelationID")
    else:
        body["createguid"] = guid("")
    return SB1_CUSTOMER.dump(body)


# --- projects ----------------------------------------------------------------------------
# Moment's project states (assumed) → the platform's project status codes (verified)
PROJECT_STATUS = {"PLANNED": 42201, "ACTIVE": 42203, "COMPLETED": 42204, "CANCELLED": 42205}


def check_project(project: MomentProject) -> str:
    """The project number as the platform needs it (digits only), or ``RecordInvalid``."""
    raw = project.project_number
    if not project_number_ok(raw):
        why = ("is empty" if not raw else "contains other characters than digits (0-9)"
               if not re.fullmatch(r"[0-9]+", raw) else "starts with 0" if raw.startswith("0") else "is too long")
        raise RecordInvalid(
            f"the project number ({shape(raw)}) {why}. SpareBank 1 Regnskap needs a project number made "
            "of digits only (1 to 18, not starting with 0).",
            hint="Change the project number in Moment to digits only (for example 1042).",
            code="project-number", params={"value": shown(raw), "shape": shape(raw), "why": why})
    if not plain(project.name):
        raise RecordInvalid("the project has no name; SpareBank 1 Regnskap needs one",
                            code="name-missing", params={"noun": "projects", "number": raw},
                            hint="Give the project a name in Moment.")
    if project.customer is None:
        raise RecordInvalid("the project has no customer in Moment; SpareBank 1 Regnskap needs one",
                            code="project-customer-missing",
                            hint="Choose the project's customer in Moment.")
    if (project.project_state or "ACTIVE") not in PROJECT_STATUS:
        state = project.project_state
        raise RecordInvalid(code="project-state", params={"value": shown(state), "shape": shape(state)},
                            message=f"the project state ({shape(state)}) is not one the integration knows "
                            f"({', '.join(PROJECT_STATUS)})")
    return raw


class ProjectOut(ChildOut):
    project_number = fields.String()
    project_number_numeric = fields.Integer()
    name = fields.String()
    project_customer_id = fields.Integer(data_key="ProjectCustomerID")
    start_date = fields.Date()
    end_date = fields.Date()
    status_code = fields.Integer()


SB1_PROJECT = ProjectOut()


def project_fields(project: MomentProject, number: str) -> dict[str, Any]:
    return {
        "project_number": number,
        "name": project.name,
        "customer_moment_id": project.customer.id,
        "status_code": PROJECT_STATUS[project.project_state or "ACTIVE"],
        "start_date": project.start_date,
        "end_date": project.end_date,
    }


def project_body(wanted: dict[str, Any], *, customer_id: int, existing: dict | None,
                 guid: Callable[[str], str]) -> dict[str, Any]:
    body = {
        "project_number": wanted["project_number"],
        "project_number_numeric": int(wanted["project_number"]),
        "name": wanted["name"],
        "project_customer_id": customer_id,
        "start_date": wanted["start_date"],
        "end_date": wanted["end_date"],
        "status_code": wanted["status_code"],
    }
    if existing:
        body["id"] = existing["ID"]
    else:
        body["createguid"] = guid("")
    return SB1_PROJECT.dump(body)
