"""The platform's list queries: ``filter``, ``orderby``, ``expand``, ``select``.

Filter grammar: ``Field eq value`` (``ne gt lt ge le``), ``startswith(Field,'x')``,
``contains(Field,'x')``, ``and``/``or``/``not``, parentheses; strings in ``'`` with an
inner ``'`` doubled; numbers, ``true``, ``false``, ``null`` bare; dotted paths through
nested objects (``Info.Name``). Field names are matched case-insensitively, values exactly.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .sb1_schema import EntityType, Schema

Doc = dict[str, Any]
Predicate = Callable[[Doc], bool]

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<number>-?\d+(?:\.\d+)?)(?![\w.])
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)
    )""", re.VERBOSE)
_COMPARISONS = {"eq", "ne", "gt", "lt", "ge", "le"}
_FUNCTIONS = {"startswith", "contains", "endswith"}


class QueryError(ValueError):
    """The query cannot be parsed or names an unknown field."""


def resolve_path(schema: Schema, type_name: str, path: str, *, leaf_scalar: bool = True,
                 ) -> tuple[str, ...] | None:
    """Canonical field names of a dotted path through nested objects, or None if unknown.

    Entity types missing from the schema accept any path as written.
    """
    entity: EntityType | None = schema.get(type_name)
    parts = path.split(".")
    resolved: list[str] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if entity is None or entity.is_open:
            resolved.append(part)
            entity = None
            continue
        name = entity.canonical(part)
        if name is None:
            return None
        if last:
            if leaf_scalar and name not in entity.scalars:
                return None
        elif name not in entity.refs and not (not leaf_scalar and name in entity.lists):
            return None
        resolved.append(name)
        entity = schema.get(entity.child_type(name))
    return tuple(resolved)


def get_path(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos, text = [], 0, text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise QueryError(f"cannot parse filter at {text[pos:pos + 20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def compare(op: str, left: Any, right: Any) -> bool:
    """SQL-like comparison; a number and a numeric string compare as numbers."""
    if left is None or right is None:
        same = left is None and right is None
        return same if op == "eq" else (not same if op == "ne" else False)
    if isinstance(left, bool) or isinstance(right, bool):
        pair: tuple[Any, Any] | None = (left, right) if type(left) is type(right) else None
    elif isinstance(left, str) and isinstance(right, str):
        pair = (left, right)
    else:
        a, b = _as_number(left), _as_number(right)
        pair = (a, b) if a is not None and b is not None else None
    if pair is None:
        return op == "ne"
    a, b = pair
    try:
        return {"eq": a == b, "ne": a != b, "gt": a > b, "lt": a < b,
                "ge": a >= b, "le": a <= b}[op]
    except TypeError:
        return False


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], field: Callable[[str], tuple[str, ...]]):
        self.tokens, self.pos, self.field = tokens, 0, field

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        token = self.peek()
        if (token is None or (kind and token[0] != kind)
                or (value and token[1].lower() != value)):
            raise QueryError(f"expected {value or kind}, got {token and token[1]!r}")
        self.pos += 1
        return token[1]

    def at_word(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "word" and token[1].lower() in words

    def parse(self) -> Predicate:
        predicate = self.expr()
        if self.peek() is not None:
            raise QueryError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return predicate

    def expr(self) -> Predicate:
        terms = [self.term()]
        while self.at_word("or"):
            self.pos += 1
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else (lambda d: any(t(d) for t in terms))

    def term(self) -> Predicate:
        factors = [self.factor()]
        while self.at_word("and"):
            self.pos += 1
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else (lambda d: all(f(d) for f in factors))

    def factor(self) -> Predicate:
        token = self.peek()
        if token == ("punct", "("):
            self.pos += 1
            inner = self.expr()
            self.take("punct", ")")
            return inner
        if self.at_word("not"):
            self.pos += 1
            negated = self.factor()
            return lambda d: not negated(d)
        if self.at_word(*_FUNCTIONS) and self.tokens[self.pos + 1:self.pos + 2] == [("punct", "(")]:
            function = self.take("word").lower()
            self.take("punct", "(")
            path = self.field(self.take("word"))
            self.take("punct", ",")
            needle = self.literal()
            self.take("punct", ")")
            if not isinstance(needle, str):
                raise QueryError(f"{function} needs a string")
            method = {"startswith": str.startswith, "contains": str.__contains__,
                      "endswith": str.endswith}[function]
            return lambda d: (isinstance(v := get_path(d, path), (str, int))
                              and not isinstance(v, bool) and method(str(v), needle))
        path = self.field(self.take("word"))
        op = self.take("word").lower()
        if op not in _COMPARISONS:
            raise QueryError(f"unknown operator {op!r}")
        value = self.literal()
        return lambda d: compare(op, get_path(d, path), value)

    def literal(self) -> Any:
        kind, text = self.peek() or ("", "")
        self.pos += 1
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if kind == "number":
            return _number(text)
        if kind == "word" and text.lower() in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text.lower()]
        raise QueryError(f"expected a value, got {text!r}")


def parse_filter(text: str, schema: Schema, type_name: str) -> Predicate:
    """A predicate for ``text``; raises QueryError if unparseable or a field is unknown."""
    def field(path: str) -> tuple[str, ...]:
        resolved = resolve_path(schema, type_name, path)
        if resolved is None:
            raise QueryError(f"unknown field {path!r}")
        return resolved
    return _Parser(_tokenize(text), field).parse()


def order_key(path: tuple[str, ...]) -> Callable[[Doc], tuple[int, Any]]:
    """Sort key: nulls first, numbers before strings."""
    def key(doc: Doc) -> tuple[int, Any]:
        value = get_path(doc, path)
        if value is None:
            return (0, 0)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (1, value)
        return (2, str(value))
    return key


def apply_orderby(docs: list[Doc], orderby: str | None, schema: Schema,
                  type_name: str) -> list[Doc]:
    """Sort by ``ID`` then by ``"Field [asc|desc], ..."``; unknown fields are skipped."""
    docs = sorted(docs, key=lambda d: d.get("ID") or 0)
    terms = [t.split() for t in (orderby or "").split(",") if t.strip()]
    for term in reversed(terms):
        path = resolve_path(schema, type_name, term[0])
        if path is None or len(term) > 2:
            continue
        descending = len(term) == 2 and term[1].lower() == "desc"
        docs.sort(key=order_key(path), reverse=descending)
    return docs


def expand_paths(expand: str | None, schema: Schema, type_name: str) -> set[tuple[str, ...]]:
    """Canonical relation paths (with every prefix) named in ``expand``."""
    paths: set[tuple[str, ...]] = set()
    for item in (expand or "").split(","):
        item = item.strip()
        resolved = resolve_path(schema, type_name, item, leaf_scalar=False) if item else None
        if resolved:
            paths.update(resolved[:i] for i in range(1, len(resolved) + 1))
    return paths


def render(doc: Any, expanded: set[tuple[str, ...]] | None, prefix: tuple[str, ...] = ()) -> Any:
    """A copy with scalar fields plus the nested objects/lists whose path is expanded.

    ``expanded=None`` means everything (a fully expanded copy).
    """
    if isinstance(doc, list):
        return [render(item, expanded, prefix) for item in doc]
    if not isinstance(doc, dict):
        return doc
    out: Doc = {}
    for key, value in doc.items():
        if isinstance(value, (dict, list)):
            path = (*prefix, key)
            if expanded is None or path in expanded:
                out[key] = render(value, expanded, path)
        else:
            out[key] = value
    return out


def apply_select(doc: Doc, select: str | None, schema: Schema, type_name: str) -> Doc:
    """Keep only the selected (dotted) fields; no known field selected -> unchanged."""
    paths = [resolve_path(schema, type_name, s.strip(), leaf_scalar=False)
             for s in (select or "").split(",") if s.strip()]
    paths = [p for p in paths if p]
    if not paths:
        return doc
    out: Doc = {}
    for path in paths:
        value = get_path(doc, path)
        if value is None and not _has_path(doc, path):
            continue
        target = out
        for part in path[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                break
        else:
            target[path[-1]] = value
    return out


def _has_path(doc: Any, path: tuple[str, ...]) -> bool:
    for part in path:
        if not isinstance(doc, dict) or part not in doc:
            return False
        doc = doc[part]
    return True
