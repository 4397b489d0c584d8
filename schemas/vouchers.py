"""SpareBank 1 Regnskap's side of an invoice: the voucher we post, as the platform books it
(swagger names only), and the checks of its amounts and VAT."""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any

from marshmallow import fields

from errors import RecordInvalid

from .fields import INVOICE_TEXTS, check_texts
from .moment import MomentInvoice
from .sb1 import CURRENCY_CODE, DEFAULT_CURRENCY, ChildOut, check_kid, given, looks_like_national_id
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


# The exchange rate a line states (CurrencyExchangeRate): NOK per one unit, to this many
# decimals (Norges Bank's per-100 quotes have 4: 98.5432 SEK -> 0.985432). Each line's NOK
# amount is its currency amount times this stated rate, so a reader can redo it.
RATE_DECIMALS = Decimal("1e-10")


@dataclass(frozen=True)
class Currency:
    """The invoice's currency as the books know it, and the rate its NOK amounts are booked
    at: ``rate`` NOK per ``factor`` units (Norges Bank quotes SEK, DKK, JPY per 100)."""
    code: str
    id: int                         # the books' CurrencyCodeID
    rate: Decimal
    factor: Decimal = Decimal(1)
    source: str = "Moment"          # whose rate: "Moment" (the invoice's) or "SpareBank 1 Regnskap"

    @property
    def unit_rate(self) -> Decimal:
        """NOK per one unit, as the lines state it (CurrencyExchangeRate)."""
        return (self.rate / self.factor).quantize(RATE_DECIMALS, ROUND_HALF_UP).normalize()

    def nok(self, amount: Decimal) -> Decimal:
        """An amount in the currency in NOK, rounded half up to the øre."""
        return (amount * self.unit_rate).quantize(ORE, ROUND_HALF_UP)

    @property
    def slack(self) -> Decimal:
        """What one line's VAT may differ by in NOK beyond the platform's øre: Moment rounds
        its VAT to a cent of the currency (up to half a cent, times the rate, each way)."""
        return (ORE * self.unit_rate).quantize(ORE, ROUND_CEILING)


def in_nok(invoice: MomentInvoice) -> bool:
    """An invoice in the company's own currency (no currency code: the company's)."""
    return (invoice.currency_code or DEFAULT_CURRENCY) == DEFAULT_CURRENCY


def unknown_currency(invoice: MomentInvoice) -> RecordInvalid:
    """The one refusal of a currency: the books do not know it (or it is no currency code)."""
    return RecordInvalid(
        f"{invoice_named(invoice)} is in currency {named(invoice.currency_code, CURRENCY_CODE)}, which "
        "SpareBank 1 Regnskap does not know; nothing was posted",
        hint="Set the currency up in SpareBank 1 Regnskap, then ask the operator of the integration to "
             "transfer the invoice again. Or post the invoice by hand.",
        code="invoice-currency", params={"number": invoice.invoice_number, "currency": label(invoice.currency_code, 10)})


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
    if not in_nok(invoice) and not re.fullmatch(CURRENCY_CODE, invoice.currency_code or ""):
        raise unknown_currency(invoice)     # no code the books could know: not looked up
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
    amount_currency = Money()                   # the amount in the invoice's currency
    currency_code_id = fields.Integer()
    currency_exchange_rate = fields.Decimal()   # NOK per one unit (Currency.unit_rate)
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
    moment: Decimal         # in NOK (an invoice in another currency: Moment's VAT at the rate)
    platform: Decimal       # in NOK, as the platform splits it out of each line's NOK gross
    lines: int              # draft lines carrying this code (the platform rounds each)
    slack: Decimal = Decimal(0)     # per line, beyond the øre: Moment's rounding in its currency

    @property
    def difference(self) -> Decimal:
        return self.platform - self.moment

    @property
    def acceptable(self) -> bool:
        """At most one øre per draft line: the platform's rounding, expected and reported."""
        return abs(self.difference) <= (ORE + self.slack) * self.lines


@dataclass(frozen=True)
class Voucher:
    body: dict[str, Any]
    gross: Decimal                  # the receivable in NOK: Moment's gross (in NOK), or the credits' sum
    vat: tuple[VatCheck, ...]       # per VAT code with a rate
    gross_currency: Decimal | None = None   # Moment's gross in its currency (another than NOK)


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
                 vat: dict[str, VatRate], project_id: int | None, guid: str,
                 currency: Currency | None = None) -> Voucher:
    """A finalized invoice as the platform books it (a credit note has negative amounts).

    * the debit: Moment's gross total on the customer's own ledger account, with the
      invoice number, the KID and the due date in their own fields;
    * per revenue account and VAT code, one credit of the gross amount with its VAT type:
      the platform splits the VAT onto the VAT code's account itself (no VAT lines of ours).

    Moment's VAT per code is divided over the code's credits so that they add up to
    Moment's gross; ``Voucher.vat`` compares it with what the platform will compute.

    An invoice in another ``currency``: every line also states its amount in the currency
    (``AmountCurrency``), the currency and the rate; ``Amount`` is each credit's gross in the
    currency at the rate, rounded half up to the øre, and the receivable the sum of the
    credits (so the voucher balances in NOK; it may differ from Moment's gross at the rate by
    up to half an øre per credit). The receivable's ``AmountCurrency`` is Moment's gross in
    the currency, the sum of the credits' ``AmountCurrency``. The VAT is checked in NOK.
    """
    common: dict[str, Any] = {"financial_date": invoice.invoice_date}
    if currency is not None:
        common.update(currency_code_id=currency.id, currency_exchange_rate=currency.unit_rate)
    nok = currency.nok if currency is not None else (lambda amount: amount)
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
            booked = sum((platform_vat(nok(net_by_group[k] + shares[k]), rate) for k in keys), Decimal(0))
            checks.append(VatCheck(code, nok(code_vat), booked, sum(1 for k in keys if net_by_group[k] + shares[k]),
                                   currency.slack if currency is not None else Decimal(0)))
    credits: list[dict[str, Any]] = []
    for key, items in groups.items():
        gross = _check_amount(invoice, net_by_group[key] + vat_by_group[key])
        if not gross:
            continue            # a line of 0,00 books nothing
        texts = [ln.item_text for _, ln in items if plain(ln.item_text)]
        detail = texts[0] if len(texts) == 1 else f"{len(items)} linjer, mva-kode {key[1]}"
        credit = {"account_id": key[0], "amount": -_check_amount(invoice, nok(gross)), "vat_type_id": vat[key[1]].id,
                  "description": voucher_text(invoice, detail), **common}
        if currency is not None:
            credit["amount_currency"] = -gross
        credits.append(credit)
    total = _check_amount(invoice, -sum((c["amount"] for c in credits), Decimal(0)))
    debit = {"account_id": receivable_id, "amount": total, "invoice_number": str(invoice.invoice_number),
             "due_date": invoice.due_date, "description": voucher_text(invoice), **common}
    total_currency = None
    if currency is not None:
        total_currency = debit["amount_currency"] = -sum((c["amount_currency"] for c in credits), Decimal(0))
    if given(invoice.payment_id):
        debit["payment_id"] = invoice.payment_id
    body = SB1_JOURNAL_ENTRY.dump({"createguid": guid, "description": voucher_text(invoice),
                                   "draft_lines": [debit, *credits]})
    return Voucher(body, total, tuple(checks), total_currency)
