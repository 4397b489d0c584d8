"""Task modules, one per data type. ``BODIES`` maps a data type to its sync body, for the
CLI's dry run (the Celery tasks themselves are found by name through ``worker.app``)."""
from __future__ import annotations


def bodies():
    from .customers import upsert_customer
    from .invoices import post_invoice
    from .projects import upsert_project
    return {"customers": upsert_customer, "projects": upsert_project, "invoices": post_invoice}
