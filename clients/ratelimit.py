"""A rate limit every worker process on every machine honours: token buckets in Redis, whose
rate is learned from the service's 429s under a configured ceiling.

Each call to a service first reserves a token in each of its buckets (for SpareBank 1: the
company and the API host; for Moment: the company), in one Redis round trip (a Lua
script). A reservation never fails: it says how long to wait, so callers queue up in the
order they asked, spaced for the bucket's rate with no burst beyond one call. The configured
rate is a guess (neither service documents a limit): it is a ceiling, and calls are spaced
for ``HEADROOM`` of it; a rate learned from the service's 429s is kept as it is.

How the limit is learned (per bucket, shared by every worker):

* Each bucket counts its calls (as they leave) and its 429s per second, for the last
  ``SLOTS`` seconds.
* A 429 is evidence that the rate is too high when the 429s of the last two seconds are
  more than the noise learned so far (below) explains. In the first second of calls a rate
  is not measured yet: there only a strong share of 429s, or three within ``BURST`` seconds
  (consecutive calls refused), is evidence. Then, at most once per ``Retry-After`` (or per
  second) however many threads saw it, the rate is cut to ``CUT`` of the rate the service
  *accepted* in those seconds (in the first second of calls, or after a hold, a service
  limiting per second may let a second's calls through at once: they are spread over one
  more second), so one cut from a high ceiling lands near the limit; that accepted rate is
  the bucket's estimate of the limit (when the rate was probing beyond the last estimate:
  half-way between the two), and no call leaves before the ``Retry-After`` has passed.
  Callers whose turn was given before the cut take a new one.
* The rate then climbs back to the estimate in ``CLIMB`` seconds (fast at first, flat near
  the estimate: long cycles, few 429s, a high average) and beyond it faster and faster (a
  limit that rose is found: twice the estimate ``DOUBLE`` seconds later).
* Each cut is a test, judged on the 429s of the ``TEST_SECONDS`` after its hold. None or
  few (fewer than 3): it worked. More: a second cut, to ``SECOND_CUT`` of the rate (under a
  limit its 429s then stop), climbing back to the rate accepted meanwhile. If the share of
  429s after that one is still as high (at least half), they do not depend on the rate: they
  are noise (a service answering 429 at random): both cuts are undone and the share is
  learned as the noise level (it fades with a half-life of ``NOISE_HALF_LIFE``), so random
  429s no longer cut the rate nor hold the company. The call that got a 429 still waits its
  Retry-After (the sync is retried after it).
* Never below ``floor(ceiling)``, never above the ceiling.

A wait longer than ``max_wait`` is not waited out in a worker thread: the call fails as a
passing error and the sync is retried later, like any 429.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import redis

from errors import TransientError

# Calls are spaced for this share of the configured rate (a guess): a call that leaves late
# (a busy machine) can then still not push a one-second window over it. A learned rate is
# the service's own answer and is not spaced further.
HEADROOM = 0.9
CUT = 0.9                 # a 429 caused by the rate: this share of the accepted rate
SECOND_CUT = 0.5          # 429s that go on after a cut: this share of the rate
CLIMB = 20.0              # seconds from a cut back to the estimated limit
DOUBLE = 30.0             # seconds after that to twice the estimate (probing a limit that rose)
FLOOR = 0.02              # never below this share of the ceiling, nor below MIN_RATE
MIN_RATE = 1.0            # calls per second: a floor that still makes progress
SLOTS = 16                # seconds of counts (calls, 429s) a bucket keeps
NOISE_MAX = 0.3           # a share of 429s above this (8 or more) is never noise
NOISE_HALF_LIFE = 600.0   # seconds
TEST_CALLS = 40           # calls after a cut before it is judged (with 3 or more 429s; else more)
TEST_SECONDS = 12         # after a cut's hold: the seconds whose 429s judge it (at most)
TEST2_SECONDS = 4         # the second cut's test: its rate holds still that long
TEST_MOST = 100           # calls after a cut that judge it (or 3 429s in TEST_CALLS)
NOISE_UNDO = 0.15         # a share of 429s after a cut up to this (or twice the share before) may be noise
FIRST_K, FIRST_SHARE = 5, 0.12   # in the first second of calls: this many 429s, above this share, cut
RECHECK = 0.005           # a caller that waited longer checks that no cut came meanwhile
LONGEST_RETRY_AFTER = 600.0
RESERVATIONS = 3          # turns a caller takes at most when cuts keep coming while it waits

_COMMON = """
local function learned(base, cut_at, lim, ceiling, now)
  if not base then return ceiling end
  local t, r = math.max(0, now - cut_at), 0
  if t < {climb} then
    r = lim - (lim - base) * (1 - t / {climb}) ^ 3
  else
    r = lim * (1 + (t - {climb}) ^ 3 / {double} ^ 3)
  end
  return math.min(ceiling, math.max(base, r))
end
local function state_rate(key, ceiling, now)
  local s = redis.call('HMGET', key, 'base', 'cut_at', 'lim')
  return learned(tonumber(s[1]), tonumber(s[2]), tonumber(s[3]), ceiling, now)
end
-- counts per second in a ring of {slots} fields: s<i> the second, c<i> calls, l<i> 429s
local function bump(key, sec, field, by)
  local i = sec % {slots}
  if tonumber(redis.call('HGET', key, 's' .. i)) ~= sec then
    if by < 0 then return end
    redis.call('HSET', key, 's' .. i, sec, 'c' .. i, 0, 'l' .. i, 0)
  end
  redis.call('HINCRBY', key, field .. i, by)
end
local function window(key, from, to)
  local calls, limited = 0, 0
  for sec = math.max(from, to - {slots} + 1), to do
    local i = sec % {slots}
    local s = redis.call('HMGET', key, 's' .. i, 'c' .. i, 'l' .. i)
    if tonumber(s[1]) == sec then
      calls, limited = calls + tonumber(s[2]), limited + tonumber(s[3])
    end
  end
  return calls, limited
end
""".replace("{climb}", repr(CLIMB)).replace("{double}", repr(DOUBLE)).replace("{slots}", str(SLOTS))

# KEYS: bucket state hashes. ARGV: now, the longest wait a caller takes, the longest wait
# counted at once, then per bucket: ceiling, burst. Reserves one token in each bucket (after
# its Retry-After, if one holds) and returns the longest wait (seconds, as text) and the
# buckets' epochs (which cuts change). A wait past the longest reserves nothing (the caller
# does not call); a call that leaves at once is counted, one that waits is counted when it
# leaves (_DEPART).
_RESERVE = _COMMON + """
local now, longest = tonumber(ARGV[1]), tonumber(ARGV[2])
local wait, left, from, epochs, idle = 0, {}, {}, {}, {}
for i = 1, #KEYS do
  local ceiling, burst = tonumber(ARGV[2 * i + 2]), tonumber(ARGV[2 * i + 3])
  local state = redis.call('HMGET', KEYS[i], 'base', 'cut_at', 'lim', 'tokens', 'at', 'until', 'epoch')
  local rate = math.min({headroom} * ceiling,
                        learned(tonumber(state[1]), tonumber(state[2]), tonumber(state[3]), ceiling, now))
  local start = math.max(now, tonumber(state[6] or now))
  local at = tonumber(state[5] or start)
  local tokens = math.min(burst, tonumber(state[4] or burst) + math.max(0, start - at) * rate) - 1
  left[i], from[i], epochs[i], idle[i] = tokens, math.max(start, at), state[7] or '0', tonumber(state[5] or 0)
  wait = math.max(wait, start - now + math.max(0, -tokens / rate))
end
if wait <= longest then
  for i = 1, #KEYS do
    if now - idle[i] > 1 then redis.call('HSET', KEYS[i], 'active', tostring(now)) end   -- calls begin
    redis.call('HSET', KEYS[i], 'tokens', tostring(left[i]), 'at', tostring(from[i]))
    if wait < tonumber(ARGV[3]) then bump(KEYS[i], math.floor(now), 'c', 1) end
    redis.call('EXPIRE', KEYS[i], 3600)
  end
end
return {tostring(wait), table.concat(epochs, ',')}
""".replace("{headroom}", repr(HEADROOM))

# KEYS: bucket state hashes. ARGV: now, the epochs the caller's turn was given in. A caller
# that waited leaves now: counted, if no cut came since (returns 1); else returns 0.
_DEPART = _COMMON + """
local epochs = {}
for i = 1, #KEYS do epochs[i] = redis.call('HGET', KEYS[i], 'epoch') or '0' end
if table.concat(epochs, ',') ~= ARGV[2] then return 0 end
for i = 1, #KEYS do bump(KEYS[i], math.floor(tonumber(ARGV[1])), 'c', 1) end
return 1
"""

# KEYS: a bucket's state hash. ARGV: now, Retry-After (seconds; 0: none), ceiling, floor.
# Counts the 429; judges the last cut's test; cuts when the 429s are evidence. Returns the
# learned rate after.
_LIMITED = _COMMON + """
local now, after, ceiling, lowest = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local key, sec = KEYS[1], math.floor(now)
bump(key, sec, 'l', 1)
redis.call('EXPIRE', key, 3600)
local s = redis.call('HMGET', key, 'base', 'cut_at', 'lim', 'until', 'noise', 'noise_at', 't_from', 't_frac',
                     't_base', 't_cut_at', 't_lim', 'guard', 'active', 't_stage')
local rate = learned(tonumber(s[1]), tonumber(s[2]), tonumber(s[3]), ceiling, now)
local held = tonumber(s[4] or 0)
if now < held then return tostring(rate) end            -- answers to calls from before a hold
-- the calls of the last two seconds (since calls began, since the hold)
local since = math.max(sec - 1, held, tonumber(s[13] or 0))
local n, k = window(key, math.floor(since), sec)
local strong = k >= 8 and k / n > {noise_max}             -- far above the limit: not noise
if now < tonumber(s[12] or 0) then return tostring(rate) end     -- one cut per Retry-After
local t_from, t_frac, stage, again = tonumber(s[7]), tonumber(s[8]), tonumber(s[14] or 1), nil
if t_from and not strong then
  -- the last cut's test: the share of 429s in the {test_seconds} s after its hold. None (or
  -- few): it worked. Some: the first time, a second cut, deeper; if they go on as often after
  -- that one too, they do not depend on the rate: noise, and both cuts are undone
  local span = stage < 2 and {test_seconds} or {test2_seconds}
  local tn, tk = window(key, t_from, math.min(sec, t_from + span - 1))
  if sec < t_from + span and not (tk >= 3 and tn >= {test_calls}) and tn < {test_most} then
    return tostring(rate)                               -- too early to judge
  end
  local share = tk / math.max(1, tn)
  if tk >= 3 and share <= {noise_undo} then
    if stage < 2 then              -- and the rate the service accepted meanwhile
      again = {share, (tn - tk) / math.max(1, math.min(now, t_from + {test_seconds}) - math.max(t_from, held))}
    elseif share >= 0.5 * t_frac then
      redis.call('HDEL', key, 'base', 'cut_at', 'lim', 't_from')
      if s[9] ~= 'none' then redis.call('HSET', key, 'base', s[9], 'cut_at', s[10], 'lim', s[11]) end
      redis.call('HSET', key, 'noise', tostring(math.max(share, t_frac)), 'noise_at', tostring(now),
                 'tokens', '1', 'at', tostring(math.max(now, held)))
      redis.call('HINCRBY', key, 'epoch', 1)
      return tostring(state_rate(key, ceiling, now))
    end
  end
end
if t_from then redis.call('HDEL', key, 't_from') end   -- it worked, or was not deep enough
local noise = tonumber(s[5] or 0) * 0.5 ^ ((now - tonumber(s[6] or now)) / {half_life})
local expected = n * noise
-- with a margin: every 429 asks again, over windows that overlap
if not again and k <= (noise > 0.001 and 1.5 * expected + 3 * math.sqrt(expected) + 3 or 0) then
  return tostring(rate)                                 -- within the noise
end
-- the rate the service accepted: the share not answered 429 of the rate calls left at, and
-- no more than it accepted in those seconds (in the first second of calls, or after a hold,
-- a service limiting per second may let one second's calls through at once)
local est, span = math.min(rate, {headroom} * ceiling), now - since
-- calls began less than a second ago: a rate is not measured yet; a few 429s may be noise
if span < 1 and since ~= held and not strong and not (k >= {first_k} and k / n > {first_share}) then
  return tostring(rate)
end
if n >= 5 then
  est = math.min(est * math.max(0, 1 - k / n), math.max(0, n - k) / (span + (span < 1 and 1 or 0)))
end
-- probing beyond the estimate: a service's reserve (a bucket holding a second's calls) let the
-- rate pass its limit for a while before the first 429; the limit is nearer the estimate
local lim, cut_at = tonumber(s[3]), tonumber(s[2])
if lim and now - cut_at > {climb} and est > lim then est = (est + lim) / 2 end
local new = math.max(lowest, {cut} * est)
if again then       -- the 429s went on after a cut: halve the rate (a limit then shows), and
  -- climb back to the rate accepted since the cut
  new = math.max(lowest, {second} * math.min(rate, {headroom} * ceiling))
  est = math.min(rate * (1 - again[1]), again[2])
  after = 0                       -- an experiment: the first cut's hold honoured the Retry-After
end
-- its test: the seconds after the answers to calls still under way (in the hold none leave)
local t_next = math.floor(now + 0.2) + 1
-- the second cut's rate holds still while it is tested (a climb would reach a limit again)
redis.call('HSET', key, 'base', tostring(new), 'cut_at', tostring(again and t_next + {test2_seconds} or now),
           'lim', tostring(math.max(new, est)), 't_from', tostring(t_next), 'guard', tostring(now + math.max(1, after)))
if again then                                           -- the second cut: the first one's state kept
  redis.call('HSET', key, 't_frac', tostring(again[1]), 't_stage', '2')
else
  redis.call('HSET', key, 't_frac', tostring(k / math.max(1, n)), 't_stage', '1', 't_base', s[1] or 'none',
             't_cut_at', s[2] or '0', 't_lim', s[3] or '0')
end
if after > 0 then redis.call('HSET', key, 'until', tostring(now + after)) end
-- the queue starts again after the hold, at the new rate: callers waiting take new turns in it
redis.call('HSET', key, 'tokens', '1', 'at', tostring(now + after))
redis.call('HINCRBY', key, 'epoch', 1)
return tostring(new)
""".replace("{noise_max}", repr(NOISE_MAX)).replace("{noise_undo}", repr(NOISE_UNDO)).replace("{test_seconds}", str(TEST_SECONDS)).replace("{test_calls}", str(TEST_CALLS)) \
   .replace("{test_most}", str(TEST_MOST)) \
   .replace("{test2_seconds}", str(TEST2_SECONDS)) \
   .replace("{slots}", str(SLOTS)).replace("{half_life}", repr(NOISE_HALF_LIFE)) \
   .replace("{headroom}", repr(HEADROOM)).replace("{cut}", repr(CUT)).replace("{second}", repr(SECOND_CUT)) \
   .replace("{first_k}", str(FIRST_K)).replace("{first_share}", repr(FIRST_SHARE)).replace("{climb}", repr(CLIMB))

# KEYS: bucket state hashes. ARGV: now, then each bucket's ceiling. Their learned rates.
_RATES = _COMMON + """
local out = {}
for i = 1, #KEYS do out[i] = tostring(state_rate(KEYS[i], tonumber(ARGV[i + 1]), tonumber(ARGV[1]))) end
return out
"""


def floor(ceiling: float) -> float:
    """The lowest rate a bucket learns: it still makes progress."""
    return min(ceiling, max(MIN_RATE, FLOOR * ceiling))


def climb(base: float, limit: float, seconds: float, ceiling: float) -> float:
    """The learned rate ``seconds`` after a cut to ``base`` with ``limit`` the estimated
    limit (what the scripts compute; for tests and docs)."""
    if seconds < CLIMB:
        rate = limit - (limit - base) * (1 - seconds / CLIMB) ** 3
    else:
        rate = limit * (1 + (seconds - CLIMB) ** 3 / DOUBLE ** 3)
    return min(ceiling, max(base, rate))


@dataclass(frozen=True)
class Bucket:
    key: str            # what it limits, e.g. "sb1:company:<key digest>"
    rate: float         # calls per second: the ceiling of what the bucket learns

    @property
    def burst(self) -> float:
        return 1.0


class RateLimiter:
    def __init__(self, r: redis.Redis, prefix: str, max_wait: float = 30.0, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        """``prefix``: what every bucket's Redis key starts with (``Keys.rate_limits``);
        ``clock`` and ``sleep``: the time (a test may pass its own)."""
        self.redis, self.prefix, self.max_wait, self.clock, self.sleep = r, prefix, max_wait, clock, sleep
        self._reserve = r.register_script(_RESERVE)
        self._depart = r.register_script(_DEPART)
        self._limited = r.register_script(_LIMITED)
        self._rates = r.register_script(_RATES)

    def _key(self, bucket: Bucket) -> str:
        return f"{self.prefix}:{bucket.key}"

    def acquire(self, buckets: tuple[Bucket, ...], service: str) -> float:
        """Wait for a turn in every bucket; returns the seconds waited."""
        buckets = tuple(b for b in buckets if b.rate > 0)
        if not buckets:
            return 0.0
        keys = [self._key(b) for b in buckets]
        waited = 0.0
        for _ in range(RESERVATIONS):
            args: list = [f"{self.clock():.6f}", self.max_wait, RECHECK]
            for b in buckets:
                args += [b.rate, b.burst]
            wait, epochs = self._reserve(keys=keys, args=args)
            wait = float(wait)
            if wait > self.max_wait:
                raise TransientError(f"{service}: our own rate limit has {wait:.0f}s of calls waiting",
                                     service=service, retry_after=wait)
            waited += wait
            if wait > 0:
                self.sleep(wait)
            if wait < RECHECK:          # counted already
                break
            # leaves now (and is counted) unless a cut came, in any worker, while it waited: its
            # turn was given at the old rate, perhaps before a Retry-After; it takes a new one
            if self._depart(keys=keys, args=[f"{self.clock():.6f}", epochs]):
                break
        return waited

    def penalize(self, buckets: tuple[Bucket, ...], retry_after: float | None = None) -> list[float]:
        """The service answered 429 (``retry_after``: its Retry-After, seconds): count it, and
        when the 429s are the rate's doing, cut these buckets' rates (once per period) and
        hold their calls that long. Their learned rates."""
        after = min(LONGEST_RETRY_AFTER, max(0.0, retry_after or 0.0))
        return [float(self._limited(keys=[self._key(b)],
                                    args=[f"{self.clock():.6f}", after, b.rate, floor(b.rate)]))
                for b in buckets if b.rate > 0]

    def learned(self, buckets: tuple[Bucket, ...]) -> list[float]:
        """Each bucket's learned rate now (its ceiling when it has learned nothing), one round trip."""
        live = [b for b in buckets if b.rate > 0]
        rates = iter(float(v) for v in self._rates(keys=[self._key(b) for b in live],
                                                   args=[f"{self.clock():.6f}", *(b.rate for b in live)])
                     ) if live else iter(())
        return [next(rates) if b.rate > 0 else b.rate for b in buckets]


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
