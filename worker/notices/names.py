"""How a person's email names records: nouns per language, "kunde Fjord Bygg AS (kundenummer
100001)"."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from schemas.datatypes import DATA_TYPES
from schemas.text import kroner, plain

LANGUAGES = ("nb", "en")

# language -> data type -> (noun, the noun with its article, plural, what its number is called)
NOUNS = {lang: {name: t.nouns[lang] for name, t in DATA_TYPES.items()} for lang in LANGUAGES}
PRODUCT_TYPES = {"nb": {"HOURS": "timer", "EXPENSES": "utlegg", "PRODUCTS": "varer"},
                 "en": {"HOURS": "hours", "EXPENSES": "expenses", "PRODUCTS": "products"}}


def noun(lang: str, data_type: str, form: int = 0) -> str:
    return NOUNS[lang][data_type][form]


def record_name(lang: str, data_type: str, person: dict[str, Any]) -> str:
    """A record as its company knows it: "kunde Fjord Bygg AS (kundenummer 100001)"."""
    n, _, _, number_name = NOUNS[lang][data_type]
    if not person.get("number") and not person.get("name") and person.get("moment_id"):
        return f"{n} {'med Moment-id' if lang == 'nb' else 'with Moment id'} {person['moment_id']}"
    number = person.get("number") or ("(mangler)" if lang == "nb" else "(missing)")
    if data_type == "invoices":
        facts = [f"{noun(lang, 'customers', 3)} {person['customer_number']}"] if person.get("customer_number") else []
        if person.get("net") is not None:
            facts.append(f"{kroner(Decimal(str(person['net'])))} {'eks. mva.' if lang == 'nb' else 'excluding VAT'}")
        return f"{n} {number}" + (f" ({', '.join(facts)})" if facts else "")
    name = plain(person.get("name"), 80)
    return f"{n} {name} ({number_name} {number})" if name else f"{n} {number_name} {number}"


def record_title(lang: str, data_type: str, number: str | None) -> str:
    """For a subject line: "Kunde 100001"."""
    return f"{noun(lang, data_type).capitalize()} {number or ''}".strip()
