"""SpareBank 1 Regnskap's side: its rules, and the records we send (swagger names only).

The mapping from a Moment customer to a platform ``Customer`` is one pure function,
``customer_body``; it keeps the IDs of child records that already exist so that a PUT
updates email, phone, fax and invoice address in place instead of adding new ones.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable

from marshmallow import fields

from clients.errors import RecordInvalid
from .base import SB1Schema, pascal
from .moment import MomentCustomer, MomentInvoice, MomentProject

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
    out = SB1_PROJECT.dump(body)
    if existing:
        # Moment is the master of the dates: one removed there is removed in the books too
        # (the schema leaves out what is None, so say it explicitly)
        for name in ("start_date", "end_date"):
            if wanted[name] is None:
                out[pascal(name)] = None
    return out


# --- invoices → vouchers -------------------------------------------------------------------
ORE = Decimal("0.01")
INVOICE_FINAL_STATUS = "FINALIZED"
PRODUCT_TYPES = ("HOURS", "EXPENSES", "PRODUCTS")
# Assumed (domain brief): the receivable is the customer's own ledger account, an Account
# whose CustomerID is the customer; SubAccountID stays empty.
RECEIVABLE_ACCOUNT_FIELD = "CustomerID"
# Assumed: a credit line carries the amount excluding VAT with its VAT type, and the VAT
# itself is posted on explicit lines to the output VAT account (per VAT code), so the
# voucher we send balances by itself. If the platform turns out to compute VAT from
# VatTypeID itself, set this to False: revenue lines then carry the amount including VAT.
VAT_AS_SEPARATE_LINES = True


@dataclass(frozen=True)
class VatRate:
    id: int
    percent: Decimal


def voucher_reference(invoice: MomentInvoice) -> str:
    """The voucher's number as the vendor describes it: the KID, else the invoice number."""
    return invoice.payment_id or str(invoice.invoice_number)


def check_invoice(invoice: MomentInvoice) -> None:
    if not invoice.lines:
        raise RecordInvalid(f"invoice {invoice.invoice_number} has no lines")
    unknown = sorted({ln.product_type for ln in invoice.lines} - set(PRODUCT_TYPES))
    if unknown:
        raise RecordInvalid(f"invoice {invoice.invoice_number} has lines of an unknown product type "
                            f"({', '.join(unknown)}); known: {', '.join(PRODUCT_TYPES)}")
    if (invoice.currency_code or "NOK") != "NOK":
        raise RecordInvalid(
            f"invoice {invoice.invoice_number} is in {invoice.currency_code}; the integration posts "
            "invoices in NOK only", hint="Post this invoice by hand in SpareBank 1 Regnskap.")


class Money(fields.Field):
    """A Decimal on our side; a JSON number with at most two decimals on the wire."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else float(value.quantize(ORE))


class DimensionsOut(_Child):
    project_id = fields.Integer()


class JournalLineOut(_Child):
    account_id = fields.Integer()
    amount = Money()
    financial_date = fields.Date()
    description = fields.String()
    vat_type_id = fields.Integer()
    invoice_number = fields.String()
    due_date = fields.Date()
    payment_id = fields.String()
    dimensions = fields.Nested(DimensionsOut)


class JournalEntryOut(_Child):
    description = fields.String()
    draft_lines = fields.List(fields.Nested(JournalLineOut))


SB1_JOURNAL_ENTRY = JournalEntryOut()


def vat_amount(net: Decimal, percent: Decimal) -> Decimal:
    return (net * percent / 100).quantize(ORE, ROUND_HALF_UP)


def voucher_body(invoice: MomentInvoice, *, receivable_id: int, revenue_ids: dict[str, int],
                 vat: dict[str, VatRate], vat_account_id: int | None, project_id: int | None,
                 guid: str) -> dict[str, Any]:
    """One balanced voucher for a finalized invoice (a credit note has negative amounts):
    a debit on the customer's receivable for the total including VAT, a credit excluding
    VAT per invoice line on the revenue account of its product type, and the VAT."""
    common: dict[str, Any] = {"financial_date": invoice.invoice_date}
    if project_id:
        common["dimensions"] = {"project_id": project_id}
    credits: list[dict[str, Any]] = []
    net_by_code: dict[str, Decimal] = {}
    for line in invoice.lines:
        net = line.amount_excl_vat.quantize(ORE, ROUND_HALF_UP)
        rate = vat[line.vat_code]
        amount = net if VAT_AS_SEPARATE_LINES else net + vat_amount(net, rate.percent)
        credits.append({"account_id": revenue_ids[line.product_type], "amount": -amount,
                        "vat_type_id": rate.id, "description": line.item_text, **common})
        net_by_code[line.vat_code] = net_by_code.get(line.vat_code, Decimal(0)) + net
    if VAT_AS_SEPARATE_LINES:
        for code, net in net_by_code.items():
            tax = vat_amount(net, vat[code].percent)
            if tax:
                credits.append({"account_id": vat_account_id, "amount": -tax,
                                "description": f"Utgående mva kode {code} ({vat[code].percent}%)", **common})
    total = -sum((c["amount"] for c in credits), Decimal(0))
    reference = voucher_reference(invoice)
    text = f"Faktura {invoice.invoice_number}" + (f": {invoice.description}" if invoice.description else "")
    debit = {"account_id": receivable_id, "amount": total, "invoice_number": str(invoice.invoice_number),
             "due_date": invoice.due_date, "payment_id": invoice.payment_id or None,
             "description": text, **common}
    return SB1_JOURNAL_ENTRY.dump({"createguid": guid, "description": f"{reference} {text}",
                                   "draft_lines": [debit, *credits]})
