"""The reconciliation's runs in Redis, newest first: what each run checked and found (the
public findings only: records by number or Moment id, values by ``compare.safe_value``)."""
from __future__ import annotations

import json
from typing import Any

import redis

from worker.store.keys import Keys

KEEP_RUNS = 200         # per integration: months of nightly runs


class ReconcileHistory:
    def __init__(self, r: redis.Redis, keys: Keys):
        self.redis, self.keys = r, keys

    def add(self, run: dict[str, Any]) -> None:
        key = self.keys.reconcile_history(run["integration"])
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(key, json.dumps(run, default=str))
        pipe.ltrim(key, 0, KEEP_RUNS - 1)
        pipe.execute()

    def runs(self, integration_id: str, limit: int = 20) -> list[dict[str, Any]]:
        raws = self.redis.lrange(self.keys.reconcile_history(integration_id), 0, max(0, limit - 1))
        return [json.loads(raw) for raw in raws]
