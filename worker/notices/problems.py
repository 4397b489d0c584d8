"""What each problem is called in Norwegian and what to do about it, by the error's ``code``
(set where the rule is checked) and its ``params``: ``(what is wrong, what to do)`` for the
company's email (``worker.notices.templates.problem``). English: ``worker.notices.values``.
A new rule adds its code here (or in a module of its own, merged at the end)."""
from __future__ import annotations

from decimal import Decimal
from typing import Callable

from schemas.sb1 import CUSTOMER_NUMBER_MAX, CUSTOMER_NUMBER_MIN
from schemas.text import kroner
from worker.notices.fieldtexts import NB_FIELD_PROBLEMS
from worker.notices.names import NOUNS, PRODUCT_TYPES, noun, record_name

OPERATOR = {"nb": "den som drifter integrasjonen", "en": "the operator of the integration"}


def _nb_customer_number(p: dict) -> str:
    return f"Endre kundenummeret i Moment til et tall mellom {CUSTOMER_NUMBER_MIN} og {CUSTOMER_NUMBER_MAX}."


def _nb_lookups(p: dict) -> tuple[str, str]:
    missing = [f"konto {number} (inntekt for {PRODUCT_TYPES['nb'].get(kind, kind.lower())})"
               for number, kind in p.get("accounts", [])]
    missing += [f"mva-kode {code}" for code in p.get("vat_codes", [])]
    return (f"Ingenting ble bokført: SpareBank 1 Regnskap mangler {', '.join(missing)}.",
            "Opprett dem i SpareBank 1 Regnskap med samme nummer og koder som i Moment. Be så "
            f"{OPERATOR['nb']} om å overføre fakturaen på nytt.")


def _nb_vat(p: dict) -> tuple[str, str]:
    parts = "; ".join(f"mva-kode {code}: Moment {kroner(moment)}, SpareBank 1 Regnskap ville bokført {kroner(booked)}"
                      for code, moment, booked in p["checks"])
    return (f"Faktura {p['number']} ble ikke bokført: mva-en stemmer ikke med det SpareBank 1 Regnskap "
            f"regner ut ({parts}).",
            "Sjekk mva-kodene og beløpene på fakturaen i Moment, og at mva-kodene har samme sats i "
            "SpareBank 1 Regnskap. Bokfør fakturaen for hånd hvis Moment har rett.")


def _nb_shared(p: dict) -> tuple[str, str]:
    dt = p["noun"]
    n, n_def, plural, number_name = NOUNS["nb"][dt]
    this = record_name("nb", dt, p["this"]) if isinstance(p.get("this"), dict) else p.get("this")
    other = record_name("nb", dt, p["other"]) if isinstance(p.get("other"), dict) else p.get("other")
    return (f"To {plural} i Moment har samme {number_name} {p['number']}: {this} og {other}. "
            f"SpareBank 1 Regnskap har bare én {n} per nummer, og den hører til den som kom først. "
            "Ingenting ble skrevet.",
            f"Gi en av dem et annet {number_name} i Moment. Den som allerede er i SpareBank 1 Regnskap, "
            "blir stående som den er.")


NB_PROBLEMS: dict[str, Callable[[dict], tuple[str, str]]] = {
    "customer-number-missing": lambda p: ("Kunden har ikke noe kundenummer i Moment.", _nb_customer_number(p)),
    "customer-number-not-digits": lambda p: (
        f"Kundenummeret {p['value']} er ikke et tall. SpareBank 1 Regnskap godtar bare sifrene 0–9, "
        f"mellom {CUSTOMER_NUMBER_MIN} og {CUSTOMER_NUMBER_MAX}.", _nb_customer_number(p)),
    "customer-number-range": lambda p: (
        f"Kundenummeret {p['value']} er utenfor det tillatte området "
        f"{CUSTOMER_NUMBER_MIN}–{CUSTOMER_NUMBER_MAX}.", _nb_customer_number(p)),
    "name-missing": lambda p: (f"{noun('nb', p['noun']).capitalize()} {p['number']} har ikke noe navn.",
                               f"Gi {noun('nb', p['noun'], 1)} et navn i Moment."),
    "org-number-format": lambda p: (
        f"Organisasjonsnummeret {p['value']} må være ni sifre (uten mellomrom).",
        "Rett organisasjonsnummeret i Moment. Slå det opp i Brønnøysundregistrene (brreg.no) hvis du er usikker."),
    "org-number-check": lambda p: (
        f"Organisasjonsnummeret {p['value']} har feil kontrollsiffer (MOD11). Det er trolig skrevet feil.",
        "Rett organisasjonsnummeret i Moment. Slå det opp i Brønnøysundregistrene (brreg.no) hvis du er usikker."),
    "kid-format": lambda p: (f"KID {p['value']} må være {p['low']}–{p['high']} sifre.",
                             "Rett KID-en på fakturaen i Moment, og lagre eller fullfør den på nytt."),
    "kid-check": lambda p: (
        f"KID {p['value']} har feil kontrollsiffer (verken MOD10 eller MOD11). Banken ville avvist betalingen.",
        "Rett KID-en på fakturaen i Moment, og lagre eller fullfør den på nytt."),
    "project-number": lambda p: (
        f"Prosjektnummeret {p['value']} kan bare inneholde sifrene 0–9 (høyst 18, og ikke 0 først).",
        "Endre prosjektnummeret i Moment til bare sifre, for eksempel 1042."),
    "project-customer-missing": lambda p: ("Prosjektet har ingen kunde i Moment.",
                                           "Velg en kunde for prosjektet i Moment."),
    "project-state": lambda p: (f"Integrasjonen kjenner ikke prosjektstatusen {p['value']}.",
                                f"Velg en annen status for prosjektet i Moment, eller kontakt {OPERATOR['nb']}."),
    "invoice-no-lines": lambda p: (f"Faktura {p['number']} har ingen linjer.", "Legg til linjer på fakturaen i Moment."),
    "invoice-product-type": lambda p: (
        f"Faktura {p['number']} har linjer med en produkttype integrasjonen ikke kjenner ({p['types']}).",
        "Bruk timer, utlegg eller varer som produkttype på linjene i Moment."),
    "invoice-currency": lambda p: (
        f"Faktura {p['number']} er i valutaen {p['currency']}, som SpareBank 1 Regnskap ikke kjenner. "
        "Ingenting ble bokført.",
        f"Legg inn valutaen i SpareBank 1 Regnskap, og be så {OPERATOR['nb']} om å overføre fakturaen på nytt. "
        "Eller bokfør fakturaen for hånd."),
    "invoice-amount": lambda p: (
        f"Faktura {p['number']} har et beløp ({kroner(Decimal(str(p['amount'])))}) som er større enn "
        "SpareBank 1 Regnskap kan lagre.",
        "Sjekk beløpene på fakturaen i Moment. Bokfør den for hånd hvis de er riktige."),
    "currency-unknown": lambda p: (f"Valutakoden {p['value']} finnes ikke i SpareBank 1 Regnskap.",
                                   "Bruk en valuta som SpareBank 1 Regnskap kjenner, eller legg den inn der først."),
    "moment-unreadable": lambda p: (
        f"Moment sendte en {noun('nb', p['noun'])} som integrasjonen ikke kan lese (feltene {p['fields']}).",
        f"Åpne {noun('nb', p['noun'], 1)} i Moment og sjekk disse feltene. Kontakt {OPERATOR['nb']} "
        "hvis alt ser riktig ut."),
    "number-taken": lambda p: (
        f"SpareBank 1 Regnskap har allerede en annen {noun('nb', p['noun'])} med "
        f"{noun('nb', p['noun'], 3)} {p['number']}. Ingenting ble skrevet.",
        f"Gi {noun('nb', p['noun'], 1)} et annet nummer i Moment, eller endre nummeret i SpareBank 1 "
        "Regnskap hvis den andre ikke skal være der."),
    "number-shared": _nb_shared,
    "dependency-missing": lambda p: (f"{noun('nb', p['noun'], 1).capitalize()} den hører til, finnes ikke i Moment.",
                                     f"Velg en {noun('nb', p['noun'])} som finnes i Moment."),
    "lookups-missing": _nb_lookups,
    "receivable-missing": lambda p: ("Kunden har ingen kundekonto (kundereskontro) i SpareBank 1 Regnskap.",
                                     f"Kontakt {OPERATOR['nb']}."),
    "vat-mismatch": _nb_vat,
    "credentials": lambda p: ("SpareBank 1 Regnskap avviste integrasjonens egen innlogging.",
                              f"Du trenger ikke gjøre noe; {OPERATOR['nb']} er varslet."),
}
NB_PROBLEMS.update(NB_FIELD_PROBLEMS)       # a field refused before it reaches the books


def _http(p: dict) -> str:
    return f" (HTTP {p['status']})" if p.get("status") else ""


_POSTED = "Fakturaen er bokført, men"
NB_PROBLEMS.update({        # an invoice's PDF on its voucher (tasks/documents.py)
    "document-fetch": lambda p: (
        f"{_POSTED} PDF-en av den kunne ikke hentes fra Moment{_http(p)}, så den er ikke lagt ved bilaget.",
        f"Du trenger ikke gjøre noe med fakturaen. Når Moment svarer igjen, kan {OPERATOR['nb']} legge ved "
        "PDF-en på nytt. Kontakt dem hvis dette skjer ofte."),
    "document-missing": lambda p: (
        f"{_POSTED} Moment har ingen PDF av den, så bilaget har ingen faktura ved seg.",
        f"Sjekk fakturaen i Moment, og be {OPERATOR['nb']} om å legge ved PDF-en på nytt når Moment har den."),
    "document-not-pdf": lambda p: (
        f"{_POSTED} det Moment sendte som PDF av den, var ikke en PDF. Den er ikke lagt ved bilaget.",
        f"Videresend denne e-posten til {OPERATOR['nb']}."),
    "document-not-stored": lambda p: (
        f"{_POSTED} filtjenesten til SpareBank 1 Regnskap lagret ikke PDF-en av den, så den er ikke lagt "
        "ved bilaget.", f"Videresend denne e-posten til {OPERATOR['nb']}."),
    "document-attach": lambda p: (
        f"{_POSTED} PDF-en av den kunne ikke legges ved bilaget i SpareBank 1 Regnskap{_http(p)}.",
        f"Du trenger ikke gjøre noe med fakturaen; {OPERATOR['nb']} kan legge ved PDF-en på nytt. Kontakt "
        "dem hvis dette skjer ofte."),
})
