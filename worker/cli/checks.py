"""``moment-sb1 check-config``: its lines, one per cause with the integrations it affects,
and (``--online``) does every part the worker needs answer, and accept what we have? None
of the checks writes anything."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from clients.eventplans import plan_state
from clients.moment import DOCUMENT_ROUTE
from clients.sb1 import ACCOUNTS_ROUTE, VAT_TYPES_ROUTE
from errors import IntegrationError, NotFound
from worker.config.integrations import AUTO, Integration
from worker.config.rules import redacted
from worker.intake.events import endpoint
from worker.notices.mail import smtp_session
from worker.store import schema


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _run(name: str, check: Callable[[], str]) -> Check:
    try:
        return Check(name, True, check())
    except IntegrationError as err:
        return Check(name, False, str(err))
    except Exception as err:            # a socket error, a refused login: said in one line
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return Check(name, False, f"{type(err).__name__}{': ' + text if text else ''}")


_ONE_INTEGRATION = re.compile(r"(.*?)integration '([a-z0-9_-]+)', (.*)", re.S)


def affected(names: list[str]) -> str:
    return f"{len(names)} integration(s): {', '.join(sorted(names))}"


def by_cause(problems: Iterable[str]) -> list[str]:
    """Problems one line per cause: "integration 'a', field 'x': file '/k' not found" for 50
    integrations is one line naming the 50 (in the order the causes came)."""
    causes: dict[tuple[str, str], list[str]] = {}
    for problem in problems:
        match = _ONE_INTEGRATION.fullmatch(problem)
        before, iid, cause = match.groups() if match else ("", None, problem)
        causes.setdefault((before, cause), []).extend([iid] if iid else [])
    return [f"{before}integration {names[0]!r}, {cause}" if len(names) == 1 else
            f"{before}{cause} ({affected(names)})" if names else cause for (before, cause), names in causes.items()]


def missing_secrets(integrations: Iterable[Integration]) -> list[str]:
    """The secrets this process was not given, one line per secret and why."""
    causes: dict[tuple[str, str], list[str]] = {}
    for i in integrations:
        for name, problem in sorted(i.missing.items()):
            # "environment variable ACME_WEBHOOK_SECRET is not set": the same cause for each company
            kind = re.sub(r"(environment variable|file) \S+", r"\1 …", problem)
            causes.setdefault((name, kind), []).append((i.id, problem))
    lines = []
    for (name, kind), pairs in causes.items():
        said = {problem for _, problem in pairs}
        why = said.pop() if len(said) == 1 else kind      # one file shared by all: named
        lines.append(f"{pairs[0][0]}: {name} not in this process ({why})" if len(pairs) == 1 else
                     f"{name} not in this process ({why}) for {affected([iid for iid, _ in pairs])}")
    return lines


def grouped_checks(checks: Iterable[Check], integrations) -> Iterator[tuple[Check, list[str]]]:
    """The online checks one line per cause: a check of an integration ("acme: Moment") that
    failed as others did (the same part, the same error once the integration's own names are
    taken out) is one line with the integrations it affects, after the passed checks."""
    failures: dict[tuple[str, str], tuple[Check, list[str]]] = {}
    for check in checks:
        iid, _, part = check.name.partition(": ")
        integration = integrations.get(iid) if part else None
        if check.ok or integration is None:
            yield check, []
            continue
        detail = check.detail
        for own in {integration.moment_company, integration.id, integration.company_key} - {""}:
            detail = re.sub(rf"(?<![\w-]){re.escape(own)}(?![\w-])", "{company}", detail)
        key = (part, detail)
        if key not in failures:
            failures[key] = (Check(part, False, detail), [])
        failures[key][1].append(iid)
    for check, names in failures.values():
        if len(names) == 1:
            yield Check(f"{names[0]}: {check.name}", False, check.detail.replace("{company}", names[0])), []
        else:
            yield check, names


def online_checks(rt) -> Iterator[Check]:
    settings = rt.settings

    def redis_ok() -> str:
        rt.redis.ping()
        return f"{redacted(settings.redis_url)} answers"
    yield _run("Redis", redis_ok)

    def state_ok() -> str:          # the worker refuses a state newer than its release
        if problem := schema.check(rt.redis, rt.keys):
            raise LookupError(problem)
        version = schema.stored_version(rt.redis, rt.keys)
        return f"state version {version or 'none yet'} (this release: {schema.SCHEMA_VERSION})"
    yield _run("Redis state", state_ok)

    def smtp_ok() -> str:
        with smtp_session(settings, timeout=10) as smtp:
            smtp.noop()
        login = f", logged in as {settings.smtp_user}" if settings.smtp_user else ""
        return f"{settings.smtp_host}:{settings.smtp_port} ({settings.smtp_tls}){login}"
    yield _run("mail server", smtp_ok)

    def identity_ok() -> str:
        rt.tokens.fetch_new()
        return f"{settings.token_url} gave client {settings.sb1_client_id} a token"
    yield _run("SpareBank 1 identity server", identity_ok)

    for integration in rt.integrations.values():
        yield from _integration_checks(rt, integration)


def _integration_checks(rt, integration: Integration) -> Iterator[Check]:
    iid = integration.id

    def moment_ok() -> str:
        rt.moment(integration).probe()
        return f"Moment company {integration.moment_company} takes the API key"
    moment = _run(f"{iid}: Moment", moment_ok)
    yield moment

    def company_ok() -> str:
        rt.sb1(integration).probe()
        return f"the company key opens the company at {integration.sb1_base_url}"
    company = _run(f"{iid}: SpareBank 1 Regnskap", company_ok)
    yield company
    if company.ok and rt.settings.events_url and (integration.wants("customers") or integration.wants("projects")):
        yield _run(f"{iid}: event plan", lambda: plan_state(rt.sb1(integration),
                                                            endpoint(rt.settings.events_url, iid)))
    if not company.ok or not integration.wants("invoices"):
        return
    if integration.attaches_invoices and moment.ok:     # else its failure is the Moment line's cause
        yield _run(f"{iid}: invoice PDFs on the vouchers", lambda: _documents_ok(rt, integration))
    sb1 = rt.sb1(integration)
    for number in sorted(set(integration.revenue_accounts.values())):
        kinds = ", ".join(k.lower() for k, n in sorted(integration.revenue_accounts.items()) if n == number)

        def account_ok(number: int = number, kinds: str = kinds) -> str:
            if sb1.find_by(ACCOUNTS_ROUTE, "AccountNumber", number) is None:
                raise LookupError(f"account {number} ({kinds}) is not in the books")
            return f"account {number} ({kinds}) exists"
        yield _run(f"{iid}: revenue account {number}", account_ok)
    for code in integration.vat_codes:
        def vat_ok(code: str = code) -> str:
            if sb1.find_by(VAT_TYPES_ROUTE, "VatCode", code) is None:
                raise LookupError(f"VAT code {code} is not in the books")
            return f"VAT code {code} exists"
        yield _run(f"{iid}: VAT code {code}", vat_ok)


def _documents_ok(rt, integration: Integration) -> str:
    """Does Moment's PDF route (an assumption) answer for the newest invoice, and does the
    platform name its Files host? With ``attach_invoices = "auto"`` a route that answers 404
    means the invoices are posted without their PDF."""
    host = rt.files(integration).files_host()
    moment = rt.moment(integration)
    _, first = next(moment.pages("invoices", page_size=1), (None, []))
    if not first:
        return f"no invoice in Moment yet to try {DOCUMENT_ROUTE} with; files go to {host}"
    try:
        pdf = moment.document(first[0]["id"])
    except NotFound:
        raise LookupError(f"Moment does not answer {DOCUMENT_ROUTE} (HTTP 404): invoices are posted without "
                          + ('their PDF (attach_invoices = "auto"); set attach_invoices = false to say so'
                             if integration.attach_invoices == AUTO else
                             "their PDF, each one a dead letter (attach_invoices = true)")) from None
    return f"Moment answers {DOCUMENT_ROUTE} (a PDF of {len(pdf)} bytes); files go to {host}"

