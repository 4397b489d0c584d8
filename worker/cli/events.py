"""``moment-sb1 events subscribe``: give each company one event plan of SpareBank 1 Regnskap
that sends its customers' and projects' changes to our receiver (docs/architecture.md,
"Moment stays master in the books"). Idempotent: a plan for our endpoint is updated, never
doubled. What came of it per integration is kept in Redis for ``status``."""
from __future__ import annotations

import json
import time

import click

from clients.eventplans import NotAllowed, subscribe
from errors import IntegrationError
from worker.cli.base import load_runtime, main, pick, when
from worker.config.integrations import IntegrationsError
from worker.intake.events import endpoint, signing_key

EVENT_TYPES = ("customers", "projects")
NOT_ALLOWED = ("event plans are not allowed for this company: the nightly reconciliation writes Moment's "
               "values back a day later")


def plan_record(rt, integration_id: str) -> dict | None:
    """What the last ``events subscribe`` came to for an integration (None: never run)."""
    raw = rt.redis.hget(rt.keys.event_plans(), integration_id)
    return json.loads(raw) if raw else None


def plan_line(rt, integration) -> str:
    """One line for ``status``."""
    if not any(integration.wants(t) for t in EVENT_TYPES):
        return "no customers or projects: no event plan needed"
    if not rt.settings.events_url:
        return "MSB1_EVENTS_URL not set: changes made in the books are found by the nightly reconciliation"
    record = plan_record(rt, integration.id)
    if record is None:
        return "not subscribed (moment-sb1 events subscribe); until then the nightly reconciliation finds changes"
    if record["state"] == "not-allowed":
        return f"{NOT_ALLOWED} (as of {when(record['at'])})"
    return f"event plan {record['plan_id']} since {when(record['at'])}"


@main.group()
def events() -> None:
    """SpareBank 1 Regnskap's event plans: hear of changes made in the books by hand."""


@events.command("subscribe")
@click.argument("integration_id", required=False)
@click.option("--all", "every", is_flag=True, help="every integration that transfers customers or projects")
def subscribe_command(integration_id: str | None, every: bool) -> None:
    """Subscribe INTEGRATION_ID (or --all) to the platform's events for its customers and
    projects, signed with a key derived from its webhook secret. Run it where both the
    worker's SpareBank 1 credentials and the company's webhook secret are at hand."""
    if every == (integration_id is not None):
        raise click.UsageError("name one integration, or --all")
    rt = load_runtime()
    url = rt.settings.events_url
    if not url:
        raise click.ClickException("MSB1_EVENTS_URL is not set: the public URL of the receiver's /sb1/events route")
    failed = 0
    for integration in pick(rt, integration_id):
        iid = integration.id
        if not any(integration.wants(t) for t in EVENT_TYPES):
            click.echo(f"{iid}: transfers no customers or projects; no event plan")
            continue
        try:
            key = signing_key(integration)
        except (ValueError, IntegrationsError) as err:
            failed += 1
            click.echo(f"FAIL  {iid}: {err}")
            continue
        target = endpoint(url, iid)
        try:
            done = subscribe(rt.sb1(integration), target, key)
        except NotAllowed:
            record = {"state": "not-allowed", "at": time.time()}
            click.echo(f"{iid}: {NOT_ALLOWED}")
        except IntegrationError as err:
            failed += 1
            click.echo(f"FAIL  {iid}: {err}")
            continue
        else:
            record = {"state": "subscribed", "plan_id": done.plan_id, "at": time.time()}
            click.echo(f"{iid}: event plan {done.plan_id} {'created' if done.created else 'brought up to date'}, "
                       f"sending to {target}")
        rt.redis.hset(rt.keys.event_plans(), iid, json.dumps(record))
    if failed:
        raise click.ClickException(f"{failed} integration(s) not subscribed")
