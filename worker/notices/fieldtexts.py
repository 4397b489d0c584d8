"""The Norwegian words of a field refused before it reaches the books (``schemas.fields``).

One text per kind of problem, naming the field as the company knows it in Moment and
what to do there; never the value (the company sees it in Moment). English says these
problems in the error's own words and its hint. ``worker.notices.templates`` adds these
to its ``NB_PROBLEMS``.
"""
from __future__ import annotations

from typing import Callable

from schemas.fields import field_label

# characters a person may know by name; any other is named by its code point
_CHARS_NB = {"U+0000": "NUL-tegn", "U+0009": "tabulator", "U+000A": "linjeskift", "U+000D": "linjeskift (CR)",
             "U+2028": "linjeskift (U+2028)", "U+2029": "avsnittskift (U+2029)", "U+00AD": "myk bindestrek",
             "U+200B": "mellomrom uten bredde", "U+FEFF": "usynlig BOM-tegn", "U+202E": "retningsmarkør (RLO)",
             "U+202D": "retningsmarkør (LRO)", "U+200F": "retningsmarkør (RLM)", "U+200E": "retningsmarkør (LRM)"}

_RETYPE = "Ser du ikke tegnet, kan du slette innholdet i feltet og skrive det inn på nytt."
_WEBSITE_TODO = ("Rett nettsiden i Moment til en vanlig nettadresse, for eksempel https://www.firma.no, og lagre. "
                 "Den overføres da på nytt.")


def _field(p: dict) -> str:
    return f"«{field_label(p['field'], p.get('line'), 'nb')}»"


def _char(p: dict) -> str:
    code = str(p.get("char", "")).split(" ")[0]
    return f"{_CHARS_NB.get(code, code)}, tegn nummer {p.get('position')}"


def _also(p: dict) -> str:
    others = [f"«{field_label(field, line, 'nb')}»" for field, line in p.get("also") or ()]
    if not others:
        return ""
    listed = others[0] if len(others) == 1 else f"{', '.join(others[:-1])} og {others[-1]}"
    return f" Også {listed} må rettes."


def _fix_char(p: dict) -> str:
    return f"Fjern tegnet fra feltet {_field(p)} i Moment og lagre; da overføres det på nytt. {_RETYPE}"


def _problem(what: Callable[[dict], str], todo: Callable[[dict], str]) -> Callable[[dict], tuple[str, str]]:
    return lambda p: (what(p) + _also(p), todo(p))


NB_FIELD_PROBLEMS: dict[str, Callable[[dict], tuple[str, str]]] = {
    "field-control-character": _problem(
        lambda p: (f"Feltet {_field(p)} inneholder et kontrolltegn ({_char(p)}), for eksempel et linjeskift "
                   "eller en tabulator. Slike tegn overføres ikke til SpareBank 1 Regnskap."), _fix_char),
    "field-format-character": _problem(
        lambda p: (f"Feltet {_field(p)} inneholder et usynlig tegn ({_char(p)}) som endrer hvordan teksten "
                   "vises, for eksempel en retningsmarkør eller et tegn uten bredde. Slike tegn overføres ikke "
                   "til SpareBank 1 Regnskap."), _fix_char),
    "field-invalid-character": _problem(
        lambda p: f"Feltet {_field(p)} inneholder et tegn som ikke er gyldig tekst ({_char(p)}).", _fix_char),
    "field-too-long": _problem(
        lambda p: (f"Feltet {_field(p)} er {p.get('length')} tegn langt. SpareBank 1 Regnskap tar høyst "
                   f"{p.get('limit')} tegn."),
        lambda p: f"Forkort feltet {_field(p)} i Moment til høyst {p.get('limit')} tegn, og lagre."),
    "email-invalid": _problem(
        lambda p: f"Feltet {_field(p)} er ikke én gyldig e-postadresse.",
        lambda p: (f"Rett e-postadressen i feltet {_field(p)} i Moment, og lagre. Feltet skal bare inneholde "
                   "én adresse, for eksempel post@firma.no, uten navn, mellomrom eller linjeskift.")),
    "website-scheme": _problem(
        lambda p: (f"Feltet {_field(p)} er ikke en vanlig nettadresse: den må begynne med https:// eller "
                   "http://. Andre typer lenker (for eksempel javascript: eller data:) overføres aldri."),
        lambda p: _WEBSITE_TODO),
    "website-credentials": _problem(
        lambda p: f"Nettadressen i feltet {_field(p)} inneholder brukernavn eller passord.",
        lambda p: ("Fjern brukernavn og passord fra nettadressen i Moment, og lagre. Bruk en vanlig "
                   "nettadresse, for eksempel https://www.firma.no.")),
    "website-invalid": _problem(lambda p: f"Feltet {_field(p)} er ikke en gyldig nettadresse.",
                                lambda p: _WEBSITE_TODO),
}
