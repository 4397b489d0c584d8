"""One declaration per data type: everything the rest of the code needs to know about it.

Every table is derived from ``DATA_TYPES``: the data types an integration may choose, the
Celery task names, the webhook payload keys, the nouns of logs and emails. Adding a type
(Moment also has time records and expenses) is one declaration here, its schemas, and a
task module with its body.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from marshmallow import Schema

from .fields import CUSTOMER_TEXTS, PROJECT_TEXTS, checked
from .moment import MOMENT_CUSTOMER, MOMENT_INVOICE, MOMENT_PROJECT
from .sb1 import (
    CUSTOMER_EXPAND,
    check_customer,
    check_project,
    customer_body,
    customer_fields,
    project_body,
    project_fields,
)


@dataclass(frozen=True)
class DataType:
    name: str                   # "customers": the integrations file, the CLI, Redis keys, counters
    task: str                   # the Celery task's name (it travels inside queued messages)
    webhook_key: str            # Moment's webhook payload key: {"customer": {"id": ...}}
    moment_route: str           # Moment's entity: /companies/{code}/customers
    moment_schema: Schema       # how Moment's record is read
    sb1_route: str              # where it goes in SpareBank 1 Regnskap
    key_field: str | None       # the platform field that holds Moment's number (found by it)
    expand: str | None = None   # what to expand when reading the platform's record back
    depends_on: tuple[str, ...] = ()    # records that must be in the books first
    # language -> (noun, the noun with its article, plural, what its number is called)
    nouns: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)
    # for a record that is created and updated (the shared upsert body, ``tasks.upsert``):
    number: Callable[[Any], str] | None = None           # Moment's record -> its number as Moment has it
    # -> the number as the platform needs it, or RecordInvalid: the type's rules, then every text
    # field it sends (schemas/fields.py: no control or bidi character, a real email address, ...)
    check: Callable[[Any], Any] | None = None
    wanted: Callable[[Any, Any], dict] | None = None     # (record, number) -> what the books should say
    build: Callable[..., dict] | None = None             # (wanted, existing=, guid=, **references) -> the body
    # a type whose sync another type's sync queues (its record id is that type's): never
    # polled, never received by webhook, not chosen in the integrations file
    queued_by: str | None = None

    @property
    def noun(self) -> str:
        """The English noun of our own log lines and messages: "customer"."""
        return self.nouns["en"][0]


CUSTOMERS = DataType(
    name="customers", task="sync.customer", webhook_key="customer", moment_route="customers",
    moment_schema=MOMENT_CUSTOMER, sb1_route="customers", key_field="CustomerNumber", expand=CUSTOMER_EXPAND,
    nouns={"nb": ("kunde", "kunden", "kunder", "kundenummer"),
           "en": ("customer", "the customer", "customers", "customer number")},
    number=lambda c: c.customer_number, check=checked(check_customer, CUSTOMER_TEXTS), wanted=customer_fields,
    build=customer_body)
PROJECTS = DataType(
    name="projects", task="sync.project", webhook_key="project", moment_route="projects",
    moment_schema=MOMENT_PROJECT, sb1_route="projects", key_field="ProjectNumber", depends_on=("customers",),
    nouns={"nb": ("prosjekt", "prosjektet", "prosjekter", "prosjektnummer"),
           "en": ("project", "the project", "projects", "project number")},
    number=lambda p: p.project_number, check=checked(check_project, PROJECT_TEXTS), wanted=project_fields,
    build=project_body)
INVOICES = DataType(
    name="invoices", task="sync.invoice", webhook_key="invoice", moment_route="invoices",
    moment_schema=MOMENT_INVOICE, sb1_route="journalentries", key_field=None,
    depends_on=("customers", "projects"),
    nouns={"nb": ("faktura", "fakturaen", "fakturaer", "fakturanummer"),
           "en": ("invoice", "the invoice", "invoices", "invoice number")})

# an invoice's PDF attached to its voucher (tasks/documents.py), by the invoice's Moment id
DOCUMENTS = DataType(
    name="documents", task="sync.document", webhook_key="document", moment_route="invoices",
    moment_schema=MOMENT_INVOICE, sb1_route="files", key_field=None, depends_on=("invoices",),
    nouns={"nb": ("faktura-pdf", "faktura-pdf-en", "faktura-pdf-er", "fakturanummer"),
           "en": ("invoice PDF", "the invoice PDF", "invoice PDFs", "invoice number")},
    queued_by="invoices")

DATA_TYPES: dict[str, DataType] = {t.name: t for t in (CUSTOMERS, PROJECTS, INVOICES, DOCUMENTS)}
# what an integration chooses to transfer (the rest are queued by these)
CHOSEN_TYPES: tuple[str, ...] = tuple(name for name, t in DATA_TYPES.items() if t.queued_by is None)
