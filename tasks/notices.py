"""``notices.digest``: the failures an integration collected during a window, as one email."""
from __future__ import annotations

import logging

from worker.broker import DIGEST_TASK, app
from worker.sync.task import RuntimeTask

log = logging.getLogger(__name__)


@app.task(name=DIGEST_TASK, bind=True, base=RuntimeTask)
def send_digest(self, integration_id: str) -> int:
    rt = self.runtime
    integration = rt.integrations.get(integration_id)
    if integration is None:
        return 0
    try:
        return rt.notices.send_digest(integration)
    except Exception as exc:       # the mail server is away: the items stay; try again later
        delay = rt.settings.retry_policy.delay(min(self.request.retries, 5))
        log.error("%s: could not send the digest email (%s); trying again in %.0fs", integration_id,
                  type(exc).__name__, delay)
        rt.notices.schedule(integration_id, countdown=delay)
        return 0
