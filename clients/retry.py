"""The retry decision and the backoff delay: small pure functions, table-tested."""
from __future__ import annotations

import random
from dataclasses import dataclass

from errors import IntegrationError

RETRIABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_retriable_status(status: int) -> bool:
    return status in RETRIABLE_STATUSES or status >= 500


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8          # total tries, the first one included
    base_delay: float = 2.0        # seconds before the first retry
    max_delay: float = 600.0       # cap of one delay; kept below the broker's visibility timeout

    def delay(self, retries_done: int, retry_after: float | None = None,
              rand: random.Random | None = None) -> float:
        """Seconds to wait before the next try.

        Exponential (base * 2**n) with "equal jitter" (half fixed, half random), never
        shorter than the server's Retry-After, never longer than ``max_delay``.
        """
        raw = min(self.max_delay, self.base_delay * (2 ** retries_done))
        delay = jitter(raw, rand)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.max_delay)

    def should_retry(self, error: BaseException, retries_done: int) -> bool:
        """Retry only transient errors, and only while tries are left."""
        return (isinstance(error, IntegrationError) and error.retriable
                and retries_done + 1 < self.max_attempts)


def jitter(delay: float, rand: random.Random | None = None) -> float:
    r = (rand or random).random()
    return delay / 2 + r * delay / 2
