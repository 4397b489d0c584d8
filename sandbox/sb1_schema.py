"""The platform's entity shapes: field names and relations, from its Swagger.

The SpareBank 1 stand-in uses this to refuse unknown fields, to know which fields are
nested objects (``Info``) or lists (``Info.Phones``), and to check filter/expand paths.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from contract import SWAGGER as SWAGGER_PATH   # the definitions we use, from the platform's own Swagger

# Business API routes the sandbox serves -> entity type (as in the Swagger's POST bodies).
ROUTES: dict[str, str] = {
    "customers": "Customer",
    "projects": "Project",
    "invoices": "CustomerInvoice",
    "journalentries": "JournalEntry",
    "journalentrylines": "JournalEntryLine",
    "accounts": "Account",
    "vattypes": "VatType",
    "currencycodes": "CurrencyCode",
    "countries": "Country",
}


@dataclass(frozen=True)
class EntityType:
    """One definition: scalar fields, nested objects (refs) and nested lists."""

    name: str
    scalars: frozenset[str]
    refs: dict[str, str] = field(default_factory=dict)   # field -> type of the nested object
    lists: dict[str, str] = field(default_factory=dict)  # field -> type of the list items

    @property
    def is_open(self) -> bool:
        """No known properties (e.g. ``CustomValues``): anything goes."""
        return not (self.scalars or self.refs or self.lists)

    def has(self, name: str) -> bool:
        return name in self.scalars or name in self.refs or name in self.lists

    def canonical(self, name: str) -> str | None:
        """The field's real spelling for a case-insensitive ``name``, or None."""
        if self.has(name):
            return name
        lowered = name.lower()
        for known in (*self.scalars, *self.refs, *self.lists):
            if known.lower() == lowered:
                return known
        return None

    def child_type(self, name: str) -> str | None:
        return self.refs.get(name) or self.lists.get(name)


@dataclass(frozen=True)
class Schema:
    types: dict[str, EntityType]
    source: str  # the file it was read from

    def get(self, name: str | None) -> EntityType | None:
        return self.types.get(name) if name else None


def _from_swagger(path: Path) -> Schema:
    definitions = json.loads(path.read_text(encoding="utf-8"))["definitions"]
    types: dict[str, EntityType] = {}
    for name, definition in definitions.items():
        scalars, refs, lists = set(), {}, {}
        for prop, spec in (definition.get("properties") or {}).items():
            items = spec.get("items") or {}
            if "$ref" in spec:
                refs[prop] = spec["$ref"].rsplit("/", 1)[-1]
            elif spec.get("type") == "array" and "$ref" in items:
                lists[prop] = items["$ref"].rsplit("/", 1)[-1]
            else:
                scalars.add(prop)
        types[name] = EntityType(name, frozenset(scalars), refs, lists)
    return Schema(types, str(path))


@lru_cache(maxsize=4)
def load_schema(path: Path = SWAGGER_PATH) -> Schema:
    """The entity shapes of a Swagger file (by default the contract kept in the repo)."""
    return _from_swagger(Path(path))
