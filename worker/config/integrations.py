"""The integrations file: one entry per Moment company sharing this deployment.

```toml
[[integration]]
id = "acme"                                  # our name for it; appears in logs and task args
moment_company = "acme"                      # Moment company code
moment_api_key = { env = "ACME_MOMENT_KEY" } # a secret: inline string or { env = "VAR" }
bank = "sor-norge"                           # a name from worker/config/banks.py ...
# sb1_base_url = "https://regnskap.example"  # ... or the address itself
company_key = "0f8fad5b-d9cb-469f-a165-70867728950e"
notify_email = "regnskap@acme.no"
data_types = ["customers"]                   # any of customers, projects, invoices
# attach_invoices = "auto"                   # each invoice's PDF on its voucher: true, false or "auto"
```
"""
from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates, validates_schema

from clients.moment import DEFAULT_BASE_URL as MOMENT_BASE_URL
from schemas.datatypes import CHOSEN_TYPES
from worker.config.banks import BANKS
from worker.config.rules import (address_problem, http_hosts, one_line, read_secret_file, quoted, text_problem,
                                 url_problem)

# Revenue account per invoice line product type; account numbers are the same in Moment
# and SpareBank 1 Regnskap. Overridable per integration. (Output VAT needs no account of
# ours: the platform books it on the account of each VAT code.)
DEFAULT_REVENUE_ACCOUNTS = {"HOURS": 3000, "EXPENSES": 3000, "PRODUCTS": 3000}
# The VAT codes the company's invoices use (Norwegian standard codes for sales: 25, 15 and
# 12 %, zero-rated, outside the VAT act). `check-config --online` checks they exist in the
# books; the invoices themselves look up whatever code a line carries.
DEFAULT_VAT_CODES = ("3", "31", "33", "5", "6")
# attach_invoices: each posted invoice's PDF from Moment linked to its voucher (tasks/documents.py).
# "auto" (the default) attaches it when Moment's PDF route answers; an invoice for which the
# route answers 404 is left without (no dead letter); true: such an invoice is a dead letter
AUTO = "auto"


ID_PATTERN = r"[a-z0-9][a-z0-9_-]{0,62}\Z"
COMPANY_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}\Z"
MAX_FILE_BYTES = 1024 * 1024        # a bigger integrations file is a mistake (or /dev/zero)


class IntegrationsError(ValueError):
    """The integrations file is invalid: one line per problem (``problems``)."""

    def __init__(self, *problems: str):
        self.problems = [one_line(p) for p in problems]
        super().__init__("\n".join(self.problems))


def _no_control(value: str) -> None:
    """A secret goes into a header: a line break in it (a file's, say) would break every call."""
    if text_problem(value):
        raise ValidationError("must not contain line breaks or other control characters")
    if value != value.strip():      # a key copied with a space: every call would be refused
        raise ValidationError("must not start or end with a space")


def _attach_choice(value: Any) -> None:
    if not (isinstance(value, bool) or value == AUTO):     # a TOML true/false, or the text "auto"
        raise ValidationError('must be true, false or "auto"')


def _webhook_secret(value: str) -> None:
    """In the webhook URL's path: 16 or more characters, nothing that would end the path
    segment or hide in a log."""
    if len(value) < 16:
        raise ValidationError("must be at least 16 characters")
    if text_problem(value) or any(ch.isspace() or ch in "/?#%" for ch in value):
        raise ValidationError("must not contain spaces, control characters, '/', '?', '#' or '%'")
    if not (value.isascii() and value.isprintable()):   # a path segment Moment may encode otherwise
        raise ValidationError("must be ASCII letters, digits and punctuation only")


@dataclass(frozen=True)
class Integration:
    id: str
    moment_company: str
    moment_api_key: str | None = field(repr=False)    # None: not given to this process (``missing``)
    sb1_base_url: str
    company_key: str
    notify_email: str
    data_types: frozenset[str]
    moment_base_url: str = MOMENT_BASE_URL
    bank: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    revenue_accounts: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_REVENUE_ACCOUNTS))
    language: str = "nb"                # of the company's emails: nb (bokmål) or en
    vat_codes: tuple[str, ...] = DEFAULT_VAT_CODES
    sb1_rate_limit: float | None = None       # calls/s to this company's books (default: the setting)
    moment_rate_limit: float | None = None    # calls/s to this Moment company (default: the setting)
    attach_invoices: bool | str = AUTO        # True, False or "auto"
    # secrets this process was not given (field name → why): each process gets only its own
    missing: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def wants(self, data_type: str) -> bool:
        return data_type in self.data_types

    @property
    def attaches_invoices(self) -> bool:
        """Whether a posted invoice's PDF is attached to its voucher ("auto" counts as on)."""
        return self.attach_invoices is not False and self.wants("invoices")

    def secret(self, name: str) -> str | None:
        """A secret this process uses; ``IntegrationsError`` (one line) when it was not given it."""
        require_secrets([self], name)
        return getattr(self, name)


def require_secrets(integrations: Iterable[Integration], *names: str) -> None:
    """Refuse, one line per problem, when this process lacks a secret it uses: a worker the
    Moment API keys, the webhook receiver the webhook secrets. Each process is given only its
    own (docs/operations.md), so the file is loaded without the others."""
    problems = [f"integration {i.id!r}, field {name!r}: {i.missing[name]}"
                for i in integrations for name in names if name in i.missing]
    if problems:
        raise IntegrationsError(*problems)


class Missing:
    """A secret this process's environment does not hold (why, in ``problem``)."""

    def __init__(self, problem: str):
        self.problem = problem


class Secret(fields.Field):
    """A secret given inline, as ``{ env = "VAR" }`` (read from the environment) or as
    ``{ file = "/run/secrets/name" }`` (read from that file, its trailing line break dropped).
    A variable that is not set or a file that cannot be read is no error here but ``Missing``:
    an error only in a process that uses that secret (``require_secrets``)."""

    def __init__(self, env: Mapping[str, str] | None = None, **kw: Any):
        super().__init__(**kw)
        self.env = env

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str):
            env = self.parent.context_env if hasattr(self.parent, "context_env") else os.environ
            found = env.get(value["env"])
            return found if found else Missing(f"environment variable {value['env']} is not set")
        if isinstance(value, dict) and set(value) == {"file"} and isinstance(value["file"], str) and value["file"]:
            return _read_secret(value["file"])
        raise ValidationError('must be a non-empty string, { env = "VARIABLE" } or { file = "/path/to/file" }')

    def _validate(self, value):
        if not isinstance(value, Missing):      # checked where it is used
            super()._validate(value)


def _read_secret(path: str) -> str | Missing:
    text, problem = read_secret_file(path)
    if problem:
        return Missing(f"file {path!r} {problem}")
    return text if text else Missing(f"file {path!r} is empty")


class _Number(fields.Float):
    """A TOML number, not a string that reads as one ("5", "1_0", "inf")."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class IntegrationSchema(Schema):
    class Meta:
        unknown = RAISE

    # a whole-string match (\Z): with $, "acme\n" would pass
    id = fields.String(required=True, validate=validate.Regexp(
        ID_PATTERN, error="must be 1 to 63 lower-case letters, digits, - or _, starting with a letter or digit"))
    moment_company = fields.String(required=True, validate=validate.Regexp(
        COMPANY_PATTERN, error="must be Moment's company code: 1 to 63 letters, digits, - or _"))
    moment_api_key = Secret(required=True, validate=_no_control)
    moment_base_url = fields.String(load_default=MOMENT_BASE_URL)
    bank = fields.String(load_default=None, validate=validate.OneOf(
        sorted(BANKS), error="unknown bank {input!r}; valid names: {choices}"))
    sb1_base_url = fields.String(load_default=None)
    company_key = fields.UUID(required=True, error_messages={"invalid_uuid": "must be a GUID"})
    notify_email = fields.String(required=True)
    data_types = fields.List(fields.String(validate=validate.OneOf(
        list(CHOSEN_TYPES), error="unknown data type {input!r}; choose from {choices}")), required=True,
                             validate=validate.Length(min=1))
    webhook_secret = Secret(load_default=None, validate=_webhook_secret)
    revenue_accounts = fields.Dict(
        keys=fields.String(validate=validate.OneOf([k.lower() for k in DEFAULT_REVENUE_ACCOUNTS],
                                                   error="unknown product type {input!r}; choose from {choices}")),
        values=fields.Integer(strict=True, validate=validate.Range(1000, 99999)), load_default=dict)
    vat_codes = fields.List(fields.String(validate=validate.Regexp(r"[0-9A-Za-z]{1,10}\Z",
                                                                   error="must be a VAT code such as 3 or 31")),
                            load_default=lambda: list(DEFAULT_VAT_CODES))
    sb1_rate_limit = _Number(load_default=None, validate=validate.Range(0, 10000))
    moment_rate_limit = _Number(load_default=None, validate=validate.Range(0, 10000))
    attach_invoices = fields.Raw(load_default=AUTO, validate=_attach_choice)
    vat_account = fields.Raw(load_default=None, metadata={"removed": True})
    language = fields.String(load_default="nb", validate=validate.OneOf(
        ("nb", "en"), error="unknown language {input!r}; choose nb (Norwegian bokmål) or en (English)"))

    def __init__(self, env: Mapping[str, str] | None = None, allowed_http: frozenset[str] = frozenset(), **kw: Any):
        super().__init__(**kw)
        self.context_env = os.environ if env is None else env
        self.allowed_http = allowed_http

    @validates_schema
    def _removed(self, data, **kwargs):
        if data.get("vat_account") is not None:
            raise ValidationError("is no longer used: SpareBank 1 Regnskap books output VAT on the "
                                  "account of each VAT code itself; remove this line", "vat_account")

    @validates_schema
    def _bank_or_url(self, data, **kwargs):
        if not data.get("bank") and not data.get("sb1_base_url"):
            raise ValidationError("give either bank or sb1_base_url", "bank")
        if data.get("bank") and data.get("sb1_base_url"):
            raise ValidationError("give bank or sb1_base_url, not both", "sb1_base_url")

    @validates("moment_base_url", "sb1_base_url")
    def _https(self, value, data_key: str, **kwargs):
        """The base URLs carry the company key, the token and the API key: https only."""
        problem = url_problem(value, self.allowed_http) if value is not None else None
        if problem:
            raise ValidationError(problem)

    @validates("notify_email")
    def _address(self, value, data_key: str, **kwargs):
        problem = address_problem(value)
        if problem:
            raise ValidationError(problem)

    @post_load
    def _make(self, data, **kwargs) -> Integration:
        data.pop("vat_account")
        bank = data.pop("bank")
        base = data.pop("sb1_base_url") or BANKS[bank]
        data["revenue_accounts"] = {**DEFAULT_REVENUE_ACCOUNTS,
                                    **{k.upper(): v for k, v in data["revenue_accounts"].items()}}
        data["vat_codes"] = tuple(data["vat_codes"])
        missing = {name: value.problem for name, value in data.items() if isinstance(value, Missing)}
        data.update(dict.fromkeys(missing))
        return Integration(sb1_base_url=base, bank=bank, company_key=str(data.pop("company_key")),
                           data_types=frozenset(data.pop("data_types")), missing=missing, **data)


def parse_integrations(doc: Mapping[str, Any], env: Mapping[str, str] | None = None,
                       allowed_http: frozenset[str] | None = None) -> dict[str, Integration]:
    """Validate a parsed TOML document; raise ``IntegrationsError`` listing every problem.
    ``allowed_http``: hosts besides this machine that may be spoken to in plain http
    (default: ``MSB1_INSECURE_HTTP_HOSTS`` in ``env``)."""
    env = os.environ if env is None else env
    if allowed_http is None:
        allowed_http = http_hosts(env.get("MSB1_INSECURE_HTTP_HOSTS"))
    entries = doc.get("integration")
    if not isinstance(entries, list) or not entries:
        raise IntegrationsError("the integrations file has no [[integration]] entries")
    schema = IntegrationSchema(env=env, allowed_http=allowed_http)
    problems: list[str] = []
    result: dict[str, Integration] = {}
    for index, entry in enumerate(entries, start=1):
        name = quoted(entry["id"], 40) if isinstance(entry, dict) and isinstance(entry.get("id"), str) else f"#{index}"
        try:
            integration = schema.load(entry)
        except ValidationError as err:
            messages = err.normalized_messages()
            if not isinstance(messages, dict):
                messages = {"_schema": messages}
            for field_name, field_messages in sorted(messages.items(), key=lambda kv: str(kv[0])):
                for msg in _flatten(field_messages):
                    where = "" if field_name == "_schema" else f", field {quoted(field_name, 40)}"
                    problems.append(f"integration {name}{where}: {msg}")
            continue
        if integration.id in result:
            problems.append(f"integration {name}: the id is used twice")
        result[integration.id] = integration
    problems += _shared(result.values())
    if problems:
        raise IntegrationsError(*(f"invalid integrations file: {p}" for p in problems))
    return result


def _shared(integrations) -> list[str]:
    """What two integrations may not share: the books (a company key), a webhook secret
    (a webhook for one would be taken for the other) and the Moment company (one integration
    per Moment company: two would poll it and write its records twice; Moment's company codes
    are compared without case)."""
    problems = []
    seen: dict[tuple[str, str], str] = {}
    for i in integrations:
        for what, value in (("company_key", i.company_key.lower()), ("webhook_secret", i.webhook_secret),
                            ("moment_company", i.moment_company.lower())):
            if value is None:
                continue
            other = seen.setdefault((what, value), i.id)
            if other != i.id:
                problems.append(f"integration {quoted(i.id)}, field '{what}': the same as integration "
                                f"{quoted(other)}'s; each integration needs its own")
    return problems


def _flatten(messages: Any) -> list[str]:
    if isinstance(messages, str):
        return [messages]
    if isinstance(messages, dict):
        return [f"{k}: {m}" for k, v in messages.items() for m in _flatten(v)]
    return [m for item in messages for m in _flatten(item)]


def load_integrations(path: str | Path, env: Mapping[str, str] | None = None,
                      allowed_http: frozenset[str] | None = None) -> dict[str, Integration]:
    path = Path(path)
    where = f"integrations file {quoted(str(path), 200)}"
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        mode = None         # said below, when it is opened
    if mode is not None and not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        # a FIFO or a device: reading it would hang the worker's start, or never end
        raise IntegrationsError(f"{where} is not a regular file (set MSB1_INTEGRATIONS_FILE to the TOML file)")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
        doc = None if len(raw) > MAX_FILE_BYTES else tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise IntegrationsError(f"{where} does not exist (set MSB1_INTEGRATIONS_FILE)") from None
    except IsADirectoryError:
        raise IntegrationsError(f"{where} is a directory, not a file "
                                "(set MSB1_INTEGRATIONS_FILE to the TOML file)") from None
    except PermissionError:
        raise IntegrationsError(f"{where} cannot be read (permission denied)") from None
    except UnicodeDecodeError as err:
        raise IntegrationsError(f"{where} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise IntegrationsError(f"{where} cannot be read ({err.strerror})") from None
    except tomllib.TOMLDecodeError as err:
        raise IntegrationsError(f"{where} is not valid TOML: {err}") from None
    except RecursionError:
        raise IntegrationsError(f"{where} is not valid TOML: nested too deeply") from None
    except (ValueError, TypeError, MemoryError) as err:     # anything else the TOML parser gives up on
        raise IntegrationsError(f"{where} is not valid TOML ({type(err).__name__})") from None
    if doc is None:
        raise IntegrationsError(f"{where} is larger than {MAX_FILE_BYTES // 1024} KiB; is it the right file?")
    try:
        return parse_integrations(doc, env, allowed_http)
    except IntegrationsError as err:
        raise IntegrationsError(*(p.replace("invalid integrations file:", f"invalid {where}:", 1)
                                  for p in err.problems)) from None
    except RecursionError:
        raise IntegrationsError(f"invalid {where}: nested too deeply") from None
