"""``sync.project``: one Moment project into SpareBank 1 Regnskap, its customer first."""
from __future__ import annotations

from schemas.datatypes import CUSTOMERS, PROJECTS
from schemas.moment import MomentProject
from worker.sync.context import SyncContext
from worker.sync.registry import sync_task

from .customers import upsert_customer
from .upsert import ensure_in_books, record_body

TYPE = PROJECTS


def references(ctx: SyncContext, project: MomentProject, wanted: dict) -> dict:
    """The platform's ID of the project's customer, transferred first when it is not there."""
    return {"customer_id": ensure_in_books(ctx, CUSTOMERS.name, project.customer.id, upsert_customer)}


upsert_project = record_body(TYPE, references)
sync_project = sync_task(TYPE, upsert_project)
