"""The reconciliation's email to the company (``worker.reconcile.run``): one per run, only
when something needs a person, in Norwegian bokmål (or English): what differs between Moment
and SpareBank 1 Regnskap, and what to do. The only text of the reconciliation that shows
names and values as Moment and the books hold them (each finding's ``person``)."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from schemas.text import kroner, plain
from worker.notices.names import record_name

SUBJECT_PREFIX = "Moment → SpareBank 1 Regnskap: "
MONTHS = {"nb": ["januar", "februar", "mars", "april", "mai", "juni", "juli", "august", "september", "oktober",
                 "november", "desember"],
          "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
                 "November", "December"]}


def month_name(lang: str, month: str) -> str:
    year, mon = month.split("-")
    return f"{MONTHS[lang][int(mon) - 1]} {year}"


def _amount(value: Any) -> str:
    try:
        return kroner(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return "(mangler)" if value is None else plain(value, 80)


def _value(value: Any, lang: str) -> str:
    if value is None or value == "":
        return "(tomt)" if lang == "nb" else "(empty)"
    return f"«{plain(value, 120)}»" if lang == "nb" else f'"{plain(value, 120)}"'


def _line(lang: str, f) -> tuple[str, str]:
    """(what differs, what to do) for one finding."""
    nb = lang == "nb"
    p = f.person or {}
    if f.kind == "invoices" and f.status == "twice":
        return ((f"{f.record.replace('invoice', 'Faktura')} er bokført {f.books} ganger i SpareBank 1 Regnskap "
                 f"({f.note.replace('journal entries', 'bilag')}).",
                 "Reverser bilaget som er for mye, i SpareBank 1 Regnskap.") if nb else
                (f"{f.record.capitalize()} is booked {f.books} times in SpareBank 1 Regnskap ({f.note}).",
                 "Reverse the extra voucher in SpareBank 1 Regnskap."))
    if f.kind == "invoices":
        return ((f"{f.record.replace('invoice', 'Faktura')}: bilaget har kundefordring {_amount(f.books)}, men "
                 f"fakturaen i Moment er på {_amount(f.moment)}. Integrasjonen har ikke endret bilaget.",
                 "Et bokført bilag er dokumentasjon og endres ikke. Sjekk bilaget i SpareBank 1 Regnskap og "
                 "rett det der (krediter det og bokfør på nytt) hvis Moment har rett.") if nb else
                (f"{f.record.capitalize()}: its voucher has a receivable of {_amount(f.books)}, but the invoice in "
                 f"Moment is {_amount(f.moment)}. The integration has not changed the voucher.",
                 "A posted voucher is documentation and is not changed. Check it in SpareBank 1 Regnskap and "
                 "correct it there (credit it and post it again) if Moment is right."))
    if f.kind in ("revenue", "vat"):
        what = (("Inntekt på " + f.record.replace("account", "konto").replace("VAT code", "mva-kode"))
                if f.kind == "revenue" else ("Utgående mva for " + f.record.replace("VAT code", "mva-kode")))
        return ((f"{what}: Moment {_amount(f.moment)}, SpareBank 1 Regnskap {_amount(f.books)} (for fakturaene "
                 "fra Moment denne måneden).",
                 "Finn bilaget som avviker i SpareBank 1 Regnskap og rett det der.") if nb else
                (f"{f.kind.capitalize()} for {f.record}: Moment {_amount(f.moment)}, SpareBank 1 Regnskap "
                 f"{_amount(f.books)} (for this month's invoices from Moment).",
                 "Find the voucher that differs in SpareBank 1 Regnskap and correct it there."))
    name = record_name(lang, f.kind, {"number": p.get("number"), "name": p.get("name")})
    if f.status == "made-by-hand":
        return ((f"{name[0].upper() + name[1:]} finnes i SpareBank 1 Regnskap, men ikke i Moment.",
                 "Moment er master: opprett den i Moment hvis den skal være med, eller slett eller deaktiver "
                 "den i SpareBank 1 Regnskap.") if nb else
                (f"{name[0].upper() + name[1:]} is in SpareBank 1 Regnskap but not in Moment.",
                 "Moment is the master: create it in Moment if it belongs there, or delete or deactivate it in "
                 "SpareBank 1 Regnskap."))
    field = p.get("field") or f.field
    return ((f"{name[0].upper() + name[1:]}: {field} er {_value(p.get('books'), lang)} i SpareBank 1 Regnskap og "
             f"{_value(p.get('moment'), lang)} i Moment.",
             "Integrasjonen kunne ikke rette det nå og prøver igjen ved neste avstemming. Endringer gjøres i "
             "Moment.") if nb else
            (f"{name[0].upper() + name[1:]}: {field} is {_value(p.get('books'), lang)} in SpareBank 1 Regnskap "
             f"and {_value(p.get('moment'), lang)} in Moment.",
             "The integration could not correct it now and tries again at the next reconciliation. Make "
             "changes in Moment."))


def email_text(lang: str, month: str, findings: list) -> tuple[str, str]:
    """(subject, body) of the run's one email."""
    lang = lang if lang in MONTHS else "nb"
    nb = lang == "nb"
    when = month_name(lang, month)
    subject = (f"avstemmingen for {when} fant {len(findings)} avvik som trenger deg" if nb else
               f"the reconciliation of {when} found {len(findings)} difference(s) that need you")
    intro = (f"Hei!\n\nIntegrasjonen har avstemt {when} mellom Moment og SpareBank 1 Regnskap. Det meste "
             "stemmer, og det Moment eier, er rettet automatisk. Dette trenger deg:\n" if nb else
             f"Hello,\n\nThe integration has reconciled {when} between Moment and SpareBank 1 Regnskap. What "
             "Moment owns has been corrected automatically. This needs you:\n")
    items = []
    for i, f in enumerate(findings, 1):
        what, todo = _line(lang, f)
        items.append(f"{i}. {what}\n   {'Hva du gjør' if nb else 'What to do'}: {todo}")
    outro = ("\nDu får én slik e-post per avstemming, bare når noe trenger deg.\n" if nb else
             "\nYou get one such email per reconciliation, only when something needs you.\n")
    return SUBJECT_PREFIX + subject, intro + "\n" + "\n\n".join(items) + "\n" + outro
