"""``sync.project``: one Moment project into SpareBank 1 Regnskap, its customer first."""
from __future__ import annotations

from schemas.datatypes import CUSTOMERS, PROJECTS
from schemas.moment import MomentProject
from schemas.sb1 import check_project, create_guid, fingerprint, project_body, project_fields
from schemas.text import plain
from worker.app import app
from worker.outcomes import Outcome
from worker.sync import SyncContext, run_sync
from .customers import upsert_customer
from .upsert import ensure_in_books, fetch, upsert

TYPE = PROJECTS


@app.task(name=TYPE.task, bind=True)
def sync_project(self, integration_id: str, project_id: int, attempt: int = 1) -> str:
    return run_sync(self, TYPE.name, integration_id, project_id, upsert_project, attempt)


def fetch_project(ctx: SyncContext) -> MomentProject | None:
    project = fetch(ctx, TYPE.moment_schema)
    if project is not None:
        ctx.describe(project.project_number, name=plain(project.name, 80))
    return project


def upsert_project(ctx: SyncContext) -> Outcome:
    project = fetch_project(ctx)
    if project is None:
        return Outcome.GONE
    number = check_project(project)
    wanted = project_fields(project, number)
    previous = ctx.previous()
    digest = fingerprint(wanted)
    done = ctx.already_done(previous, digest, project.last_modified_date)
    if done:
        return done
    customer_id = ensure_in_books(ctx, CUSTOMERS.name, project.customer.id, upsert_customer)

    def guid(part: str) -> str:
        return create_guid(ctx.integration.id, TYPE.sb1_route, ctx.record_id, project.last_modified_date, part)

    outcome, sb1_id = upsert(
        ctx, TYPE.sb1_route, previous,
        lambda existing: project_body(wanted, customer_id=customer_id, existing=existing, guid=guid),
        key_field=TYPE.key_field, key=number, expand=TYPE.expand, what=TYPE.noun)
    ctx.transferred(digest, sb1_id, project.last_modified_date)
    return outcome
