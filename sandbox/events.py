"""The platform's event plans on the SpareBank 1 stand-in: ``/api/biz/eventplans`` (GET, POST,
PUT, DELETE), and after every write of a customer or project (a create, an update, a
delete: ours or a "person's" through ``SB1Store``) a signed webhook to each active
subscriber of the company's matching plans, sent in order from a thread of its own.

    Softrig-Signature: t=<unix>,v1=<hex HMAC-SHA256 of t + "." + body, keyed with SigningKey>

``EventPlans.refuse(company_key)`` makes the company's plans "not allowed" (403), as the
platform answers a company whose licence has none. ``deliveries`` lists what was sent and
the answer it got.
"""
from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import queue
import threading
import time
import uuid
from typing import Any

import requests
from flask import Flask, jsonify, request

ROUTE = "eventplans"
# the fields a plan and a subscriber may have: the Swagger's, and the developer guide's SigningKey
PLAN_FIELDS = {"ID", "Name", "PlanType", "ModelFilter", "OperationFilter", "ExpressionFilter", "Active",
               "Cargo", "JobNames", "Subscribers", "_createguid", "Deleted", "StatusCode"}
SUBSCRIBER_FIELDS = {"ID", "Name", "Endpoint", "SigningKey", "Active", "Authorization", "Headers",
                     "_createguid", "Deleted", "EventplanID", "StatusCode"}
ENTITIES = {"customers": "Customer", "projects": "Project"}
OPERATIONS = {"POST": ("C", "Create"), "PUT": ("U", "Update"), "DELETE": ("D", "Delete")}


class EventPlans:
    def __init__(self, store):
        self.store = store
        self.plans: dict[str, dict[int, dict]] = {}      # lower-cased company key -> ID -> plan
        self.refused: set[str] = set()
        self.deliveries: list[dict] = []
        self._ids = itertools.count(9_000_001)
        self._outbox: queue.Queue = queue.Queue()
        self.clock_skew = 0.0       # seconds added to the signature's t (tests of old signatures)
        threading.Thread(target=self._deliver, name="sandbox-eventplans", daemon=True).start()

    def refuse(self, company_key: str, refused: bool = True) -> None:
        (self.refused.add if refused else self.refused.discard)(company_key.lower())

    # --- the API ---------------------------------------------------------------------

    def _check(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise ValueError("Expected an Eventplan object")
        unknown = sorted(set(body) - PLAN_FIELDS)
        subs = body.get("Subscribers") or []
        if not isinstance(subs, list) or not all(isinstance(s, dict) for s in subs):
            raise ValueError("Subscribers must be a list of EventSubscriber")
        unknown += sorted(f"Subscribers.{k}" for k in {k for s in subs for k in s} - SUBSCRIBER_FIELDS)
        if unknown:
            raise ValueError(f"Unknown fields: {', '.join(unknown)}")
        return body

    def save(self, company_key: str, body: Any, plan_id: int | None = None) -> dict:
        body = self._check(body)
        with self.store.lock:
            plans = self.plans.setdefault(company_key.lower(), {})
            if plan_id is None:
                plan_id = next(self._ids)
                plan = {"ID": plan_id, "Active": True, "Deleted": False, "Subscribers": []}
                plans[plan_id] = plan
            else:
                plan = plans.get(plan_id)
                if plan is None:
                    raise KeyError(plan_id)
            subs = {s["ID"]: s for s in plan["Subscribers"]}
            for key, value in body.items():
                if key != "Subscribers" and key != "ID":
                    plan[key] = value
            if "Subscribers" in body:
                for sub in body["Subscribers"]:
                    current = subs.get(sub.get("ID")) if sub.get("ID") else None
                    if current is None:
                        current = {"ID": next(self._ids), "EventplanID": plan_id, "Active": True, "Deleted": False}
                        subs[current["ID"]] = current
                    current.update({k: v for k, v in sub.items() if k != "ID"})
                plan["Subscribers"] = list(subs.values())
            return self.render(plan)

    @staticmethod
    def render(plan: dict) -> dict:
        shown = copy.deepcopy(plan)
        for sub in shown["Subscribers"]:
            sub.pop("SigningKey", None)       # a key is written, never read back
        return shown

    # --- delivery --------------------------------------------------------------------

    def written(self, company_key: str, method: str, route: str, doc: dict) -> None:
        entity, (letter, event_type) = ENTITIES.get(route), OPERATIONS.get(method, (None, None))
        if entity is None or letter is None:
            return
        with self.store.lock:
            plans = list(self.plans.get(company_key.lower(), {}).values())
            targets = [copy.deepcopy(sub) for plan in plans
                       if plan.get("Active", True) and not plan.get("Deleted")
                       and entity in str(plan.get("ModelFilter", "")).split(",")
                       and letter in str(plan.get("OperationFilter", ""))
                       for sub in plan["Subscribers"] if sub.get("Active", True) and not sub.get("Deleted")]
        if not targets:
            return
        payload = {"EventType": event_type, "EntityName": entity, "EntityID": doc.get("ID"),
                   "Entity": None if method == "DELETE" else doc, "CompanyKey": company_key,
                   "MessageID": str(uuid.uuid4()), "TimeStamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        body = json.dumps(payload, default=str).encode()
        for sub in targets:
            self._outbox.put((sub, body))

    def _deliver(self) -> None:
        session = requests.Session()
        while True:
            sub, body = self._outbox.get()
            t = int(time.time() + self.clock_skew)
            key = str(sub.get("SigningKey") or "")
            mac = hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
            try:
                status = session.post(sub["Endpoint"], data=body, timeout=5, headers={
                    "Content-Type": "application/json", "Softrig-Signature": f"t={t},v1={mac}"}).status_code
            except requests.RequestException as err:
                status = type(err).__name__
            with self.store.lock:
                self.deliveries.append({"endpoint": sub["Endpoint"], "status": status, **json.loads(body)})
            self._outbox.task_done()

    def drain(self, timeout: float = 10) -> None:
        """Wait until every queued webhook was sent (tests)."""
        end = time.time() + timeout
        while self._outbox.unfinished_tasks and time.time() < end:
            time.sleep(0.02)


def install(app: Flask, store) -> EventPlans:
    """Serve ``/api/biz/eventplans`` on ``app`` and send webhooks after ``store``'s writes."""
    hub = EventPlans(store)
    store.event_plans = hub
    store.write_listeners.append(hub.written)
    delete = store.delete

    def delete_and_tell(company_key: str, route: str, id_: int) -> None:
        delete(company_key, route, id_)
        hub.written(store.company(company_key).key, "DELETE", route, {"ID": id_})
    store.delete = delete_and_tell

    def authorized() -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        company_key = request.headers.get("CompanyKey", "").strip()
        if scheme.lower() != "bearer" or store.check_token(token.strip()) is None or store.company(company_key) is None:
            return None
        return company_key

    @app.route(f"/api/biz/{ROUTE}", methods=["GET", "POST"], endpoint="eventplans")
    @app.route(f"/api/biz/{ROUTE}/<int:plan_id>", methods=["GET", "PUT", "DELETE"], endpoint="eventplan")
    def eventplans(plan_id: int | None = None):
        store.count_request(request.method, ROUTE)
        company_key = authorized()
        if company_key is None:
            return jsonify({"Message": "Unauthorized"}), 401
        if company_key.lower() in hub.refused:
            return jsonify({"Message": "Event plans are not allowed for this company"}), 403
        plans = hub.plans.setdefault(company_key.lower(), {})
        try:
            if request.method == "GET" and plan_id is None:
                with store.lock:
                    return jsonify([hub.render(p) for p in plans.values() if not p.get("Deleted")])
            if request.method == "GET":
                return jsonify(hub.render(plans[plan_id]))
            if request.method == "DELETE":
                with store.lock:
                    plans.pop(plan_id)
                return "", 204
            body = request.get_json(silent=True)
            if request.method == "POST":
                return jsonify(hub.save(company_key, body)), 201
            return jsonify(hub.save(company_key, body, plan_id))
        except KeyError:
            return jsonify({"Message": f"Eventplan with ID {plan_id} not found"}), 404
        except ValueError as err:
            return jsonify({"Message": str(err)}), 400
