"""``sync.project``: one Moment project into SpareBank 1 Regnskap, its customer first."""
from __future__ import annotations

from clients.errors import RecordInvalid, TransientError
from schemas.moment import MOMENT_PROJECT, MomentProject
from schemas.sb1 import check_project, create_guid, fingerprint, project_body, project_fields
from worker.app import app
from worker.sync import SyncContext, run_sync
from .customers import upsert_customer
from .upsert import fetch, upsert

ROUTE = "projects"


@app.task(name="sync.project", bind=True)
def sync_project(self, integration_id: str, project_id: int) -> str:
    return run_sync(self, "projects", integration_id, project_id, upsert_project)


def fetch_project(ctx: SyncContext) -> MomentProject | None:
    project = fetch(ctx, MOMENT_PROJECT)
    if project is not None:
        number = project.project_number or "(no number)"
        ctx.describe(f"project {number}", f"project {project.name} (project number {number})")
    return project


def ensure_customer(ctx: SyncContext, customer_moment_id: int) -> int:
    """The platform ID of the project's customer, transferring the customer first when
    it is not in the books yet (under the customer's own lock, like its own sync)."""
    rt = ctx.runtime
    known = rt.state.get(ctx.integration.id, "customers", customer_moment_id)
    if known and known.get("sb1_id"):
        return known["sb1_id"]
    sub = SyncContext(rt, ctx.integration, "customers", customer_moment_id, _clients=ctx._clients)
    lock = rt.redis.lock(rt.keys.lock(ctx.integration.id, "customers", customer_moment_id),
                         timeout=rt.settings.lock_timeout, blocking_timeout=rt.settings.lock_wait)
    if not lock.acquire():
        raise TransientError(f"the project's customer (Moment id {customer_moment_id}) is being transferred")
    try:
        outcome = upsert_customer(sub)
    except RecordInvalid as err:
        raise RecordInvalid(f"its customer could not be transferred first: {err}",
                            hint=err.hint or "Correct the customer in Moment first.") from None
    finally:
        lock.release()
    known = rt.state.get(ctx.integration.id, "customers", customer_moment_id)
    if outcome == "gone" or not known:
        raise RecordInvalid(f"its customer (Moment id {customer_moment_id}) does not exist in Moment",
                            hint="Give the project an existing customer in Moment.")
    return known["sb1_id"]


def upsert_project(ctx: SyncContext) -> str:
    project = fetch_project(ctx)
    if project is None:
        return "gone"
    number = check_project(project)
    wanted = project_fields(project, number)
    previous = ctx.previous()
    digest = fingerprint(wanted)
    done = ctx.already_done(previous, digest, project.last_modified_date)
    if done:
        return done
    customer_id = ensure_customer(ctx, project.customer.id)

    def guid(part: str) -> str:
        return create_guid(ctx.integration.id, ROUTE, ctx.record_id, project.last_modified_date, part)

    outcome, sb1_id = upsert(
        ctx, ROUTE, previous,
        lambda existing: project_body(wanted, customer_id=customer_id, existing=existing, guid=guid),
        key_field="ProjectNumber", key=number, expand=None, what="project")
    ctx.transferred(digest, sb1_id, project.last_modified_date)
    return outcome
