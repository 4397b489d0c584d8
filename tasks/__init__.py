"""Task modules, one per data type. ``BODIES`` maps a data type to its sync body, for the
CLI's dry run (the Celery tasks themselves are found by name through ``worker.app``)."""
from __future__ import annotations


def bodies():
    from .customers import upsert_customer
    return {"customers": upsert_customer}
