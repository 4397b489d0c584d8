"""SpareBank 1 Regnskap's side of an invoice: the voucher we post, as the platform books it
(swagger names only), and the checks of its amounts and VAT."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from marshmallow import fields

from errors import RecordInvalid

from .fields import INVOICE_TEXTS, check_texts
from .moment import MomentInvoice
from .sb1 import CURRENCY_CODE, ChildOut, check_kid, given, looks_like_national_id
from .text import label, named, plain, shape

# --- invoices → vouchers -------------------------------------------------------------------
ORE = Decimal("0.01")


INVOICE_FINAL_STATUS = "FINALIZED"


PRODUCT_TYPES = ("HOURS", "EXPENSES", "PRODUCTS")


# Assumed (domain brief): the receivable is the customer's own ledger account, an Account
# whose CustomerID is the customer; the platform fills in 1500 and SubAccountID itself.
RECEIVABLE_ACCOUNT_FIELD = "CustomerID"


# Where a posted voucher is found again: its receivable line keeps the invoice number
# (verified: a real field of JournalEntryLine, set as Unimicro's web client sets it).
VOUCHER_LINES_ROUTE = "journalentrylines"


VOUCHER_KEY_FIELD = "InvoiceNumber"


# The largest amount the platform holds to the øre: it sends amounts as JSON numbers
# (swagger: double), exact to the øre only below 2**53 øre.
MAX_AMOUNT = Decimal(2 ** 53) / 100


# A VAT code as the platform numbers them (3, 31, 5, ...): only such a code is named
# outside the company's email; anything else by its shape.
VAT_CODE = r"[0-9]{1,3}"


# Text fields of a voucher line; longer text is cut (assumed limit).
DESCRIPTION_MAX = 250


@dataclass(frozen=True)
class VatRate:
    id: int
    percent: Decimal


def moment_vat(net: Decimal, percent: Decimal) -> Decimal:
    """Moment's VAT on a net amount (assumed: per VAT code on the code's total, half up)."""
    return (net * percent / 100).quantize(ORE, ROUND_HALF_UP)


def platform_vat(gross: Decimal, percent: Decimal) -> Decimal:
    """The VAT the platform splits out of one draft line's gross amount (it rounds per
    draft line, half up; the rest of the line stays on the line's own account)."""
    return (gross * percent / (100 + percent)).quantize(ORE, ROUND_HALF_UP)


def invoice_named(invoice: MomentInvoice) -> str:
    """"invoice 1001" in our own words; "the invoice" when its number could be a national
    identity number (the record is then named by its Moment id)."""
    number = str(invoice.invoice_number)
    return "the invoice" if looks_like_national_id(number) else f"invoice {number}"


def check_invoice(invoice: MomentInvoice) -> None:
    if not invoice.lines:
        raise RecordInvalid(f"{invoice_named(invoice)} has no lines", code="invoice-no-lines",
                            params={"number": invoice.invoice_number})
    unknown = sorted({ln.product_type for ln in invoice.lines} - set(PRODUCT_TYPES))
    if unknown:
        raise RecordInvalid(code="invoice-product-type",
                            params={"number": invoice.invoice_number, "types": ", ".join(label(u) for u in unknown)},
                            message=f"{invoice_named(invoice)} has lines of an unknown product type "
                            f"({'; '.join(shape(u) for u in unknown)}); known: {', '.join(PRODUCT_TYPES)}")
    if (invoice.currency_code or "NOK") != "NOK":
        raise RecordInvalid(
            f"{invoice_named(invoice)} is in currency {named(invoice.currency_code, CURRENCY_CODE)}; "
            "the integration posts invoices in NOK only", hint="Post this invoice by hand in SpareBank 1 Regnskap.",
            code="invoice-currency", params={"number": invoice.invoice_number,
                                             "currency": label(invoice.currency_code, 10)})
    if given(invoice.payment_id):
        check_kid(invoice.payment_id)
    check_texts(invoice, INVOICE_TEXTS)     # no control or bidi character in what the voucher says


class Money(fields.Field):
    """A Decimal on our side and on the wire: a JSON number with exactly two decimals,
    never a float (the client writes Decimals as numbers as they are)."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else value.quantize(ORE)


class DimensionsOut(ChildOut):
    project_id = fields.Integer()


class JournalLineOut(ChildOut):
    account_id = fields.Integer()
    amount = Money()
    financial_date = fields.Date()
    description = fields.String()
    vat_type_id = fields.Integer()
    invoice_number = fields.String()
    due_date = fields.Date()
    payment_id = fields.String()
    dimensions = fields.Nested(DimensionsOut)


class JournalEntryOut(ChildOut):
    description = fields.String()
    draft_lines = fields.List(fields.Nested(JournalLineOut))


SB1_JOURNAL_ENTRY = JournalEntryOut()


@dataclass(frozen=True)
class VatCheck:
    """Moment's VAT of one code against what the platform will book from our lines."""
    code: str
    moment: Decimal
    platform: Decimal
    lines: int              # draft lines carrying this code (the platform rounds each)

    @property
    def difference(self) -> Decimal:
        return self.platform - self.moment

    @property
    def acceptable(self) -> bool:
        """At most one øre per draft line: the platform's rounding, expected and reported."""
        return abs(self.difference) <= ORE * self.lines


@dataclass(frozen=True)
class Voucher:
    body: dict[str, Any]
    gross: Decimal                  # Moment's total including VAT: the receivable
    vat: tuple[VatCheck, ...]       # per VAT code with a rate


def voucher_text(invoice: MomentInvoice, detail: str | None = None) -> str:
    """Readable Norwegian text for a voucher line: "Faktura 10001 – Kontorbygg Lysaker"."""
    kind = "Kreditnota" if invoice_net(invoice) < 0 else "Faktura"
    detail = plain(detail if detail is not None else invoice.description)
    return plain(f"{kind} {invoice.invoice_number}" + (f" – {detail}" if detail else ""), DESCRIPTION_MAX)


def invoice_net(invoice: MomentInvoice) -> Decimal:
    return sum((ln.amount_excl_vat.quantize(ORE, ROUND_HALF_UP) for ln in invoice.lines), Decimal(0))


def _check_amount(invoice: MomentInvoice, amount: Decimal) -> Decimal:
    if abs(amount) >= MAX_AMOUNT:
        raise RecordInvalid(
            f"{invoice_named(invoice)} has an amount ({amount:.2f}) larger than SpareBank 1 "
            f"Regnskap can hold (below {MAX_AMOUNT:.2f})",
            hint="Check the amounts of the invoice in Moment; post it by hand if they are right.",
            code="invoice-amount", params={"number": invoice.invoice_number, "amount": amount})
    return amount


def voucher_body(invoice: MomentInvoice, *, receivable_id: int, revenue_ids: dict[str, int],
                 vat: dict[str, VatRate], project_id: int | None, guid: str) -> Voucher:
    """A finalized invoice as the platform books it (a credit note has negative amounts).

    * the debit: Moment's gross total on the customer's own ledger account, with the
      invoice number, the KID and the due date in their own fields;
    * per revenue account and VAT code, one credit of the gross amount with its VAT type:
      the platform splits the VAT onto the VAT code's account itself (no VAT lines of ours).

    Moment's VAT per code is divided over the code's credits so that they add up to
    Moment's gross; ``Voucher.vat`` compares it with what the platform will compute.
    """
    common: dict[str, Any] = {"financial_date": invoice.invoice_date}
    if project_id:
        common["dimensions"] = {"project_id": project_id}
    groups: dict[tuple[int, str], list] = {}
    for line in invoice.lines:
        net = _check_amount(invoice, line.amount_excl_vat.quantize(ORE, ROUND_HALF_UP))
        groups.setdefault((revenue_ids[line.product_type], line.vat_code), []).append((net, line))
    net_by_group = {key: sum((net for net, _ in items), Decimal(0)) for key, items in groups.items()}
    vat_by_group: dict[tuple[int, str], Decimal] = {}
    checks: list[VatCheck] = []
    for code in sorted({code for _, code in groups}):
        rate = vat[code].percent
        keys = sorted((key for key in groups if key[1] == code), key=lambda k: (-abs(net_by_group[k]), k))
        if all(ln.vat_amount is not None for k in keys for _, ln in groups[k]):
            # Moment said what the VAT is: that is what the customer was invoiced
            shares = {k: sum((ln.vat_amount.quantize(ORE, ROUND_HALF_UP) for _, ln in groups[k]), Decimal(0))
                      for k in keys}
            code_vat = sum(shares.values(), Decimal(0))
        else:
            code_vat = moment_vat(sum((net_by_group[k] for k in keys), Decimal(0)), rate)
            shares = {k: moment_vat(net_by_group[k], rate) for k in keys}
            shares[keys[0]] += code_vat - sum(shares.values())    # the rest on the largest
        vat_by_group.update(shares)
        if rate:
            booked = sum((platform_vat(net_by_group[k] + shares[k], rate) for k in keys), Decimal(0))
            checks.append(VatCheck(code, code_vat, booked, sum(1 for k in keys if net_by_group[k] + shares[k])))
    credits: list[dict[str, Any]] = []
    for key, items in groups.items():
        gross = _check_amount(invoice, net_by_group[key] + vat_by_group[key])
        if not gross:
            continue            # a line of 0,00 books nothing
        texts = [ln.item_text for _, ln in items if plain(ln.item_text)]
        detail = texts[0] if len(texts) == 1 else f"{len(items)} linjer, mva-kode {key[1]}"
        credits.append({"account_id": key[0], "amount": -gross, "vat_type_id": vat[key[1]].id,
                        "description": voucher_text(invoice, detail), **common})
    total = _check_amount(invoice, -sum((c["amount"] for c in credits), Decimal(0)))
    debit = {"account_id": receivable_id, "amount": total, "invoice_number": str(invoice.invoice_number),
             "due_date": invoice.due_date, "description": voucher_text(invoice), **common}
    if given(invoice.payment_id):
        debit["payment_id"] = invoice.payment_id
    body = SB1_JOURNAL_ENTRY.dump({"createguid": guid, "description": voucher_text(invoice),
                                   "draft_lines": [debit, *credits]})
    return Voucher(body, total, tuple(checks))
