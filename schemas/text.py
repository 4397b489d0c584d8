"""Text from Moment shown back to people: control characters made visible, length bounded.

A value from Moment can hold anything: a line break in a number, a right-to-left mark,
ten thousand characters. Whatever of it reaches an email, a log line or an error message
goes through ``shown`` (a value quoted back) or ``plain`` (running text).
"""
from __future__ import annotations

import unicodedata

ELLIPSIS = "…"


def _invisible(ch: str) -> bool:
    # Cc controls (line breaks, tabs, NUL), Cf format characters (zero-width, bidi marks),
    # Zl/Zp line and paragraph separators, and unassigned or private code points.
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def _escape(ch: str) -> str:
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch) or (
        f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}" if ord(ch) < 0x10000
        else f"\\U{ord(ch):08x}")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + ELLIPSIS


def shown(value: object, limit: int = 40) -> str:
    """A value quoted back to a person: invisible characters written out (``\\n``,
    ``\\u200b``) so "100001\\n" does not look like 100001, and at most ``limit`` characters."""
    text = "" if value is None else str(value)
    return "'" + _cut("".join(_escape(ch) if _invisible(ch) else ch for ch in text), limit) + "'"


def plain(value: object, limit: int = 200) -> str:
    """Running text (a name, a description) with invisible characters turned into spaces,
    runs of whitespace folded, and at most ``limit`` characters."""
    text = "" if value is None else str(value)
    text = "".join(" " if _invisible(ch) else ch for ch in text)
    return _cut(" ".join(text.split()), limit)


def kroner(amount) -> str:
    """An amount as Norwegians write it: 12 500,00 kr (space between thousands, comma
    before the øre)."""
    text = f"{abs(amount):,.2f}".replace(",", " ").replace(".", ",")
    return f"{'-' if amount < 0 else ''}{text} kr"


def label(value: object, limit: int = 20) -> str:
    """A number or code in running text: as it is when it is short and has no invisible
    character or space, else quoted by ``shown`` ("customer 100001", "customer '1000\\n01'")."""
    text = "" if value is None else str(value)
    if text and len(text) <= limit and not any(_invisible(ch) or ch.isspace() for ch in text):
        return text
    return shown(text, limit)
