"""SpareBank 1 Regnskap's side: its rules, and the records we send (swagger names only).

The mapping from a Moment customer to a platform ``Customer`` is one pure function,
``customer_body``; it keeps the IDs of child records that already exist so that a PUT
updates email, phone, fax and invoice address in place instead of adding new ones.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict
from typing import Any, Callable

from marshmallow import fields

from clients.errors import RecordInvalid
from .base import SB1Schema
from .moment import MomentCustomer, MomentProject

# --- the platform's rules (verified, quoted in the domain brief) -------------------------
CUSTOMER_NUMBER_MIN, CUSTOMER_NUMBER_MAX = 100000, 199999

# --- codes (verified, swagger) -------------------------------------------------------------
PHONE_TYPE_PHONE, PHONE_TYPE_MOBILE, PHONE_TYPE_FAX = 150101, 150102, 150103

# The expand that returns a customer with the child records we manage.
CUSTOMER_EXPAND = "Info,Info.DefaultEmail,Info.DefaultPhone,Info.InvoiceAddress,Info.Phones"

# Bump when the mapping changes, so every record is written once more with the new mapping.
MAPPING_VERSION = 1


def check_customer(customer: MomentCustomer) -> int:
    """The customer number as the platform needs it, or ``RecordInvalid`` saying why not."""
    raw = customer.customer_number
    rule = (f"SpareBank 1 Regnskap needs a customer number made of digits only, "
            f"between {CUSTOMER_NUMBER_MIN} and {CUSTOMER_NUMBER_MAX}")
    if not raw.isdigit():
        raise RecordInvalid(f"customer number {raw!r} is not a number. {rule}.",
                            hint="Change the customer number in Moment to a number in that range.")
    number = int(raw)
    if not CUSTOMER_NUMBER_MIN <= number <= CUSTOMER_NUMBER_MAX:
        raise RecordInvalid(f"customer number {raw} is outside the allowed range. {rule}.",
                            hint="Change the customer number in Moment to a number in that range.")
    return number


# --- outbound schemas: every key must exist in the swagger definitions --------------------
class _Child(SB1Schema):
    id = fields.Integer()
    deleted = fields.Boolean()
    createguid = fields.String(data_key="_createguid")


class EmailOut(_Child):
    email_address = fields.String()


class PhoneOut(_Child):
    number = fields.String()
    type = fields.Integer()


class AddressOut(_Child):
    address_line1 = fields.String()
    address_line2 = fields.String()
    postal_code = fields.String()
    city = fields.String()
    country_code = fields.String()


class BusinessRelationOut(_Child):
    name = fields.String()
    default_email = fields.Nested(EmailOut)
    default_phone = fields.Nested(PhoneOut)
    invoice_address = fields.Nested(AddressOut)
    phones = fields.List(fields.Nested(PhoneOut))


class CustomerOut(_Child):
    customer_number = fields.Integer()
    org_number = fields.String()
    web_url = fields.String()
    currency_code_id = fields.Integer()
    info = fields.Nested(BusinessRelationOut)


SB1_CUSTOMER = CustomerOut()


def customer_fields(customer: MomentCustomer, number: int) -> dict[str, Any]:
    """What the books should say about this customer: the ten fields, nothing else."""
    addr = customer.address
    return {
        "customer_number": number,
        "name": customer.name,
        "org_number": customer.organization_number or None,
        "email": customer.email or None,
        "web_url": customer.website or None,
        "phone": customer.phone or None,
        "fax": customer.fax or None,
        "currency_code": customer.currency_code or None,
        "country_code": customer.country_code or (addr.country_code if addr else None),
        "address": asdict(addr) if addr else None,
    }


def fingerprint(wanted: dict[str, Any]) -> str:
    """A stable digest of what we want in the books; equal digests mean nothing to write."""
    text = json.dumps({"v": MAPPING_VERSION, **wanted}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


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
        "org_number": wanted["org_number"] or "",
        "web_url": wanted["web_url"] or "",
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
    if not raw.isdigit() or not raw.isascii():
        raise RecordInvalid(
            f"project number {raw!r} contains other characters than digits. SpareBank 1 Regnskap "
            "needs a project number made of digits only.",
            hint="Change the project number in Moment to digits only (for example 1042).")
    if project.customer is None:
        raise RecordInvalid("the project has no customer in Moment; SpareBank 1 Regnskap needs one",
                            hint="Choose the project's customer in Moment.")
    if (project.project_state or "ACTIVE") not in PROJECT_STATUS:
        raise RecordInvalid(f"project state {project.project_state!r} is not one the integration knows "
                            f"({', '.join(PROJECT_STATUS)})")
    return raw


class ProjectOut(_Child):
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
