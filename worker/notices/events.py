"""The company's email when a person changed or deleted, in SpareBank 1 Regnskap, a customer
or project that Moment owns (``tasks.events``): which record, which fields, that Moment's
values were written back, and that changes belong in Moment. Norwegian bokmål and English.

Fields are named by the books' field (``FIELDS``), as the company sees them in either system;
never their values (the company sees them in Moment).
"""
from __future__ import annotations

from schemas.text import plain
from worker.notices.names import noun, record_name, record_title

SUBJECT_PREFIX = "Moment → SpareBank 1 Regnskap: "
DELETED = "(deleted)"           # the "field" of a record deleted in the books
# the books' field (path in the PUT body) -> (Norwegian, English)
FIELDS = {
    "CustomerNumber": ("kundenummer", "customer number"),
    "OrgNumber": ("organisasjonsnummer", "organization number"),
    "WebUrl": ("nettside", "website"),
    "CurrencyCodeID": ("valuta", "currency"),
    "Info.Name": ("navn", "name"),
    "Info.DefaultEmail": ("e-postadresse", "email address"),
    "Info.DefaultPhone": ("telefonnummer", "phone number"),
    "Info.InvoiceAddress": ("fakturaadresse", "invoice address"),
    "Info.Phones": ("faksnummer", "fax number"),
    "ProjectNumber": ("prosjektnummer", "project number"),
    "ProjectNumberNumeric": ("prosjektnummer", "project number"),
    "Name": ("navn", "name"),
    "ProjectCustomerID": ("kunde", "customer"),
    "StartDate": ("startdato", "start date"),
    "EndDate": ("sluttdato", "end date"),
    "StatusCode": ("status", "status"),
}


def field_names(lang: str, fields: list[str]) -> list[str]:
    """The fields as a person knows them, each once, in the order given."""
    out: list[str] = []
    for name in fields:
        words = FIELDS.get(name)
        text = (words[0] if lang == "nb" else words[1]) if words else name
        if text not in out:
            out.append(text)
    return out


def _listed(lang: str, items: list[str]) -> str:
    quoted = [f"«{i}»" if lang == "nb" else f"\"{i}\"" for i in items]
    if len(quoted) < 2:
        return "".join(quoted)
    return f"{', '.join(quoted[:-1])} {'og' if lang == 'nb' else 'and'} {quoted[-1]}"


def changed_in_books(lang: str, company: str, data_type: str, person: dict, number: str | None,
                     fields: list[str]) -> tuple[str, str]:
    """(subject, body) of the one email for a change (or a delete, ``DELETED``) in the books."""
    company = plain(company, 60)
    record = record_name(lang, data_type, person)
    title = plain(record_title(lang, data_type, number), 60)
    deleted = DELETED in fields
    listed = _listed(lang, field_names(lang, [f for f in fields if f != DELETED]))
    n_def, plural = noun(lang, data_type, 1), noun(lang, data_type, 2)
    if lang == "nb":
        if deleted:
            subject = f"{title} ble slettet i SpareBank 1 Regnskap"
            what = (f"Noen slettet {record} i SpareBank 1 Regnskap, men {n_def} finnes fortsatt i Moment. "
                    f"Moment er master for {plural}.")
            todo = (f"Skal {n_def} bort, sletter eller avslutter du {n_def} i Moment. Skal {n_def} være med, "
                    f"lagrer du {n_def} på nytt i Moment; da opprettes {n_def} igjen i SpareBank 1 Regnskap. "
                    f"Endringer i {plural} gjør du i Moment, ikke i SpareBank 1 Regnskap.")
        else:
            subject = f"{title} ble endret i SpareBank 1 Regnskap"
            what = (f"Noen endret {listed} for {record} direkte i SpareBank 1 Regnskap. Moment er master for "
                    f"{plural}, så integrasjonen har skrevet verdiene fra Moment tilbake i SpareBank 1 Regnskap.")
            todo = (f"Gjør endringer i {plural} i Moment, ikke i SpareBank 1 Regnskap: de overføres da av seg selv. "
                    "Endringer gjort direkte i SpareBank 1 Regnskap blir overskrevet med verdiene fra Moment.")
        body = (f"Hei,\n\nIntegrasjonen mellom Moment og SpareBank 1 Regnskap (Moment-firma «{company}») "
                f"{'fant en endring i' if deleted else 'har rettet opp'} {record}.\n\n"
                f"Hva som skjedde:\n  {what}\n\nHva du må gjøre:\n  {todo}\n\n"
                "Denne e-posten er sendt av integrasjonen Moment → SpareBank 1 Regnskap.\n")
        return SUBJECT_PREFIX + subject, body
    if deleted:
        subject = f"{title} was deleted in SpareBank 1 Regnskap"
        what = (f"Someone deleted {record} in SpareBank 1 Regnskap, but Moment still has it. Moment is the "
                f"master of {plural}.")
        todo = (f"If the {noun(lang, data_type)} should go, delete or close it in Moment. If it should stay, save "
                f"it again in Moment; it is then created again in SpareBank 1 Regnskap. Make changes to {plural} "
                "in Moment, not in SpareBank 1 Regnskap.")
    else:
        subject = f"{title} was changed in SpareBank 1 Regnskap"
        what = (f"Someone changed the {listed} of {record} directly in SpareBank 1 Regnskap. Moment is the "
                f"master of {plural}, so the integration wrote Moment's values back to SpareBank 1 Regnskap.")
        todo = (f"Make changes to {plural} in Moment, not in SpareBank 1 Regnskap: they reach it by themselves. "
                "Changes made directly in SpareBank 1 Regnskap are overwritten with Moment's values.")
    body = (f"Hello,\n\nThe integration between Moment and SpareBank 1 Regnskap (Moment company \"{company}\") "
            f"{'found a change to' if deleted else 'has put right'} {record}.\n\n"
            f"What happened:\n  {what}\n\nWhat to do:\n  {todo}\n\n"
            "This message was sent by the Moment → SpareBank 1 Regnskap integration.\n")
    return SUBJECT_PREFIX + subject, body
