"""The platform's event plans (webhooks out of SpareBank 1 Regnskap): one plan per company
that sends its customers' and projects' creates, updates and deletes to our receiver,
signed with a key of our own.

    POST {base}/api/biz/eventplans   {"Name", "PlanType": 0, "ModelFilter": "Customer,Project",
                                      "OperationFilter": "CUD", "Active": true,
                                      SUBSCRIBERS: [{"Name", "Endpoint", SIGNING_KEY_FIELD, "Active"}]}

What is assumed lives in the constants below (docs/architecture.md, "Moment stays master"):
the list of subscribers is ``Subscribers`` in the platform's Swagger (``Eventplan``; the
developer guide says ``EventSubscribers``); the subscriber's key field is the guide's
``SigningKey``, which the Swagger's ``EventSubscriber`` does not list (the guide is newer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from errors import AuthError, IntegrationError, PermanentError

from .sb1 import SB1Client

ROUTE = "eventplans"
# the subscriber list's name: the Swagger's (unieconomy-swagger.json, Eventplan.Subscribers)
SUBSCRIBERS = "Subscribers"
# the subscriber's signing key: the developer guide's name (not in the Swagger)
SIGNING_KEY_FIELD = "SigningKey"
PLAN_NAME = "moment-sb1"
PLAN_TYPE = 0                       # a webhook plan
MODEL_FILTER = "Customer,Project"   # the entities whose changes we hear of
OPERATION_FILTER = "CUD"            # create, update, delete


class NotAllowed(PermanentError):
    """The platform refuses event plans for this company (its licence or its settings)."""


@dataclass(frozen=True)
class Subscription:
    plan_id: int
    created: bool     # False: an existing plan for our endpoint was brought up to date


def _subscriber(endpoint: str, signing_key: str, existing: dict | None = None) -> dict[str, Any]:
    body = {"Name": PLAN_NAME, "Endpoint": endpoint, SIGNING_KEY_FIELD: signing_key, "Active": True}
    if existing and existing.get("ID"):
        body["ID"] = existing["ID"]
    return body


def _ours(plan: dict, endpoint: str) -> dict | None:
    """The plan's subscriber that calls ``endpoint``, or None."""
    for sub in plan.get(SUBSCRIBERS) or plan.get("EventSubscribers") or []:
        if isinstance(sub, dict) and sub.get("Endpoint") == endpoint and not sub.get("Deleted"):
            return sub
    return None


def find_plan(sb1: SB1Client, endpoint: str) -> dict | None:
    """The company's plan that sends to ``endpoint`` (ours), or None."""
    plans = sb1.query(ROUTE, expand=SUBSCRIBERS)
    return next((p for p in plans if isinstance(p, dict) and not p.get("Deleted") and _ours(p, endpoint)), None)


def subscribe(sb1: SB1Client, endpoint: str, signing_key: str) -> Subscription:
    """Make sure the company has exactly one plan of ours for ``endpoint``, active, for
    customers and projects, with ``signing_key``: an existing one is updated, never doubled.
    ``NotAllowed`` when the platform refuses event plans for the company."""
    try:
        plan = find_plan(sb1, endpoint)
        body = {"Name": PLAN_NAME, "PlanType": PLAN_TYPE, "ModelFilter": MODEL_FILTER,
                "OperationFilter": OPERATION_FILTER, "Active": True,
                SUBSCRIBERS: [_subscriber(endpoint, signing_key, plan and _ours(plan, endpoint))]}
        if plan is None:
            return Subscription(int(sb1.create(ROUTE, body)["ID"]), created=True)
        sb1.update(ROUTE, plan["ID"], {"ID": plan["ID"], **body})
        return Subscription(int(plan["ID"]), created=False)
    except AuthError as err:
        if err.status == 403:
            raise NotAllowed(f"SpareBank 1 Regnskap does not allow event plans for this company ({err.message})",
                             status=403, service=sb1.service) from None
        raise


def plan_state(sb1: SB1Client, endpoint: str) -> str:
    """One line for check-config: whether the company's plan of ours is there and active."""
    try:
        plan = find_plan(sb1, endpoint)
    except AuthError as err:
        if err.status == 403:
            return "not allowed for this company (the nightly reconciliation repairs a day later)"
        raise
    except IntegrationError:
        raise
    if plan is None:
        return "no event plan (run: moment-sb1 events subscribe)"
    active = plan.get("Active", True) and (_ours(plan, endpoint) or {}).get("Active", True)
    return f"event plan {plan['ID']} {'active' if active else 'NOT active'}"
