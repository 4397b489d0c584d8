"""A rate limit every worker process on every machine honours: token buckets in Redis, whose
rate is learned from the service's 429s (AIMD) under a configured ceiling.

Each call to a service first reserves a token in each of its buckets (for SpareBank 1: the
company and the API host; for Moment: the company), in one Redis round trip (a Lua
script). A reservation never fails: it says how long to wait, so callers queue up in the
order they asked, spaced for ``HEADROOM`` of the bucket's learned rate, with no burst beyond
one call (so a one-second window never holds much more than the rate, even when some
callers' calls arrive late and bunch up).

The learned rate: neither service documents its limit, so the configured rate is a ceiling
and each bucket finds the real one. A 429 cuts the bucket's rate to ``CUT`` of what it was,
at most once per ``Retry-After`` (or per second without one) however many threads saw a 429
in that burst (a key with that expiry guards the cut); no call leaves through the bucket
until the ``Retry-After`` has passed (callers wait for it as for a token). From the cut on
the rate climbs by ``STEP`` of the ceiling per second while no 429 comes (the reservation
computes it from the time since the cut: a success costs no round trip), up to the
ceiling, and never falls below ``floor(ceiling)``.

A wait longer than ``max_wait`` is not waited out in a worker thread: the call fails as a
passing error and the sync is retried later, like any 429.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import redis

from errors import TransientError

# Calls are spaced for this share of the (learned) rate: a call that leaves late (a busy
# machine) can then still not push a one-second window over the limit.
HEADROOM = 0.9
CUT = 0.7                 # a 429: the rate becomes this share of what it was
STEP = 0.05               # each second without a 429: the rate climbs by this share of the ceiling
FLOOR = 0.2               # never below this share of the ceiling, nor below MIN_RATE
MIN_RATE = 1.0            # calls per second: a floor that still makes progress
LONGEST_RETRY_AFTER = 600.0
RESERVATIONS = 3          # turns a caller takes at most when 429s keep coming while it waits

# The rate a bucket has learned (ARGV: its ceiling), from its state hash (base: the rate
# right after the last cut, cut_at: when). Shared by both scripts.
_LEARNED = """
local function learned(state, ceiling, now)
  local base = tonumber(state[1])
  if not base then return ceiling end
  return math.min(ceiling, base + {step} * ceiling * math.max(0, now - tonumber(state[2])))
end
""".format(step=STEP)

# KEYS: bucket state hashes. ARGV: now, the longest wait a caller takes, then per bucket:
# ceiling, burst. Reserves one token in each bucket (after its Retry-After, if one holds)
# and returns the longest wait (seconds, as text); a wait past the longest reserves nothing
# (the caller does not call), so turned-away callers do not push the others' turns further out.
_RESERVE = _LEARNED + """
local now = tonumber(ARGV[1])
local wait = 0
local left, from = {}, {}
for i = 1, #KEYS do
  local burst = tonumber(ARGV[2 * i + 2])
  local state = redis.call('HMGET', KEYS[i], 'base', 'cut_at', 'tokens', 'at', 'until')
  local rate = learned(state, tonumber(ARGV[2 * i + 1]), now) * {headroom}
  local start = math.max(now, tonumber(state[5] or now))
  local at = tonumber(state[4] or start)
  local tokens = math.min(burst, tonumber(state[3] or burst) + math.max(0, start - at) * rate) - 1
  left[i], from[i] = tokens, math.max(start, at)
  wait = math.max(wait, start - now + math.max(0, -tokens / rate))
end
if wait <= tonumber(ARGV[2]) then
  for i = 1, #KEYS do
    redis.call('HSET', KEYS[i], 'tokens', tostring(left[i]), 'at', tostring(from[i]))
    redis.call('EXPIRE', KEYS[i], 3600)
  end
end
return tostring(wait)
""".replace("{headroom}", repr(HEADROOM))

# KEYS: a bucket's state hash, its cut guard. ARGV: now, Retry-After (seconds; 0: none),
# ceiling. No call before now + Retry-After; the rate is cut once per guard period.
# Returns the learned rate after.
_CUT = _LEARNED + """
local now, after, ceiling = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'base', 'cut_at', 'until')
local rate = learned(state, ceiling, now)
if after > 0 and now + after > tonumber(state[3] or 0) then
  redis.call('HSET', KEYS[1], 'until', tostring(now + after))
end
local guard = math.max(1, after)
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', math.floor(guard * 1000)) then
  rate = math.max(math.min(ceiling, math.max({min_rate}, {floor} * ceiling)), rate * {cut})
  redis.call('HSET', KEYS[1], 'base', tostring(rate), 'cut_at', tostring(now))
end
redis.call('EXPIRE', KEYS[1], 3600)
return tostring(rate)
""".replace("{min_rate}", repr(MIN_RATE)).replace("{floor}", repr(FLOOR)).replace("{cut}", repr(CUT))


def floor(ceiling: float) -> float:
    """The lowest rate a bucket learns: it still makes progress."""
    return min(ceiling, max(MIN_RATE, FLOOR * ceiling))


@dataclass(frozen=True)
class Bucket:
    key: str            # what it limits, e.g. "sb1:company:<key digest>"
    rate: float         # calls per second: the ceiling of what the bucket learns

    @property
    def burst(self) -> float:
        return 1.0


class RateLimiter:
    def __init__(self, r: redis.Redis, prefix: str, max_wait: float = 30.0, clock: Callable[[], float] = time.time):
        """``prefix``: what every bucket's Redis key starts with (``Keys.rate_limits``)."""
        self.redis, self.prefix, self.max_wait, self.clock = r, prefix, max_wait, clock
        self._reserve = r.register_script(_RESERVE)
        self._cut = r.register_script(_CUT)
        self._cut_at: dict[str, float] = {}       # bucket key -> when this process last saw a 429

    def _key(self, bucket: Bucket) -> str:
        return f"{self.prefix}:{bucket.key}"

    def acquire(self, buckets: tuple[Bucket, ...], service: str) -> float:
        """Wait for a turn in every bucket; returns the seconds waited."""
        buckets = tuple(b for b in buckets if b.rate > 0)
        if not buckets:
            return 0.0
        waited = 0.0
        for _ in range(RESERVATIONS):
            asked = time.monotonic()
            args: list = [f"{self.clock():.6f}", self.max_wait]
            for b in buckets:
                args += [b.rate, b.burst]
            wait = float(self._reserve(keys=[self._key(b) for b in buckets], args=args))
            if wait > self.max_wait:
                raise TransientError(f"{service}: our own rate limit has {wait:.0f}s of calls waiting",
                                     service=service, retry_after=wait)
            if wait > 0:
                time.sleep(wait)
            waited += wait
            # a 429 came (in this process) while this caller waited for its turn: the turn was
            # given at the old rate and before the Retry-After; take a new one
            if not any(self._cut_at.get(b.key, 0.0) > asked for b in buckets):
                break
        return waited

    def penalize(self, buckets: tuple[Bucket, ...], retry_after: float | None = None) -> list[float]:
        """The service answered 429 (``retry_after``: its Retry-After, seconds): hold these
        buckets' calls that long and cut their rates (once per period); their learned rates."""
        after = min(LONGEST_RETRY_AFTER, max(0.0, retry_after or 0.0))
        for b in buckets:
            self._cut_at[b.key] = time.monotonic()
        return [float(self._cut(keys=[self._key(b), f"{self._key(b)}:cut"],
                                args=[f"{self.clock():.6f}", after, b.rate]))
                for b in buckets if b.rate > 0]

    def learned(self, buckets: tuple[Bucket, ...]) -> list[float]:
        """Each bucket's learned rate now (its ceiling when it has seen no 429), one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for b in buckets:
            pipe.hmget(self._key(b), "base", "cut_at")
        now, rates = self.clock(), []
        for b, (base, cut_at) in zip(buckets, pipe.execute()):
            rates.append(b.rate if base is None or b.rate <= 0 else
                         min(b.rate, float(base) + STEP * b.rate * max(0.0, now - float(cut_at))))
        return rates


class Limited:
    """What a client needs: its buckets, and the limiter that keeps them."""

    def __init__(self, limiter: RateLimiter | None, buckets: tuple[Bucket, ...], service: str):
        self.limiter, self.buckets, self.service = limiter, buckets, service

    def before(self) -> None:
        if self.limiter is not None:
            self.limiter.acquire(self.buckets, self.service)

    def rate_limited(self, retry_after: float | None = None) -> None:
        """A 429 is the company's: only its bucket (the first) learns from it. The host's stays
        at its setting, so one company at its limit does not hold back the others at that bank."""
        if self.limiter is not None:
            self.limiter.penalize(self.buckets[:1], retry_after)
