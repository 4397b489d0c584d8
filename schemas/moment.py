"""Records as Moment's API returns them (field names assumed in the domain brief).

Text fields are read as they come (a line break, a bidi override, ten thousand characters):
each data type's check refuses what the books must not hold before anything is written
(``schemas.fields``), so the refusal names the record and the field.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from marshmallow import fields, post_load, validate

from .base import MomentSchema


@dataclass(frozen=True)
class MomentAddress:
    address_line1: str | None = None
    address_line2: str | None = None
    postal_code: str | None = None
    city: str | None = None
    country_code: str | None = None


@dataclass(frozen=True)
class MomentCustomer:
    id: int
    name: str
    customer_number: str
    organization_number: str | None = None
    email: str | None = None
    website: str | None = None
    phone: str | None = None
    fax: str | None = None
    currency_code: str | None = None
    country_code: str | None = None
    address: MomentAddress | None = None
    last_modified_date: datetime | None = None


def _number_text(value) -> str:
    """A number field as Moment sent it (string or JSON number), nothing trimmed: the rule
    checks refuse a number with a space or a line break instead of quietly repairing it."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return repr(value)          # 1.0, true, a list: never a valid number, shown as sent
    return str(value)


def _text(**kw):
    return fields.String(allow_none=True, load_default=None, **kw)


class MomentAddressSchema(MomentSchema):
    address_line1 = _text()
    address_line2 = _text()
    postal_code = _text()
    city = _text()
    country_code = _text()

    @post_load
    def _make(self, data, **kwargs) -> MomentAddress:
        return MomentAddress(**data)


class MomentCustomerSchema(MomentSchema):
    id = fields.Integer(required=True, strict=True)
    name = fields.String(required=True)
    # Moment keeps the number as a string; the rule check decides whether it is usable.
    customer_number = fields.Raw(required=True)
    organization_number = _text()
    email = _text()
    website = _text()
    phone = _text()
    fax = _text()
    currency_code = _text()
    country_code = _text()
    address = fields.Nested(MomentAddressSchema, allow_none=True, load_default=None)
    last_modified_date = fields.AwareDateTime(allow_none=True, load_default=None)

    @post_load
    def _make(self, data, **kwargs) -> MomentCustomer:
        data["customer_number"] = _number_text(data["customer_number"])
        return MomentCustomer(**data)


MOMENT_CUSTOMER = MomentCustomerSchema()


@dataclass(frozen=True)
class MomentRef:
    id: int
    customer_number: str | None = None


@dataclass(frozen=True)
class MomentProject:
    id: int
    name: str
    project_number: str
    customer: MomentRef | None = None
    project_state: str | None = None
    start_date: date | None = None
    end_date: date | None = None
    last_modified_date: datetime | None = None


class MomentCustomerRefSchema(MomentSchema):
    id = fields.Integer(required=True, strict=True)
    customer_number = fields.Raw(load_default=None)

    @post_load
    def _make(self, data, **kwargs) -> MomentRef:
        number = data["customer_number"]
        return MomentRef(data["id"], None if number is None else str(number))


class MomentProjectSchema(MomentSchema):
    id = fields.Integer(required=True, strict=True)
    name = fields.String(required=True)
    project_number = fields.Raw(required=True)
    customer = fields.Nested(MomentCustomerRefSchema, allow_none=True, load_default=None)
    project_state = _text()
    start_date = fields.Date(allow_none=True, load_default=None)
    end_date = fields.Date(allow_none=True, load_default=None)
    last_modified_date = fields.AwareDateTime(allow_none=True, load_default=None)

    @post_load
    def _make(self, data, **kwargs) -> MomentProject:
        data["project_number"] = _number_text(data["project_number"])
        return MomentProject(**data)


MOMENT_PROJECT = MomentProjectSchema()


@dataclass(frozen=True)
class MomentInvoiceLine:
    item_text: str
    quantity: Decimal
    amount_excl_vat: Decimal
    vat_code: str
    product_type: str
    vat_amount: Decimal | None = None       # Moment's VAT of the line, when it sends it


@dataclass(frozen=True)
class MomentInvoice:
    id: int
    invoice_number: int
    status: str
    invoice_date: date
    due_date: date | None
    customer: MomentRef
    lines: list[MomentInvoiceLine]
    payment_id: str | None = None
    description: str | None = None
    currency_code: str | None = None
    exchange_rate: Decimal | None = None    # NOK per one unit of currency_code, when Moment sends it
    project: MomentRef | None = None
    last_modified_date: datetime | None = None


class MomentProjectRefSchema(MomentSchema):
    id = fields.Integer(required=True, strict=True)
    project_number = fields.Raw(load_default=None)

    @post_load
    def _make(self, data, **kwargs) -> MomentRef:
        return MomentRef(data["id"])


# an amount or quantity beyond this is no invoice's ("1e999999" would overflow every sum);
# the books' own bound (schemas.vouchers.MAX_AMOUNT) is lower and says so in its own words
AMOUNT_BOUND = validate.Range(-Decimal(10) ** 15, Decimal(10) ** 15, min_inclusive=False, max_inclusive=False,
                              error="must be a number between -10^15 and 10^15")


class MomentInvoiceLineSchema(MomentSchema):
    item_text = fields.String(load_default="")
    quantity = fields.Decimal(load_default=Decimal(1), validate=AMOUNT_BOUND)
    amount_excl_vat = fields.Decimal(required=True, validate=AMOUNT_BOUND)      # the line total, a decimal string
    vat_amount = fields.Decimal(allow_none=True, load_default=None, validate=AMOUNT_BOUND)   # assumed name; optional
    vat_code = fields.Raw(required=True)
    product_type = fields.String(required=True)

    @post_load
    def _make(self, data, **kwargs) -> MomentInvoiceLine:
        data["vat_code"] = _number_text(data["vat_code"])
        data["item_text"] = data["item_text"] or ""
        return MomentInvoiceLine(**data)


# Assumed (Moment does not document it): the field of an invoice in another currency that
# holds the exchange rate Moment invoiced at, as NOK per ONE unit of the invoice's currency
# (11.4875 for EUR, 0.985 for SEK). Absent or null: the platform's rate for the invoice date.
INVOICE_EXCHANGE_RATE_FIELD = "exchangeRate"
EXCHANGE_RATE_BOUND = validate.Range(0, 10 ** 6, min_inclusive=False, error="must be a number above 0 and below 10^6")


class MomentInvoiceSchema(MomentSchema):
    id = fields.Integer(required=True, strict=True)
    invoice_number = fields.Integer(required=True)
    status = fields.String(required=True)
    invoice_date = fields.Date(required=True)
    due_date = fields.Date(allow_none=True, load_default=None)
    payment_id = _text()
    description = _text()
    currency_code = _text()
    exchange_rate = fields.Decimal(allow_none=True, load_default=None, data_key=INVOICE_EXCHANGE_RATE_FIELD,
                                   validate=EXCHANGE_RATE_BOUND)
    customer = fields.Nested(MomentCustomerRefSchema, required=True)
    project = fields.Nested(MomentProjectRefSchema, allow_none=True, load_default=None)
    lines = fields.List(fields.Nested(MomentInvoiceLineSchema), required=True)
    last_modified_date = fields.AwareDateTime(allow_none=True, load_default=None)

    @post_load
    def _make(self, data, **kwargs) -> MomentInvoice:
        return MomentInvoice(**data)


MOMENT_INVOICE = MomentInvoiceSchema()
