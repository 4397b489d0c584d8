"""The words of the company's email that show what Moment or the platform holds: the
English problems that show the value they refuse, and the other system's own words.

A refused value (a customer number as it was typed, an organization number) appears in the
company's email only: the error's own words (its ``str()``, which logs, Sentry, dead
letters and history carry) name it by its shape ("11 digits"). So the English email says
these problems here, from the error's ``params``; the Norwegian ones are in
``worker.notices.templates`` with every other problem. Likewise the other system's own
words (an error's ``detail``, which may quote a name or an email address) are said here.
"""
from __future__ import annotations

from typing import Callable

from schemas.sb1 import CUSTOMER_NUMBER_MAX, CUSTOMER_NUMBER_MIN
from schemas.text import plain

SERVICES_NB = {"Moment": "Moment", "SpareBank 1 Regnskap": "SpareBank 1 Regnskap",
               "SpareBank 1 identity server": "innloggingstjenesten til SpareBank 1 Regnskap",
               "Moment (invoice PDF)": "Moment (faktura-PDF)",
               "SpareBank 1 Regnskap (Files)": "filtjenesten til SpareBank 1 Regnskap"}


def said_by(lang: str, detail: str, service: str | None) -> str:
    """The other system's own words: «SpareBank 1 Regnskap svarte: "…"»."""
    who = SERVICES_NB.get(service or "", service) if lang == "nb" else service
    return (f"{who or 'Den andre tjenesten'} svarte: «{plain(detail, 500)}»" if lang == "nb"
            else f"{who or 'The other system'} said: \"{plain(detail, 500)}\"")


_EN_CUSTOMER_RULE = (f"SpareBank 1 Regnskap needs a customer number of six digits (0-9) between "
                     f"{CUSTOMER_NUMBER_MIN} and {CUSTOMER_NUMBER_MAX}.")
_EN_PROJECT_RULE = ("SpareBank 1 Regnskap needs a project number made of digits only (1 to 18, not "
                    "starting with 0).")

# Problems whose English text shows a value (for the rest, the error's own words serve)
EN_PROBLEMS: dict[str, Callable[[dict], str]] = {
    "customer-number-not-digits": lambda p: (
        f"customer number {p['value']} is not a number (only the digits 0-9). {_EN_CUSTOMER_RULE}"),
    "customer-number-range": lambda p: (
        f"customer number {p['value']} is outside the allowed range. {_EN_CUSTOMER_RULE}"),
    "org-number-format": lambda p: f"organization number {p['value']} must be nine digits (0-9, no spaces)",
    "org-number-check": lambda p: (
        f"organization number {p['value']} has a wrong check digit (MOD11); it is probably mistyped"),
    "kid-format": lambda p: f"KID {p['value']} must be {p['low']}-{p['high']} digits (0-9)",
    "kid-check": lambda p: (
        f"KID {p['value']} has a wrong check digit (neither MOD10 nor MOD11); the bank would refuse the payment"),
    "project-number": lambda p: f"project number {p['value']} {p['why']}. {_EN_PROJECT_RULE}",
    "project-state": lambda p: f"project state {p['value']} is not one the integration knows",
    "invoice-product-type": lambda p: (
        f"invoice {p['number']} has lines of an unknown product type ({p['types']}); known: "
        "HOURS, EXPENSES, PRODUCTS"),
    "invoice-currency": lambda p: (
        f"invoice {p['number']} is in currency {p['currency']}, which SpareBank 1 Regnskap does not know; "
        "nothing was posted"),
    "currency-unknown": lambda p: f"currency code {p['value']} does not exist in SpareBank 1 Regnskap",
    "document-fetch": lambda p: ("the invoice is posted, but its PDF could not be read from Moment"
                                 + (f" (HTTP {p['status']})" if p.get("status") else "")
                                 + ", so it is not attached to the voucher"),
    "document-missing": lambda p: "the invoice is posted, but Moment has no PDF of it to attach to the voucher",
    "document-not-pdf": lambda p: "the invoice is posted, but what Moment sent as its PDF is not a PDF",
    "document-not-stored": lambda p: ("the invoice is posted, but SpareBank 1 Regnskap's file service did not "
                                      "store its PDF, so it is not attached to the voucher"),
    "document-attach": lambda p: ("the invoice is posted, but its PDF could not be attached to the voucher"
                                  + (f" (HTTP {p['status']})" if p.get("status") else "")),
    "lookups-missing": lambda p: "nothing was posted: SpareBank 1 Regnskap has no " + ", no ".join(
        [f"account {n} (revenue for {kind.lower()})" for n, kind in p["accounts"]]
        + [f"VAT code {code}" for code in p["vat_codes"]]),
}
