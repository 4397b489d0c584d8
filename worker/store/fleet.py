"""One row per company for the fleet table (``moment-sb1 status --table``, the console): the
state an operator looks at first, read from Redis in a few round trips per company. Holds no
personal data: counts, times, service names, and an error's first words (a dead letter's
error names a refused value by its shape only)."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime

from worker.store.records import same_problem

WRITTEN = ("created", "updated", "posted")
LAG_INTERVALS = 3          # a poll lag over this many poll intervals needs attention


@dataclass
class CompanyRow:
    integration: str
    paused_since: float | None
    circuits: list[str]                 # "sb1 outage", "identity credentials"
    dead_letters: int
    backlog: dict[str, int]             # lane -> waiting
    last_write: float | None
    poll_lag_seconds: float | None      # the data type furthest behind; None: never polled
    last_error: str | None
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def row(rt, integration, paused: dict[str, float], now: float | None = None) -> CompanyRow:
    now = time.time() if now is None else now
    iid, types = integration.id, sorted(integration.data_types)
    pipe = rt.redis.pipeline(transaction=False)
    pipe.hgetall(rt.keys.stats(iid))
    pipe.hvals(rt.keys.dead(iid))
    for dt in types:
        pipe.get(rt.keys.cursor(iid, dt))
    read_circuits = rt.circuits.open_for(iid, pipe)
    answers = pipe.execute()
    stats, letters, cursors = answers[0], answers[1], answers[2:2 + len(types)]
    circuits = read_circuits(answers[2 + len(types):])
    stamps = [float(v) for k, v in stats.items() if k.rsplit(":", 1)[-1] in {f"last_{w}_at" for w in WRITTEN}]
    lags = [max(0.0, now - datetime.fromisoformat(c).timestamp()) for c in cursors if c]
    newest = max((json.loads(raw) for raw in letters), key=lambda d: d.get("last_failed_at", 0), default=None)
    last_error = None
    if circuits:
        last_error = "; ".join(f"{c.service} {c.reason}: {few_words(c.error)}" for c in circuits)
    elif newest:
        last_error = f"{newest.get('kind', '')}: {few_words(same_problem(newest.get('error', '')))}"
    out = CompanyRow(iid, paused.get(iid), [f"{c.service} {c.reason}" for c in circuits], len(letters),
                     {ls.lane: ls.waiting for ls in rt.lanes.status(iid)}, max(stamps, default=None),
                     max(lags, default=None), last_error)
    out.problems = problems(out, rt.settings.poll_interval)
    return out


def problems(r: CompanyRow, poll_interval: float) -> list[str]:
    """Why the company needs attention (empty: it does not)."""
    found = []
    if r.circuits:
        found.append("circuit open")
    if r.dead_letters:
        found.append("dead letters")
    if r.paused_since is not None:
        found.append("paused")
    if r.poll_lag_seconds is not None and r.poll_lag_seconds > LAG_INTERVALS * poll_interval:
        found.append("poll behind")
    return found


def fleet(rt, integrations) -> list[CompanyRow]:
    """The rows, problems first (open circuits, then the most dead letters), then by id."""
    paused, now = rt.pauses.all(), time.time()
    rows = [row(rt, i, paused, now) for i in integrations]
    return sorted(rows, key=lambda r: (not r.problems, not r.circuits, -r.dead_letters,
                                       r.paused_since is None, r.integration))


def few_words(text: str, limit: int = 48) -> str:
    """The first words of an error, on one line."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1].rsplit(" ", 1)[0] + "…"
