"""Every text a person reads in an email, in Norwegian bokmål (the default) and English.

One place for the words: the subjects and bodies of the company's failure emails (one
record, or a digest of many), the outage notices, and what each problem is called and
what to do about it. A problem is named by the ``code`` of the error (set where the rule
is checked) and its ``params``; errors without a code are described by their kind.
The company's email is the only text that shows a value from Moment (``EN_PROBLEMS``).

Tone (see ``norsk.md`` in the domain brief, ``../shared/domain/``): "du", short sentences, the record and the exact
field named, what to change and where: in Moment (the master) or in SpareBank 1 Regnskap.
No operator commands in a company's email.
"""
from __future__ import annotations

from errors import AuthError, IntegrationError, PermanentError, RecordInvalid
from schemas.text import plain
from worker.notices.names import noun, record_name, record_title
from worker.notices.problems import NB_PROBLEMS, OPERATOR
from worker.notices.values import EN_PROBLEMS, SERVICES_NB, said_by

__all__ = ["EN_PROBLEMS", "NB_PROBLEMS", "DIGEST_LIMIT", "digest_body", "digest_subject", "failure_body",
           "failure_subject", "fleet_operator_notice", "group_of", "operator_notice", "outage_notice", "problem",
           "record_name"]

SUBJECT_PREFIX = "Moment → SpareBank 1 Regnskap: "

# --- problems: (what is wrong, what to do; the texts: worker.notices.problems) ------------

def problem(lang: str, exc: BaseException, kind: str, error: str) -> tuple[str, str]:
    """(what is wrong, what to do) for the company's email, in its language. ``error`` is
    our English description (the same words the log and the dead letter carry)."""
    code = getattr(exc, "code", None)
    params = getattr(exc, "params", None) or {}
    if code == "dependency":
        inner = params["inner"]
        what, todo = problem(lang, inner, type(inner).__name__, str(inner))
        if lang == "en":
            return f"its {noun('en', params['noun'])} could not be transferred first: {what}", _todo_en(exc, kind)
        return (f"{noun('nb', params['noun'], 1).capitalize()} den hører til, måtte overføres først, "
                f"men kunne ikke: {what}", todo)
    if lang == "en":
        return (EN_PROBLEMS[code](params) if code in EN_PROBLEMS else error), _todo_en(exc, kind)
    if code in NB_PROBLEMS:
        return NB_PROBLEMS[code](params)
    service = SERVICES_NB.get(getattr(exc, "service", None) or "", "Den andre tjenesten")
    if kind == "retries-exhausted":
        return (f"{service} svarte ikke som den skulle på en stund (integrasjonen ga opp etter "
                f"{params.get('tries', 'flere')} forsøk).",
                f"Du trenger ikke gjøre noe hvis det virker igjen; {OPERATOR['nb']} kan overføre posten på "
                "nytt. Kontakt dem hvis dette skjer ofte.")
    if kind == "busy":
        return ("En annen overføring av samme post holdt den for lenge.",
                f"Du trenger ikke gjøre noe; {OPERATOR['nb']} kan overføre posten på nytt.")
    if isinstance(exc, AuthError):
        if (getattr(exc, "service", "") or "").startswith("Moment"):
            return ("Moment avviste integrasjonens API-nøkkel.",
                    f"Lag en ny API-nøkkel i Moment og gi den til {OPERATOR['nb']}.")
        return ("SpareBank 1 Regnskap avviste integrasjonen.",
                "Sjekk i SpareBank 1 Regnskap at integrasjonen «Moment Team» er aktivert i markedsplassen, og "
                "at firmanøkkelen i Moments integrasjonsinnstillinger er den samme som under «?» → "
                "«Systeminformasjon».")
    if isinstance(exc, RecordInvalid):
        return (f"{service} avviste posten (HTTP {exc.status})." if exc.status else f"{service} avviste posten.",
                "Rett posten i Moment (Moment er master); den overføres på nytt når den lagres. Gjelder "
                "meldingen en konto, en mva-kode eller en valuta, må den legges inn i SpareBank 1 Regnskap først.")
    if isinstance(exc, PermanentError):
        return (f"{service} svarte med en feil som ikke går over av seg selv"
                + (f" (HTTP {exc.status})." if exc.status else "."),
                f"Videresend denne e-posten til {OPERATOR['nb']}.")
    return ("En uventet feil i integrasjonen.", f"Videresend denne e-posten til {OPERATOR['nb']}; de har detaljene.")


def _todo_en(exc: BaseException, kind: str) -> str:
    if isinstance(exc, IntegrationError) and exc.hint:
        return exc.hint
    service = getattr(exc, "service", None) or ""
    if kind == "retries-exhausted":
        return (f"{service or 'The other system'} did not answer properly for a while. Nothing is "
                "needed from you if it works again; the operator can transfer the record again. If this "
                "keeps happening, contact the operator of the integration.")
    if kind == "busy":
        return "Nothing is needed from you; the operator can transfer the record again."
    if isinstance(exc, AuthError):
        if service.startswith("Moment"):
            return ("Moment refused the integration's API key. Create a new API key in Moment and "
                    "give it to the operator of the integration.")
        return ("SpareBank 1 Regnskap refused the integration. Check in SpareBank 1 Regnskap that "
                "the integration \"Moment Team\" is activated in the marketplace, and that the company "
                "key in Moment's integration settings matches \"?\" → \"Systeminformasjon\".")
    if isinstance(exc, RecordInvalid):
        return ("Correct the record in Moment (Moment is the master); it is transferred again when "
                "it is saved. If the message is about an account, VAT code or currency, set it up "
                "in SpareBank 1 Regnskap first.")
    if isinstance(exc, PermanentError):
        return ("Check the message above. If it is not clear what to change, forward this email "
                "to the operator of the integration.")
    return "Forward this email to the operator of the integration; they have the details."


def group_of(exc: BaseException, kind: str) -> str:
    """What makes two failures "the same problem": for the digest and for Sentry."""
    code = getattr(exc, "code", None)
    if code == "dependency":
        inner = (getattr(exc, "params", None) or {}).get("inner")
        return f"dependency/{group_of(inner, type(inner).__name__)}" if inner is not None else code
    if code:
        return code
    status = getattr(exc, "status", None)
    return f"{kind}/{status}" if status else kind


# --- emails -------------------------------------------------------------------------------

def failure_subject(lang: str, data_type: str, number: str | None) -> str:
    title = plain(record_title(lang, data_type, number), 60)
    return SUBJECT_PREFIX + (f"{title} ble ikke overført" if lang == "nb" else f"{title} was not transferred")


def failure_body(lang: str, company: str, record: str, what: str, todo: str, detail: str | None,
                 service: str | None) -> str:
    company = plain(company, 60)
    said = f"{said_by(lang, detail, service)}\n\n" if detail else ""
    if lang == "nb":
        return (f"Hei,\n\nIntegrasjonen mellom Moment og SpareBank 1 Regnskap (Moment-firma «{company}») "
                f"kunne ikke overføre {record}.\n\nHva som er galt:\n  {what}\n\nHva du må gjøre:\n  {todo}\n\n"
                f"{said}Resten av overføringene går som vanlig. Posten er lagt til side og overføres på nytt "
                "neste gang den endres i Moment.\n\n"
                "Denne e-posten er sendt av integrasjonen Moment → SpareBank 1 Regnskap.\n")
    return (f"Hello,\n\nThe integration between Moment and SpareBank 1 Regnskap (Moment company \"{company}\") "
            f"could not transfer {record}.\n\nWhat went wrong:\n  {what}\n\nWhat to do:\n  {todo}\n\n"
            f"{said}Nothing else is held up: other records keep being transferred. This record is kept "
            "and will be transferred again the next time it changes in Moment, or when the operator of "
            "the integration transfers it again.\n\n"
            "This message was sent by the Moment → SpareBank 1 Regnskap integration.\n")


DIGEST_LIMIT = 200      # records listed in one digest; the rest are counted


def digest_subject(lang: str, count: int) -> str:
    if lang == "nb":
        return SUBJECT_PREFIX + (f"{count} poster ble ikke overført" if count != 1 else "1 post ble ikke overført")
    return SUBJECT_PREFIX + (f"{count} records were not transferred" if count != 1 else "1 record was not transferred")


def digest_body(lang: str, company: str, minutes: int, items: list[dict]) -> str:
    """Failures collected over a window, grouped by problem: each group says once what to
    do, then lists its records with what is wrong with each."""
    company = plain(company, 60)
    groups: dict[tuple[str, str], list[dict]] = {}
    for item in sorted(items, key=lambda i: i.get("at", 0)):
        groups.setdefault((item["group"], item["todo"]), []).append(item)
    parts, shown_count = [], 0
    for (_, todo), members in sorted(groups.items(), key=lambda g: -len(g[1])):
        head = (f"{len(members)} {'post' if len(members) == 1 else 'poster'} – hva du må gjøre: {todo}"
                if lang == "nb" else
                f"{len(members)} {'record' if len(members) == 1 else 'records'} – what to do: {todo}")
        lines = [head]
        for item in members:
            if shown_count >= DIGEST_LIMIT:
                break
            said = f" {said_by(lang, item['detail'], item.get('service'))}" if item.get("detail") else ""
            lines.append(f"  • {item['record']}: {item['what']}{said}")
            shown_count += 1
        parts.append("\n".join(lines))
    rest = len(items) - shown_count
    more = ""
    if rest > 0:
        more = (f"\n… og {rest} til. {OPERATOR['nb'].capitalize()} har hele listen.\n" if lang == "nb"
                else f"\n… and {rest} more. The operator of the integration has the whole list.\n")
    if lang == "nb":
        return (f"Hei,\n\nIntegrasjonen mellom Moment og SpareBank 1 Regnskap (Moment-firma «{company}») kunne "
                f"ikke overføre disse postene de siste {minutes} minuttene. De er lagt til side og overføres "
                "på nytt neste gang de endres i Moment. Resten går som vanlig.\n\n"
                + "\n\n".join(parts) + "\n" + more +
                "\nDenne e-posten er sendt av integrasjonen Moment → SpareBank 1 Regnskap.\n")
    return (f"Hello,\n\nThe integration between Moment and SpareBank 1 Regnskap (Moment company \"{company}\") "
            f"could not transfer these records in the last {minutes} minutes. They are kept and will be "
            "transferred again the next time they change in Moment. Everything else goes on.\n\n"
            + "\n\n".join(parts) + "\n" + more +
            "\nThis message was sent by the Moment → SpareBank 1 Regnskap integration.\n")


# --- outages --------------------------------------------------------------------------------

SERVICE_NAMES = {"nb": {"moment": "Moment", "sb1": "SpareBank 1 Regnskap",
                        "identity": "innloggingstjenesten til SpareBank 1 Regnskap"},
                 "en": {"moment": "Moment", "sb1": "SpareBank 1 Regnskap",
                        "identity": "SpareBank 1 Regnskap's login service"}}


def outage_notice(lang: str, company: str, service: str, reason: str, since: str, over: bool) -> tuple[str, str]:
    """(subject, body) for a company: a service has been away a while, or it is back; or
    its own access (company key, API key) was refused."""
    company = plain(company, 60)
    name = SERVICE_NAMES[lang][service]
    if lang == "nb":
        if over:
            return (SUBJECT_PREFIX + f"overføringene går igjen ({name})",
                    f"Hei,\n\n{name} svarer igjen, og integrasjonen mellom Moment og SpareBank 1 Regnskap "
                    f"(Moment-firma «{company}») overfører igjen det som ventet siden {since}. Ingenting gikk "
                    "tapt, og du trenger ikke gjøre noe.\n\n"
                    "Denne e-posten er sendt av integrasjonen Moment → SpareBank 1 Regnskap.\n")
        if reason == "access":
            todo = ("Lag en ny API-nøkkel i Moment og gi den til den som drifter integrasjonen."
                    if service == "moment" else
                    "Sjekk i SpareBank 1 Regnskap at integrasjonen «Moment Team» er aktivert i markedsplassen, og "
                    "at firmanøkkelen i Moments integrasjonsinnstillinger er den samme som under «?» → "
                    "«Systeminformasjon».")
            return (SUBJECT_PREFIX + f"{name} avviser integrasjonen",
                    f"Hei,\n\n{name} avviser tilgangen til integrasjonen mellom Moment og SpareBank 1 Regnskap "
                    f"(Moment-firma «{company}») siden {since}. Ingenting overføres før tilgangen virker igjen; "
                    "det som venter, går ikke tapt, og overføres av seg selv etterpå.\n\n"
                    f"Hva du må gjøre:\n  {todo}\n\n"
                    "Denne e-posten er sendt av integrasjonen Moment → SpareBank 1 Regnskap.\n")
        return (SUBJECT_PREFIX + f"{name} svarer ikke",
                f"Hei,\n\n{name} har ikke svart siden {since}, så integrasjonen mellom Moment og SpareBank 1 "
                f"Regnskap (Moment-firma «{company}») venter. Ingenting går tapt: alt som venter, overføres av "
                "seg selv når tjenesten svarer igjen, og du får en e-post når det skjer. Du trenger ikke gjøre "
                "noe.\n\nDenne e-posten er sendt av integrasjonen Moment → SpareBank 1 Regnskap.\n")
    if over:
        return (SUBJECT_PREFIX + f"transfers are running again ({name})",
                f"Hello,\n\n{name} answers again, and the integration between Moment and SpareBank 1 Regnskap "
                f"(Moment company \"{company}\") is transferring what has waited since {since}. Nothing was "
                "lost and nothing is needed from you.\n\n"
                "This message was sent by the Moment → SpareBank 1 Regnskap integration.\n")
    if reason == "access":
        todo = ("Create a new API key in Moment and give it to the operator of the integration."
                if service == "moment" else
                "Check in SpareBank 1 Regnskap that the integration \"Moment Team\" is activated in the "
                "marketplace, and that the company key in Moment's integration settings matches "
                "\"?\" → \"Systeminformasjon\".")
        return (SUBJECT_PREFIX + f"{name} refuses the integration",
                f"Hello,\n\n{name} has refused the integration between Moment and SpareBank 1 Regnskap "
                f"(Moment company \"{company}\") since {since}. Nothing is transferred until access works "
                "again; what waits is not lost and is transferred by itself afterwards.\n\n"
                f"What to do:\n  {todo}\n\n"
                "This message was sent by the Moment → SpareBank 1 Regnskap integration.\n")
    return (SUBJECT_PREFIX + f"{name} does not answer",
            f"Hello,\n\n{name} has not answered since {since}, so the integration between Moment and "
            f"SpareBank 1 Regnskap (Moment company \"{company}\") is waiting. Nothing is lost: what waits is "
            "transferred by itself when the service answers again, and you get an email then. Nothing is "
            "needed from you.\n\nThis message was sent by the Moment → SpareBank 1 Regnskap integration.\n")


def operator_notice(scope: str, service: str, reason: str, since: str, over: bool, error: str | None,
                    waiting: int | None = None) -> tuple[str, str]:
    """(subject, body) for the operator (English): a circuit opened or closed."""
    name = SERVICE_NAMES["en"][service]
    where = "every integration" if scope == "*" else f"integration {scope}"
    if over:
        return (f"moment-sb1: {name} is back for {where}",
                f"{name} answers again for {where} (down since {since}); the waiting syncs run now.\n")
    kinds = {"outage": "does not answer", "credentials": "refuses the integrator's own credentials",
             "access": "refuses this company's access (company key or API key)"}
    return (f"moment-sb1: {name} {kinds.get(reason, reason)} ({where})",
            f"{name} {kinds.get(reason, reason)} for {where} since {since}.\n"
            f"Last error: {error or '-'}\n"
            "Syncs for it wait (no retries spent, nothing dead-lettered) and one probe at a time tests the "
            "service; you get one more email when it answers again.\n"
            + ("Fix the SpareBank 1 client id, key or certificate (MSB1_SB1_*), then nothing else is needed.\n"
               if reason == "credentials" else ""))


OUTAGE_LIST_LIMIT = 100     # integrations named in one operator email; the rest are counted


def _integrations(ids: list[str]) -> str:
    shown = ", ".join(ids[:OUTAGE_LIST_LIMIT])
    return shown + (f", … and {len(ids) - OUTAGE_LIST_LIMIT} more (moment-sb1 status)"
                    if len(ids) > OUTAGE_LIST_LIMIT else "")


def fleet_operator_notice(service: str, host: str, reason: str, state: str, since: str, error: str | None,
                          first: list[str], later: list[str] | tuple = (), until: str | None = None) -> tuple[str, str]:
    """(subject, body) for the operator (English): an outage of one service at one host,
    whatever the number of integrations it stops. ``state``: open (it began: ``first`` are
    the integrations out so far), closed (every one is back: ``later`` joined after the
    opening email) or brief (it was over before the opening email was due: the only email)."""
    name = f"{SERVICE_NAMES['en'][service]} ({host})"
    ids = sorted({*first, *later})
    where = f"integration {ids[0]}" if len(ids) == 1 else f"{len(ids)} integrations"
    kinds = {"outage": "does not answer", "access": "refuses access (company key or API key)"}
    kind = kinds.get(reason, reason)
    listed = f"Integrations affected ({len(ids)}): {_integrations(ids)}\n"
    if state == "open":
        return (f"moment-sb1: {SERVICE_NAMES['en'][service]} {kind} ({where})",
                f"{name} {kind} for {where} since {since}.\nLast error: {error or '-'}\n{listed}"
                "Syncs for them wait (no retries spent, nothing dead-lettered) and one probe at a time per "
                "integration tests the service. This is the one email for this outage until it is over: "
                "integrations it stops later are named in the email that says it is over.\n")
    joined = (f"Stopped after the first email ({len(later)}): {_integrations(sorted(later))}\n" if later else "")
    if state == "brief":
        was = {"outage": "did not answer", "access": "refused access (company key or API key)"}.get(reason, reason)
        return (f"moment-sb1: {SERVICE_NAMES['en'][service]} {was} for a while, over now ({where})",
                f"{name} {was} for {where} from {since} to {until}; it was over before the outage email "
                f"was due, so this is the only one.\nLast error: {error or '-'}\n{listed}"
                "The waiting syncs run now.\n")
    return (f"moment-sb1: {SERVICE_NAMES['en'][service]} is back for {where}",
            f"{name} answers again for every integration it stopped (down since {since}, over at {until}); "
            f"the waiting syncs run now.\n{listed}{joined}")
