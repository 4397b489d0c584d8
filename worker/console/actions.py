"""What an operator changes from the console: pause, resume, replay. Each writes one entry
to the audit log (``worker.store.audit``) with who, what and why, as the command line does."""
from __future__ import annotations

from collections import Counter

from schemas.datatypes import DATA_TYPES
from worker.broker import publish_poll
from worker.intake.producer import enqueue, enqueue_bulk
from worker.store.audit import AuditLog
from worker.store.records import DeadLetter


def _audit(rt, who: str, action: str, integration_id: str, why: str, what: str = "", outcome: str = "") -> None:
    AuditLog(rt.redis, rt.keys).write(who, action, integration_id, what=what, why=why, via="console",
                                      outcome=outcome)


def pause(rt, integration_id: str, who: str, why: str) -> str:
    if rt.pauses.pause(integration_id):
        outcome = "paused"
    else:
        outcome = "already paused"
    _audit(rt, who, "pause", integration_id, why, outcome=outcome)
    return f"{integration_id} {outcome}: nothing is queued for it, its queued syncs wait"


def resume(rt, integration, who: str, why: str) -> str:
    if not rt.pauses.resume(integration.id):
        _audit(rt, who, "resume", integration.id, why, outcome="was not paused")
        return f"{integration.id} was not paused"
    for data_type in sorted(integration.data_types):
        publish_poll(integration.id, data_type, fresh=True)     # the changes of the pause, now
    _audit(rt, who, "resume", integration.id, why, outcome="resumed; polled now")
    return f"{integration.id} resumed; Moment is polled now for the changes made during the pause"


def describe(letters: list[DeadLetter]) -> str:
    """The replayed records as the audit log names them: one by its ``what`` ("customer
    100001", "customer with Moment id 7"), many by count per type."""
    if len(letters) == 1:
        return letters[0].what
    counts = Counter(d.data_type for d in letters)
    return f"{len(letters)} dead letters (" + ", ".join(f"{n} {t}" for t, n in sorted(counts.items())) + ")"


def replay(rt, integration_id: str, letters: list[DeadLetter], who: str, why: str) -> str:
    """Queue dead letters again (followed as runs, as ``moment-sb1 replay`` does): one in
    the live lane, many in the bulk lane. They leave the list when their sync succeeds."""
    if rt.pauses.is_paused(integration_id):
        return f"{integration_id} is paused: resume it first"
    by_type: dict[str, list[DeadLetter]] = {}
    for d in letters:
        if d.data_type in DATA_TYPES:
            by_type.setdefault(d.data_type, []).append(d)
    queued = 0
    for data_type, group in sorted(by_type.items()):
        ids = [d.record_id for d in group]
        run = rt.runs.start(integration_id, data_type, "replay")
        rt.runs.mark(run, ids)
        if len(ids) > 1:
            queued += enqueue_bulk(integration_id, data_type, ids, runtime=rt)
        else:
            enqueue(integration_id, data_type, ids[0], runtime=rt)
            queued += 1
        rt.runs.all_queued(run)
    _audit(rt, who, "replay", integration_id, why, what=describe(letters), outcome=f"queued {queued}")
    return f"queued {queued} replay(s); each leaves the list when its sync succeeds"
