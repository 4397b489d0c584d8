"""A rate limit every worker process on every machine honours: token buckets in Redis.

Each call to a service first reserves a token in each of its buckets (for SpareBank 1: the
company and the API host; for Moment: the company), in one Redis round trip (a Lua
script). A reservation never fails: it says how long to wait, so callers queue up in the
order they asked, at exactly the configured rate, with no burst beyond one call (so a
one-second window never holds much more than the rate, even when some callers' calls arrive
late and bunch up). When the platform answers 429 anyway, that bucket's rate is halved for a while
(``PENALTY_SECONDS``, down to a tenth at most) and comes back by itself.

A wait longer than ``max_wait`` is not waited out in a worker thread: the call fails as a
passing error and the sync is retried later, like any 429.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from errors import TransientError

PENALTY_SECONDS = 60
# Calls are spaced for this share of the configured rate: a call that leaves late (a busy
# machine) can then still not push a one-second window over the limit.
HEADROOM = 0.9

# KEYS: bucket state hashes (tokens, at), then their penalty keys. ARGV: now, the longest
# wait a caller takes, then per bucket: rate, burst. Reserves one token in each bucket and
# returns the longest wait (seconds, as text); a wait past the longest reserves nothing (the
# caller does not call), so turned-away callers do not push the others' turns further out.
_RESERVE = """
local now = tonumber(ARGV[1])
local n = #KEYS / 2
local wait = 0
local left = {}
for i = 1, n do
  local rate = tonumber(ARGV[2 * i + 1])
  local burst = tonumber(ARGV[2 * i + 2])
  rate = rate * tonumber(redis.call('GET', KEYS[n + i]) or '1')
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local tokens = tonumber(state[1] or burst)
  local at = tonumber(state[2] or now)
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate) - 1
  left[i] = tokens
  if tokens < 0 then wait = math.max(wait, -tokens / rate) end
end
if wait <= tonumber(ARGV[2]) then
  for i = 1, n do
    redis.call('HSET', KEYS[i], 'tokens', tostring(left[i]), 'at', tostring(now))
    redis.call('EXPIRE', KEYS[i], 3600)
  end
end
return tostring(wait)
"""

# KEYS[1]: a penalty key. Halve the rate (down to 0.1) for ARGV[1] seconds.
_PENALIZE = """
local factor = tonumber(redis.call('GET', KEYS[1]) or '1')
factor = math.max(0.1, factor / 2)
redis.call('SET', KEYS[1], tostring(factor), 'EX', tonumber(ARGV[1]))
return tostring(factor)
"""


@dataclass(frozen=True)
class Bucket:
    key: str            # what it limits, e.g. "sb1:company:<key digest>"
    rate: float         # calls per second

    @property
    def burst(self) -> float:
        return 1.0


class RateLimiter:
    def __init__(self, r: redis.Redis, prefix: str, max_wait: float = 30.0):
        """``prefix``: what every bucket's Redis key starts with (``Keys.rate_limits``)."""
        self.redis, self.prefix, self.max_wait = r, prefix, max_wait
        self._reserve = r.register_script(_RESERVE)
        self._penalize = r.register_script(_PENALIZE)

    def _keys(self, buckets: tuple[Bucket, ...]) -> list[str]:
        state = [f"{self.prefix}:{b.key}" for b in buckets]
        return state + [f"{k}:penalty" for k in state]

    def acquire(self, buckets: tuple[Bucket, ...], service: str) -> float:
        """Wait for a turn in every bucket; returns the seconds waited."""
        buckets = tuple(b for b in buckets if b.rate > 0)
        if not buckets:
            return 0.0
        args: list = [f"{time.time():.6f}", self.max_wait]
        for b in buckets:
            args += [b.rate * HEADROOM, b.burst]
        wait = float(self._reserve(keys=self._keys(buckets), args=args))
        if wait > self.max_wait:
            raise TransientError(f"{service}: our own rate limit has {wait:.0f}s of calls waiting",
                                 service=service, retry_after=wait)
        if wait > 0:
            time.sleep(wait)
        return wait

    def penalize(self, buckets: tuple[Bucket, ...]) -> float:
        """The service answered 429: halve these buckets' rates for a while; the new factor."""
        factor = 1.0
        limited = tuple(b for b in buckets if b.rate > 0)
        for key in self._keys(limited)[len(limited):]:
            factor = float(self._penalize(keys=[key], args=[PENALTY_SECONDS]))
        return factor


class Limited:
    """What a client needs: its buckets, and the limiter that keeps them."""

    def __init__(self, limiter: RateLimiter | None, buckets: tuple[Bucket, ...], service: str):
        self.limiter, self.buckets, self.service = limiter, buckets, service

    def before(self) -> None:
        if self.limiter is not None:
            self.limiter.acquire(self.buckets, self.service)

    def rate_limited(self) -> None:
        if self.limiter is not None:
            self.limiter.penalize(self.buckets)
