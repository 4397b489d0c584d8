"""``reconcile.nightly``: beat's nightly reconciliation of every integration (this month so
far, and the month before until the 10th); one integration's failure does not stop the others."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from errors import IntegrationError
from worker.broker import RECONCILE_TASK, app
from worker.reconcile.run import ReconcileBusy, nightly_months, reconcile
from worker.sync.task import RuntimeTask

log = logging.getLogger(__name__)


@app.task(name=RECONCILE_TASK, bind=True, base=RuntimeTask)
def reconcile_nightly(self) -> int:
    """Returns how many runs found differences."""
    rt = self.runtime
    months = nightly_months(datetime.now(timezone.utc).date())
    paused = rt.pauses.all()
    found = 0
    for integration in sorted(rt.integrations.values(), key=lambda i: i.id):
        if integration.id in paused:
            continue
        for month in months:
            try:
                found += bool(reconcile(rt, integration, month).differences)
            except ReconcileBusy:       # a command (or a redelivered run) does it right now
                log.info("%s reconcile %s: another run is under way; skipped", integration.id, month)
            except (IntegrationError, OSError) as exc:      # a service away: tomorrow's run tries again
                log.error("%s reconcile %s: could not run (%s: %s)", integration.id, month,
                          type(exc).__name__, exc)
    return found
