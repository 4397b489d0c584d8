"""Every text we send to SpareBank 1 Regnskap, checked before the books see it.

Moment is the master and its values go into the books as they are, so each one must be a
value the books can hold safely. A text field is refused when it has

* a control character: category Cc (NUL, TAB, CR, LF, ESC, DEL, ...) and the line and
  paragraph separators U+2028 and U+2029;
* a format character, category Cf: the bidi embeddings, overrides, isolates and marks
  (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C), zero-width characters
  (U+200B-U+200D, U+2060), the byte order mark U+FEFF, the soft hyphen; text that reads one
  way and is stored another; and the other characters shown as nothing (``IGNORABLE``: the
  Hangul fillers U+115F, U+1160, U+3164, U+FFA0, the combining grapheme joiner U+034F);
* an unpaired surrogate, a private-use or an unassigned code point (Cs, Co, Cn);
* more than ``TEXT_MAX_LENGTH`` characters, counted as the platform (a .NET service) counts
  them: in UTF-16 code units (an invoice's texts are cut to the voucher's length instead).

Letters of every script, accents and combining marks (``é`` written as ``e`` + U+0301),
æøå, non-breaking spaces and symbols are fine. On top of that:

* an **email address** is parsed by ``email-validator`` (no DNS look-up): one address,
  nothing else in the field: no display name ("Ola <ola@firma.no>"), no quoted local part,
  no IP literal, no spaces; international domains and letters (``post@blåbær.no``) are fine;
* a **website** is ``http://`` or ``https://`` with a valid host, or a bare host with an
  optional port and path (``www.firma.no``), which a browser reads as ``https://``: it is
  checked as such and sent as Moment has it. Any other scheme (``javascript:``, ``data:``,
  ``file:``, ``mailto:``, in any case and after leading spaces), a user name or password
  (``https://user:pass@host``), spaces, backslashes and the characters a URL cannot hold
  (``"<>`{}|^``) are refused, and so is a host name that mixes Latin, Cyrillic and Greek
  letters in one label (``аpple.com`` with a Cyrillic ``а``).

Each refusal is one ``RecordInvalid`` for the record, with a ``code`` per kind of problem
(``FIELD_CODES``) and ``params`` naming the field as the company knows it in Moment
(``field``, a key of ``FIELD_NAMES``; ``line`` for an invoice line), the character and its
position, the length and the limit, and ``also``: the other fields refused with it. Its
``str()`` names the field and the problem, never the value (a malformed address by its
``shape``: "23 characters: letters, spaces, '@' and '.'").
"""
from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

from errors import RecordInvalid

from .text import IGNORABLE, shape

# Assumed: the longest text any field of the platform holds. Its Swagger gives no maxLength
# for any field, so this is our bound for every text we send (a name, an email address, a
# website, an address line, a phone number, a KID), in UTF-16 code units.
TEXT_MAX_LENGTH = 250

TEXT, EMAIL, WEBSITE = "text", "email", "website"

# field -> (Norwegian, English): the field as the company knows it in Moment
FIELD_NAMES = {
    "name": ("navn", "name"),
    "organization-number": ("organisasjonsnummer", "organization number"),
    "email": ("e-post", "email"),
    "website": ("nettside", "website"),
    "phone": ("telefon", "phone"),
    "fax": ("faks", "fax"),
    "currency": ("valuta", "currency"),
    "country": ("land", "country"),
    "address-line1": ("adresselinje 1", "address line 1"),
    "address-line2": ("adresselinje 2", "address line 2"),
    "postal-code": ("postnummer", "postal code"),
    "city": ("poststed", "city"),
    "address-country": ("land i adressen", "country of the address"),
    "description": ("beskrivelse", "description"),
    "line-text": ("linjetekst", "line text"),
    "kid": ("KID", "KID (payment id)"),
}

FIELD_CODES = ("field-control-character", "field-format-character", "field-invalid-character", "field-too-long",
               "email-invalid", "website-scheme", "website-credentials", "website-invalid")


@dataclass(frozen=True)
class Text:
    """One text field we send: where it is on Moment's record, what the company calls it."""
    path: str                   # "email", "address.city", "lines[].item_text" (one per line)
    field: str                  # a key of FIELD_NAMES
    kind: str = TEXT            # TEXT, EMAIL or WEBSITE
    # None: a text we put into our own words and cut to length (an invoice's texts go into
    # the voucher's description, schemas/vouchers.py); the characters are checked all the same
    max_length: int | None = TEXT_MAX_LENGTH
    # True: line breaks and tabs are allowed, because the text is folded onto one line before
    # it is sent (an invoice's texts: a finalized invoice cannot be changed in Moment, and a
    # description over several lines is ordinary); every other control character is refused
    multiline: bool = False


CUSTOMER_TEXTS = (
    Text("name", "name"), Text("organization_number", "organization-number"), Text("email", "email", EMAIL),
    Text("website", "website", WEBSITE), Text("phone", "phone"), Text("fax", "fax"),
    Text("currency_code", "currency"), Text("country_code", "country"),
    Text("address.address_line1", "address-line1"), Text("address.address_line2", "address-line2"),
    Text("address.postal_code", "postal-code"), Text("address.city", "city"),
    Text("address.country_code", "address-country"),
)
PROJECT_TEXTS = (Text("name", "name"),)
INVOICE_TEXTS = (Text("description", "description", max_length=None, multiline=True), Text("payment_id", "kid"),
                 Text("lines[].item_text", "line-text", max_length=None, multiline=True))
# what a multi-line text may hold: folded into spaces on the way to the books
LINE_BREAKS = str.maketrans({ch: " " for ch in "\r\n\t\u2028\u2029"})


@dataclass(frozen=True)
class Problem:
    """What is wrong with one field: the code, the facts for the company's words (no value),
    our own English words and what to do."""
    code: str
    field: str
    line: int | None
    facts: dict[str, Any]
    what: str
    hint: str


# --- characters --------------------------------------------------------------------------
_CHAR_NAMES = {"\x00": "NUL", "\t": "TAB", "\n": "LINE FEED", "\r": "CARRIAGE RETURN", "\x1b": "ESCAPE",
               "\x7f": "DELETE"}
_KINDS = {"Cc": "field-control-character", "Zl": "field-control-character", "Zp": "field-control-character",
          "Cf": "field-format-character",
          "Cs": "field-invalid-character", "Co": "field-invalid-character", "Cn": "field-invalid-character"}
_KIND_WORDS = {"field-control-character": "a control character (line breaks, tabs, NUL and the like)",
               "field-format-character": "an invisible format character (a bidi override or mark, a zero-width "
                                         "character) that changes how the text reads",
               "field-invalid-character": "a code point that is not a valid character (an unpaired surrogate, "
                                          "a private-use or unassigned code point)"}


def char_name(ch: str) -> str:
    """A character named without showing it: "U+202E RIGHT-TO-LEFT OVERRIDE", "U+000D CARRIAGE RETURN"."""
    name = _CHAR_NAMES.get(ch) or unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


def utf16_length(text: str) -> int:
    """The length the platform counts: UTF-16 code units (a character beyond U+FFFF is two)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def character_problem(text: str) -> tuple[str, int, str] | None:
    """The first character a text field may not hold: (code, position from 1, the character)."""
    for position, ch in enumerate(text, 1):
        code = "field-format-character" if ch in IGNORABLE else _KINDS.get(unicodedata.category(ch))
        if code:
            return code, position, ch
    return None


# --- email addresses -----------------------------------------------------------------------
def email_ok(value: str) -> bool:
    """One email address and nothing else, by email-validator's parser (no DNS look-up)."""
    try:
        validate_email(value, check_deliverability=False, strict=True, allow_display_name=False,
                       allow_quoted_local=False, allow_domain_literal=False, allow_empty_local=False)
    except EmailNotValidError:
        return False
    return True


# --- websites ------------------------------------------------------------------------------
WEBSITE_SCHEMES = ("http", "https")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_NOT_IN_URL = re.compile(r"[\s\\\"<>`{}|^]")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def website_problem(value: str) -> str | None:
    """None for a website we send, else the code of what is wrong with it."""
    text = value.strip()            # a browser ignores the spaces around; " javascript:" is still a script
    scheme = _SCHEME.match(text)
    rest = text[scheme.end():] if scheme else ""
    # "www.firma.no:8080" is a host and a port; "javascript:..." or "data:..." a scheme
    if scheme and (rest.startswith("/") or not rest[:1].isdigit()):
        if scheme.group(1).lower() not in WEBSITE_SCHEMES:
            return "website-scheme"
        if not rest.startswith("//"):
            return "website-invalid"
        url = text
    else:
        url = "https://" + text
    if _NOT_IN_URL.search(value):
        return "website-invalid"
    try:
        parts = urlsplit(url)
        parts.port                                      # noqa: B018 - raises for a port that is not one
    except ValueError:
        return "website-invalid"
    if "@" in parts.netloc:
        return "website-credentials"
    return None if host_ok(parts.hostname or "") else "website-invalid"


_LOOKALIKE_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")


def _mixed_scripts(label: str) -> bool:
    """A host label with letters of two of the scripts that look alike ("аpple" with a
    Cyrillic а): a name made to pass for another."""
    scripts = {unicodedata.name(ch, "").split(" ")[0] for ch in label if ch.isalpha()}
    return len(scripts & set(_LOOKALIKE_SCRIPTS)) > 1


def host_ok(host: str) -> bool:
    """A host name with a dot (international names too, by IDNA) or an IP address."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:        # as a person reads it: an xn-- label decoded (look-alikes hide in that form too)
        shown_labels = [label.encode("ascii").decode("idna") if label.lower().startswith("xn--") else label
                        for label in host.split(".")]
    except UnicodeError:
        return False
    if any(_mixed_scripts(label) for label in shown_labels):
        return False
    try:
        labels = host.encode("idna").decode("ascii").lower().split(".")
    except UnicodeError:
        return False
    return len(labels) >= 2 and all(_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()


# --- one field, one record -----------------------------------------------------------------
def _values(record: Any, path: str) -> Iterator[tuple[Any, int | None]]:
    """The value(s) at ``path`` on a record: (value, invoice line number or None)."""
    head, _, rest = path.partition(".")
    if head.endswith("[]"):
        for number, item in enumerate(getattr(record, head[:-2], None) or (), 1):
            for value, _ in _values(item, rest):
                yield value, number
        return
    value = getattr(record, head, None) if record is not None else None
    if rest:
        yield from _values(value, rest)
    else:
        yield value, None


def field_label(field: str, line: int | None = None, lang: str = "en") -> str:
    """A field as the company knows it: "email", "line text (line 2)", "linjetekst (linje 2)"."""
    name = FIELD_NAMES[field][0 if lang == "nb" else 1]
    return name + (f" ({'linje' if lang == 'nb' else 'line'} {line})" if line else "")


def text_problem(value: str, spec: Text, line: int | None = None) -> Problem | None:
    """What is wrong with one value of a text field, or None when the books can hold it."""
    where = f"the {field_label(spec.field, line)} field"
    facts: dict[str, Any] = {"length": utf16_length(value), "limit": spec.max_length}
    bad = character_problem(value.translate(LINE_BREAKS) if spec.multiline else value)
    if bad:
        code, position, ch = bad
        facts.update(char=char_name(ch), position=position)
        return Problem(code, spec.field, line, facts,
                       f"{where} contains {_KIND_WORDS[code]}: {char_name(ch)} at character {position} of "
                       f"{len(value)}",
                       f"Remove the character from the {field_label(spec.field, line)} in Moment (retype the field "
                       "if you cannot see it), then save it again.")
    if spec.max_length is not None and facts["length"] > spec.max_length:
        return Problem("field-too-long", spec.field, line, facts,
                       f"{where} is {facts['length']} characters long; SpareBank 1 Regnskap takes at most "
                       f"{spec.max_length}",
                       f"Shorten the {field_label(spec.field, line)} in Moment to at most {spec.max_length} "
                       "characters.")
    if spec.kind == EMAIL and not email_ok(value):
        return Problem("email-invalid", spec.field, line, facts,
                       f"{where} is not one valid email address ({shape(value)})",
                       "Correct the email address in Moment: one address such as post@firma.no, without a "
                       "name, spaces, line breaks or a second address.")
    if spec.kind == WEBSITE:
        code = website_problem(value)
        if code:
            words = {"website-scheme": "is not an http:// or https:// address (another scheme, such as "
                                       "javascript: or data:, is never sent)",
                     "website-credentials": "holds a user name or password",
                     "website-invalid": f"is not a valid web address ({shape(value)})"}
            return Problem(code, spec.field, line, facts, f"{where} {words[code]}",
                           "Correct the website in Moment to a plain web address such as https://www.firma.no "
                           "(no user name or password in it).")
    return None


def problems(record: Any, texts: tuple[Text, ...]) -> list[Problem]:
    """The first problem of every text field of ``record`` that is refused. A value that
    is empty or blank is not sent (the books' field is cleared), so it is not checked here."""
    found = []
    for spec in texts:
        for value, line in _values(record, spec.path):
            if isinstance(value, str) and value.strip():
                problem = text_problem(value, spec, line)
                if problem:
                    found.append(problem)
    return found


def check_texts(record: Any, texts: tuple[Text, ...]) -> None:
    """Refuse the record (``RecordInvalid``) when any text field we would send is one the
    books must not hold; the first problem is the error's, the others are named with it."""
    found = problems(record, texts)
    if not found:
        return
    first, others = found[0], found[1:]
    message = first.what + (f"; also refused: {', '.join(field_label(p.field, p.line) for p in others)}"
                            if others else "")
    raise RecordInvalid(message, hint=first.hint, code=first.code,
                        params={"field": first.field, "line": first.line, **first.facts,
                                "also": [(p.field, p.line) for p in others]},
                        fields=[p.field for p in found])


def checked(rule, texts: tuple[Text, ...]):
    """A data type's check: its own rules (``rule``, which returns the record's number as
    the platform needs it), then the text fields it sends."""
    def check(record: Any) -> Any:
        key = rule(record)
        check_texts(record, texts)
        return key
    check.__name__ = check.__qualname__ = getattr(rule, "__name__", "check")
    return check
