"""The audit log: who changed what, when and why (pause, resume, replay, purge, backfill),
from the command line and the console alike (``moment-sb1 audit``).

One Redis list (``worker.store.keys``: ``{p}:audit``), newest first, the last ``KEEP``
entries. An entry names records the way dead letters do ("customer 100001", "customer with
Moment id 123"), never by a person's name or address; the reason is the operator's own
words, cut to one line of ``WHY_MAX`` characters.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field

import redis

from worker.store.keys import Keys

KEEP = 10000          # entries kept (years of a fleet's manual work; about 2 MB)
WHY_MAX = 300
WHAT_MAX = 300
ACTIONS = ("pause", "resume", "replay", "purge", "backfill")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def one_line(text: str | None, limit: int) -> str:
    """Text as an entry keeps it: control characters (line breaks too) as one space, cut to ``limit``."""
    text = _CONTROL.sub(" ", text or "").strip()
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass
class Entry:
    who: str
    action: str
    integration: str          # one integration's id (an action on several writes one entry each)
    what: str = ""            # "3 dead letters (customers)", "customer 100001", "customers since 2024-01-01"
    why: str = ""
    via: str = "cli"          # cli | console
    outcome: str = ""         # "queued 3", "deleted 2", "already paused"
    at: float = field(default_factory=time.time)


class AuditLog:
    def __init__(self, r: redis.Redis, keys: Keys):
        self.redis, self.keys = r, keys

    def write(self, who: str, action: str, integration: str, *, what: str = "", why: str = "", via: str = "cli",
              outcome: str = "") -> Entry:
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        entry = Entry(who=one_line(who, 64) or "unknown", action=action, integration=one_line(integration, 100),
                      what=one_line(what, WHAT_MAX), why=one_line(why, WHY_MAX), via=via,
                      outcome=one_line(outcome, 200))
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(self.keys.audit(), json.dumps(asdict(entry), ensure_ascii=False))
        pipe.ltrim(self.keys.audit(), 0, KEEP - 1)
        pipe.execute()
        return entry

    def read(self, integration: str | None = None, limit: int = 200) -> list[Entry]:
        """The newest entries first (of one integration, or of all)."""
        out = []
        for raw in self.redis.lrange(self.keys.audit(), 0, -1 if integration else limit - 1):
            entry = Entry(**json.loads(raw))
            if integration is None or entry.integration == integration:
                out.append(entry)
                if len(out) >= limit:
                    break
        return out
