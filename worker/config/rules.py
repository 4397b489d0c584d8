"""What an address or a piece of text in the configuration must be, for the settings and
the integrations file alike: a URL that carries a credential is https (plain http only to
this machine, or to a host named in ``MSB1_INSECURE_HTTP_HOSTS``, such as compose's sandbox);
an email address parses and has no line break (a CR/LF in a header would make every notice
fail to build); no text holds control or invisible characters. Each rule answers with the
problem in words, or None, and never repeats a secret."""
from __future__ import annotations

import ipaddress
import re
from email.utils import parseaddr
from urllib.parse import urlsplit

from marshmallow import ValidationError
from marshmallow.validate import Email

from schemas.text import invisible

LOOPBACK_NAMES = frozenset({"localhost"})
HTTP_ONLY_TO = "127.0.0.1, ::1, localhost or a host in MSB1_INSECURE_HTTP_HOSTS"
_EMAIL = Email()


def http_hosts(value: str | None) -> frozenset[str]:
    """``MSB1_INSECURE_HTTP_HOSTS``: a comma-separated list of host names."""
    return frozenset(h.strip().lower() for h in (value or "").split(",") if h.strip())


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unsafe_characters(text: str) -> bool:
    """A control, format, invalid or invisible character (``schemas.text.invisible``, the same
    rule as for every text we send): CR, LF, NUL, bidi overrides, zero-width characters,
    surrogates from undecodable bytes in the environment."""
    return any(invisible(ch) for ch in text)


def url_problem(url: str, allowed_http: frozenset[str] = frozenset()) -> str | None:
    """Why ``url`` may not be used to send a credential (a token, a company key, an API key),
    or None."""
    if unsafe_characters(url) or any(ch.isspace() for ch in url):
        return "must not contain spaces, line breaks or other control characters"
    try:
        parts = urlsplit(url)
        parts.port                                  # raises on a port that is no number
    except ValueError:
        return "is not a URL"
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        return "must be an https:// address"
    if parts.username is not None or parts.password is not None:
        return "must not hold a user name or password"
    if parts.query or parts.fragment:
        return "must not have a query (?) or a fragment (#)"
    host = parts.hostname
    if not host.isascii():      # "０.example" or a look-alike letter: the name another host may resolve to
        return "must have a host name in ASCII (an international name in its xn-- form)"
    if scheme == "http" and not (is_loopback(host) or host.lower() in allowed_http):
        return (f"must be https:// (plain http:// only to {HTTP_ONLY_TO}): "
                "the credentials sent there would travel in clear")
    return None


def address_problem(value: str, display_name: bool = False) -> str | None:
    """Why ``value`` is no email address for a header (``display_name``: ``Name <a@b.no>``
    is allowed too), or None."""
    if unsafe_characters(value):
        return "must not contain line breaks or other control characters"
    if value != value.strip():
        return "must not start or end with a space"
    address = value
    if display_name and "<" in value:
        name, address = parseaddr(value)
        if not address or "<" in name or ">" in name:
            return "is not an email address (a@b.no or Name <a@b.no>)"
    try:
        _EMAIL(address)
    except ValidationError:
        return "is not an email address" + (" (a@b.no or Name <a@b.no>)" if display_name else "")
    return None


def text_problem(value: str) -> str | None:
    if unsafe_characters(value):
        return "must not contain line breaks, tabs or other control characters"
    return None


def quoted(value: object, limit: int = 60) -> str:
    """A value for a message: quoted, on one line (control characters escaped), cut."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def one_line(text: str) -> str:
    """A message on one line: line breaks and other unprintable characters escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def redacted(url: str) -> str:
    """A URL without what comes before its host: ``redis://:***@host:6379/0`` (a password
    holding ``/``, ``:`` or ``@`` included)."""
    return re.sub(r"//.*@", "//:***@", url, flags=re.S)


SECRET_FILE_MAX = 64 * 1024         # a secret's file is read up to this size


def read_secret_file(path: str) -> tuple[str | None, str | None]:
    """A secret kept in a file (its trailing line break dropped), or why it cannot be used,
    in words that follow the file's name: (text, None) or (None, "cannot be read (...)").
    Never the content in a message."""
    try:
        with open(path, "rb") as f:
            raw = f.read(SECRET_FILE_MAX + 1)
    except OSError as err:
        return None, f"cannot be read ({err.strerror or type(err).__name__})"
    if len(raw) > SECRET_FILE_MAX:
        return None, f"is larger than {SECRET_FILE_MAX // 1024} KiB"
    try:
        return raw.decode("utf-8").rstrip("\r\n"), None
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
