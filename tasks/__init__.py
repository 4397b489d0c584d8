"""Task modules, one per data type (each declares its ``TYPE`` and its body).

``bodies()`` maps a data type to its sync body, for the CLI's dry run; the Celery tasks
themselves are found by name (``DataType.task``)."""
from __future__ import annotations


def bodies():
    from . import customers, invoices, projects
    return {module.TYPE.name: body for module, body in (
        (customers, customers.upsert_customer), (projects, projects.upsert_project),
        (invoices, invoices.post_invoice))}
