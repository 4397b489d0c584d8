"""How a sync ends: the counters in Redis, the task's result and the log use these words."""
from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    CREATED = "created"                  # a new record in the books
    UPDATED = "updated"                  # the record in the books now says what Moment says
    UNCHANGED = "unchanged"              # the books already held exactly this: nothing written
    STALE = "stale"                      # Moment answered with an older version than the books hold
    GONE = "gone"                        # deleted in Moment; the books keep the record
    POSTED = "posted"                    # an invoice's voucher, posted now
    ALREADY_POSTED = "already-posted"    # its voucher was posted before (found by state or in the books)
    NOT_FINALIZED = "not-finalized"      # a draft invoice: not transferred
    FAILED = "failed"                    # a dead letter (the task ends as failed)
    IGNORED = "ignored"                  # the integration does not transfer this data type
    UNKNOWN_INTEGRATION = "unknown-integration"
    # not ends, but counted: a try that will be repeated, a wait for an open circuit
    RETRIED = "retried"
    WAITING = "waiting"
