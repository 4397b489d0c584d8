"""Text from Moment shown back to people: control characters made visible, length bounded;
and a value described without being shown.

A value from Moment can hold anything: a line break in a number, a right-to-left mark,
ten thousand characters, a national identity number typed into the wrong field. The rule
for personal data: a value from Moment or the platform appears in the company's email
only, through ``shown`` (a value quoted back) or ``plain`` (running text). Everywhere else
(logs, Sentry, dead letters, history, the CLI, every exception's ``str()``) a refused value
is named by its ``shape`` ("11 digits", "23 characters: letters, digits, '.' and '@'").
"""
from __future__ import annotations

import re
import unicodedata

ELLIPSIS = "…"


# Default-ignorable code points that are not format characters: shown as nothing (the
# Hangul fillers, the combining grapheme joiner, Khmer and Mongolian ones)
IGNORABLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u3164\uffa0")


def invisible(ch: str) -> bool:
    """A character that does not show as itself: refused in any text we send or take as a
    setting, written out or blanked wherever a value is shown back."""
    # Cc controls (line breaks, tabs, NUL), Cf format characters (zero-width, bidi marks),
    # Zl/Zp line and paragraph separators, unassigned or private code points, and IGNORABLE.
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") or ch in IGNORABLE


_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# bidi embeddings, overrides and isolates, and the direction marks
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# punctuation named as itself in a shape: it says what kind of value was typed (an email, a
# URL, a phone number, a date) without saying which
_NAMED = "@.-+/:,()_'"


def _kind(ch: str) -> str:
    """The class of one character, as ``shape`` names it."""
    if "0" <= ch <= "9":
        return "digits"
    if ch in _LINE_BREAKS:
        return "a line break"
    if ch == "\t":
        return "a tab"
    if ch == "\x00":
        return "a NUL character"
    if ch in _BIDI:
        return "a bidi control character"
    if ch == " ":
        return "spaces"
    cat = unicodedata.category(ch)
    if cat == "Cc":
        return "a control character"
    if cat == "Cs":
        return "an unpaired surrogate"
    if cat in ("Cf", "Co", "Cn") or ch in IGNORABLE:
        return "an invisible character" if cat == "Cf" or ch in IGNORABLE else "an unassigned or private character"
    if cat.startswith("L"):
        return "letters"
    if cat == "Nd":
        return "digits other than 0-9"
    if cat.startswith("N"):
        return "other numerals"
    if cat.startswith("Z"):
        return "an unusual space"
    if cat.startswith("M"):
        return "accents"
    if ch in _NAMED:
        return f"'{ch}'"
    return "other symbols"


# the order classes are named in: what the value mostly is, then its signs, then what hides
_ORDER = ("letters", "digits", "spaces", *(f"'{c}'" for c in _NAMED), "accents", "digits other than 0-9",
          "other numerals", "other symbols", "an unusual space", "a line break", "a tab", "a NUL character",
          "a control character", "a bidi control character", "an invisible character", "an unpaired surrogate",
          "an unassigned or private character")


def shape(value: object) -> str:
    """A value described without revealing it: its length and the kinds of character in it.

    "empty", "11 digits", "9 characters: digits and a space", "23 characters: letters, '.'
    and '@'", "7 characters: digits and a line break". Safe for logs, Sentry, dead letters
    and the CLI; the value itself goes to the company's email only."""
    text = "" if value is None else str(value)
    if not text:
        return "empty"
    n = len(text)
    kinds = {_kind(ch) for ch in text}
    if kinds == {"digits"}:
        return f"{n} digit{'s' if n != 1 else ''}"
    if kinds == {"spaces"}:
        return f"{n} space{'s' if n != 1 else ''}"
    names = [k for k in _ORDER if k in kinds]
    if text.count(" ") == 1:
        names = ["a space" if k == "spaces" else k for k in names]
    if n == 1:
        names = ["a letter" if k == "letters" else k for k in names]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"{n} character{'s' if n != 1 else ''}: {listed}"


def named(value: object, pattern: str) -> str:
    """A code or number for logs and errors: as it is when it is a valid one of its kind
    (``pattern`` matches it whole, e.g. ``[A-Z]{3}`` for a currency code), else its shape in
    brackets: "(11 digits)"."""
    text = "" if value is None else str(value)
    return text if re.fullmatch(pattern, text) else f"({shape(text)})"


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
    return "'" + _cut("".join(_escape(ch) if invisible(ch) else ch for ch in text), limit) + "'"


def plain(value: object, limit: int = 200) -> str:
    """Running text (a name, a description) with invisible characters turned into spaces,
    runs of whitespace folded, and at most ``limit`` characters."""
    text = "" if value is None else str(value)
    text = "".join(" " if invisible(ch) else ch for ch in text)
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
    if text and len(text) <= limit and not any(invisible(ch) or ch.isspace() for ch in text):
        return text
    return shown(text, limit)
