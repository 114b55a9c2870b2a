"""Routing state shared by a fleet: the ``RoutingStore`` kept in Redis (``reliant[redis]``).

With routing state per process, each of 16 workers keeps its own RPM window
for a deployment, so together they send 16 times its limit and earn the 429s
the limit was meant to avoid; least-busy sees only its own requests in
flight. :class:`RedisRouting` keeps the state of
:class:`~reliant.LocalRouting` (the reference semantics) in Redis, so every
process using the same ``prefix`` honours one RPM and TPM budget per
deployment and sees every request in flight.

Round trips
-----------
The routing decision itself reads a local mirror (no I/O). Each attempt
costs one round trip when it starts (``acquire``: check the deployment's
room and take it, atomically) and one when it ends (``release``); each is a
Lua script that also refreshes the mirror of every deployment the store
knows, and carries the latency samples and learned header limits noted
since the last trip. Keys (``P`` the prefix, ``D`` the deployment as
``len(name):name``)::

    P dep:D      hash: cost (peak-EWMA latency, s), stamp (ms), load, lstamp
                 (ms), r<sec> and k<sec> (requests and tokens started in that
                 second of the server's clock), rl/rr/rq/ra and tl/tr/tq/ta
                 (requests and tokens left, until a reset, refilling at a
                 rate from a time, learned from headers).
    P live:D     sorted set: the attempts in flight, scored by their start
                 (ms). An entry older than ``max_hold`` is dropped, so a
                 process that died mid-request does not hold a slot forever.

The windows are the last 60 whole seconds of the server's clock plus the
current one, one bucket per second: at worst a request counts 1 s longer
than 60 s, never shorter, so the fleet never exceeds a limit a server
enforces over any 60 s. Every time stored is the server's (``TIME``), so
machines with skewed clocks agree. Both keys expire ``keep`` after their
last write.

When Redis is down or slow
--------------------------
As with ``RedisHealth``: a trip that fails or takes longer than ``timeout``
is decided by an internal :class:`~reliant.LocalRouting`; Redis is left alone
for ``reconnect_interval``, one warning is logged per outage and one info
line when it answers again. A request never fails because of Redis.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

try:
    import coredis  # noqa: F401  (the extra's dependency: a clear error when missing)
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "RedisRouting needs coredis, in the 'redis' extra: pip install 'reliant[redis]'"
    ) from err

from ._redis_link import RedisLink, positive, redact
from ._routing import DeploymentView, RateLimit
from ._routing_state import STALL, Learned, LocalRouting, RoutingStore

__all__ = ["ROUTING_SCRIPT", "RedisRouting"]

_PER = 10  # ARGV per deployment
_OUT = 12  # reply values per deployment

# ARGV: 1 op ("a" acquire, "r" release, "s" sync), 2 target (1-based, 0 none),
#   3 member, 4 tokens, 5 used ("" unknown, "unsent": the room goes back),
#   6 start second (release),
#   7 decay ms, 8 max_hold ms, 9 keep ms; then per deployment: rpm ("" none),
#   tpm, sample s (""), sample failed (0/1), learned requests (""), requests
#   reset ms, learned tokens (""), tokens reset ms, requests and tokens refill
#   per ms (0: limit not told).
# KEYS: per deployment its hash and its sorted set.
# Reply: {server now ms, wait ms (0: granted or not asked), then per
#   deployment: in flight, cost, stamp, load, lstamp, requests in window,
#   tokens in window, ready ms, requests left (or ""), tokens left (or ""),
#   requests reset ms, start ms of the oldest attempt in flight (or "")}.
ROUTING_SCRIPT: Final = r"""
local op, target, member = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local tokens = tonumber(ARGV[4])
local used, start_sec = ARGV[5], tonumber(ARGV[6])
local decay, hold, keep = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local sec = math.floor(now / 1000)
local edge = sec - 60
local out = {tostring(now), '0'}
local n = #KEYS / 2
for i = 1, n do
  local hk, zk = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 9 + (i - 1) * 10
  local rpm, tpm = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local sample, failed = tonumber(ARGV[a + 3]), ARGV[a + 4] == '1'
  local lreq, lreq_reset = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  local ltok, ltok_reset = tonumber(ARGV[a + 7]), tonumber(ARGV[a + 8])
  local lreq_rate, ltok_rate = tonumber(ARGV[a + 9]) or 0, tonumber(ARGV[a + 10]) or 0
  redis.call('ZREMRANGEBYSCORE', zk, '-inf', now - hold)
  if op == 'r' and i == target then redis.call('ZREM', zk, member) end
  local live = redis.call('ZCARD', zk)
  local h = redis.call('HGETALL', hk)
  local f = {}
  local reqs, toks = {}, {}
  local stale = {}
  for j = 1, #h, 2 do
    local k, v = h[j], h[j + 1]
    local kind, s = string.sub(k, 1, 1), tonumber(string.sub(k, 2))
    if (kind == 'r' or kind == 'k') and s then
      if s < edge then table.insert(stale, k)
      elseif kind == 'r' then reqs[s] = tonumber(v) else toks[s] = tonumber(v) end
    else f[k] = v end
  end
  if #stale > 0 then redis.call('HDEL', hk, unpack(stale)) end
  local cost, stamp = tonumber(f.cost) or 0, tonumber(f.stamp) or 0
  local load, lstamp = tonumber(f.load) or 0, tonumber(f.lstamp) or 0
  local rl, rr = tonumber(f.rl), tonumber(f.rr) or 0
  local tl, tr = tonumber(f.tl), tonumber(f.tr) or 0
  -- learned limits refill at their rate (per ms) from when they were told
  local rq, ra = tonumber(f.rq) or 0, tonumber(f.ra) or 0
  local tq, ta = tonumber(f.tq) or 0, tonumber(f.ta) or 0
  local changed = false
  if sample then
    local w = math.exp(-math.max(0, now - stamp) / decay)
    if not (failed and sample <= cost * w) then
      if sample > cost then cost = sample else cost = cost * w + sample * (1 - w) end
      stamp = now
      changed = true
    end
  end
  if lreq then
    rl = lreq - math.max(0, live - 1); rr = now + lreq_reset; rq = lreq_rate; ra = now
    changed = true
  end
  if ltok then tl = ltok; tr = now + ltok_reset; tq = ltok_rate; ta = now; changed = true end
  if op == 'r' and i == target and used == 'unsent' then
    -- room the decision took for a request that was never sent: give it back
    if reqs[start_sec] then
      reqs[start_sec] = math.max(0, reqs[start_sec] - 1)
      redis.call('HSET', hk, 'r' .. start_sec, reqs[start_sec])
    end
    if toks[start_sec] then
      toks[start_sec] = math.max(0, toks[start_sec] - tokens)
      redis.call('HSET', hk, 'k' .. start_sec, tostring(toks[start_sec]))
    end
    if rl and rr > now then rl = rl + 1; changed = true end
  elseif op == 'r' and i == target and used ~= '' then
    if toks[start_sec] then
      toks[start_sec] = toks[start_sec] + tonumber(used) - tokens
      redis.call('HSET', hk, 'k' .. start_sec, tostring(toks[start_sec]))
    end
  end
  local nreq, ntok = 0, 0
  for _, v in pairs(reqs) do nreq = nreq + v end
  for _, v in pairs(toks) do ntok = ntok + v end
  -- when a request of `tokens` could start on this deployment (server ms)
  local function ready_at()
    local ready = now
    if rpm and nreq + 1 > rpm then
      local need, freed = nreq + 1 - rpm, 0
      for s = edge, sec do
        freed = freed + (reqs[s] or 0)
        if freed >= need then ready = math.max(ready, (s + 61) * 1000); break end
      end
    end
    if tpm and ntok + tokens > tpm and ntok > 0 then
      local need, freed = ntok + tokens - tpm, 0
      local at = (sec + 61) * 1000
      for s = edge, sec do
        freed = freed + (toks[s] or 0)
        if freed >= need then at = (s + 61) * 1000; break end
      end
      ready = math.max(ready, at)
    end
    if rl and rr > now then
      local left = rl + rq * (now - ra)
      if left < 1 then
        local at = rr
        if rq > 0 then at = math.min(rr, now + math.ceil((1 - left) / rq)) end
        ready = math.max(ready, at)
      end
    end
    if tl and tr > now then
      local left = tl + tq * (now - ta)
      if left < tokens then
        local at = tr
        if tq > 0 then at = math.min(tr, now + math.ceil((tokens - left) / tq)) end
        ready = math.max(ready, at)
      end
    end
    return ready
  end
  local ready = ready_at()
  if op == 'a' and i == target then
    if ready <= now then
      redis.call('ZADD', zk, now, member)
      live = live + 1
      redis.call('HINCRBY', hk, 'r' .. sec, 1)
      redis.call('HINCRBYFLOAT', hk, 'k' .. sec, tokens)
      reqs[sec] = (reqs[sec] or 0) + 1
      toks[sec] = (toks[sec] or 0) + tokens
      nreq, ntok = nreq + 1, ntok + tokens
      load = load * math.exp(-math.max(0, now - lstamp) / decay) + 1
      lstamp = now
      if rl and rr > now then rl = rl - 1 end
      if tl and tr > now then tl = tl - tokens end
      changed = true
      ready = ready_at()
    else
      out[2] = tostring(ready - now)
    end
  end
  if changed then
    redis.call('HSET', hk, 'cost', tostring(cost), 'stamp', stamp, 'load', tostring(load),
      'lstamp', lstamp)
    if rl then
      redis.call('HSET', hk, 'rl', tostring(rl), 'rr', rr, 'rq', tostring(rq), 'ra', ra)
    end
    if tl then
      redis.call('HSET', hk, 'tl', tostring(tl), 'tr', tr, 'tq', tostring(tq), 'ta', ta)
    end
  end
  redis.call('PEXPIRE', hk, keep)
  redis.call('PEXPIRE', zk, keep)
  local left_r, left_t = '', ''
  if rl and rr > now then left_r = tostring(rl + rq * (now - ra)) end
  if tl and tr > now then left_t = tostring(tl + tq * (now - ta)) end
  local oldest = ''
  local first = redis.call('ZRANGE', zk, 0, 0, 'WITHSCORES')
  if #first == 2 then oldest = first[2] end
  for _, v in ipairs({live, tostring(cost), stamp, tostring(load), lstamp, nreq, tostring(ntok),
      ready, left_r, left_t, rr, oldest}) do
    table.insert(out, v)
  end
end
return out
"""
_SHA = hashlib.sha1(ROUTING_SCRIPT.encode()).hexdigest()


@dataclass(slots=True)
class _Mirror:
    # One deployment as the last reply showed it (server times in ms).
    in_flight: int = 0
    cost: float = 0.0
    stamp_ms: int = 0
    load: float = 0.0
    lstamp_ms: int = 0
    requests: int = 0
    tokens: float = 0.0
    ready_ms: int = 0
    left_requests: float | None = None
    left_tokens: float | None = None
    oldest_ms: float | None = None  # start of the oldest attempt in flight


class RedisRouting(RedisLink, RoutingStore):
    """Routing state shared by every process that uses the same Redis and ``prefix``.

    Use it as an async context manager, which owns the connections, and
    pass it to every ``ReliableProvider`` that should share it::

        async with RedisRouting("redis://localhost:6379/0") as shared:
            llm = ReliableProvider(
                [east, west],
                routing=Routing(tiers=[["east", "west"]], strategy="least_busy"),
                rate_limits={"east": RateLimit(rpm=600), "west": RateLimit(rpm=600)},
                routing_store=shared,
            )

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` or ``unix://path``.
        prefix: Start of every key; stores with different prefixes share nothing.
        decay: Seconds, the time constant of latency and load (as ``Routing.decay``).
        timeout: Longest wait for Redis per round trip; past it the store
            decides in process.
        max_hold: Seconds after which an attempt still counted in flight is
            dropped (its process died without giving it back).
        connect_timeout: Longest wait for the first connection on entry.
        reconnect_interval: While Redis is unavailable, it is tried again at
            most once per this many seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "reliant:",
        decay: float = 10.0,
        timeout: float = 0.05,
        max_hold: float = 600.0,
        connect_timeout: float = 1.0,
        reconnect_interval: float = 1.0,
    ) -> None:
        self._link(
            url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            reconnect_interval=reconnect_interval,
        )
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("RedisRouting prefix must be a non-empty string")
        self.prefix = prefix
        self.decay = positive("decay", decay)
        self.max_hold = positive("max_hold", max_hold)
        self._mirror: dict[str, _Mirror] = {}
        self._limits: dict[str, RateLimit | None] = {}
        self._keys: dict[str, tuple[str, str]] = {}
        self._samples: dict[str, tuple[float, bool]] = {}
        self._learned: dict[str, Learned] = {}
        self._starts: dict[str, list[tuple[str, int]]] = {}
        self._local = LocalRouting(self.decay)
        self._instance = secrets.token_hex(6)
        self._counter = itertools.count()

    _SCRIPT = ROUTING_SCRIPT
    _SHA = _SHA

    def __repr__(self) -> str:
        return f"RedisRouting({redact(self._url)!r}, prefix={self.prefix!r})"

    # -- RoutingStore ------------------------------------------------------------

    def bind(self, limits: Mapping[str, RateLimit | None]) -> None:
        """Know these deployments (and their limits): every round trip refreshes them all."""
        for name, limit in limits.items():
            self._limits[name] = limit
            self._mirror.setdefault(name, _Mirror())

    def view(self, name: str, now: float, limit: RateLimit | None, tokens: int) -> DeploymentView:
        if not self._entered:  # read by every routing decision, before any call is made
            raise RuntimeError(
                "RedisRouting is not open: use it inside `async with RedisRouting(...)`"
            )
        if self._down or name not in self._mirror:
            return self._local.view(name, now, limit, tokens)
        m = self._mirror[name]
        server_now = (now + self._offset) * 1000
        decay = self.decay * 1000
        ready = max(0.0, (m.ready_ms - server_now) / 1000)
        left_requests = m.left_requests
        if limit is not None and limit.rpm is not None:
            room = limit.rpm - m.requests
            left_requests = room if left_requests is None else min(room, left_requests)
        left_tokens = m.left_tokens
        if limit is not None and limit.tpm is not None:
            room = limit.tpm - m.tokens
            left_tokens = room if left_tokens is None else min(room, left_tokens)
        latency = m.cost * math.exp(-max(0.0, server_now - m.stamp_ms) / decay)
        if m.cost and m.oldest_ms is not None:  # as LocalRouting: a stalled attempt's age
            age = (server_now - m.oldest_ms) / 1000
            if age > STALL * latency:
                latency = age
        return DeploymentView(
            name,
            m.in_flight,
            latency,
            m.load * math.exp(-max(0.0, server_now - m.lstamp_ms) / decay),
            ready,
            left_requests,
            left_tokens,
        )

    async def acquire(self, name: str, now: float, limit: RateLimit | None, tokens: int) -> float:
        self._limits[name] = limit
        member = f"{self._instance}:{next(self._counter)}"
        reply = await self._call("a", name, member, tokens, "", 0)
        if reply is None:
            return self._local.acquire_nowait(name, now, limit, tokens)
        wait, server_ms = reply
        if wait > 0:
            return wait
        self._starts.setdefault(name, []).append((member, server_ms // 1000))
        return 0.0

    def observe(self, name: str, now: float, latency: float, failed: bool) -> None:
        if self._down or self._client is None:
            self._local.observe_nowait(name, now, latency, failed)
            return
        seen = self._samples.get(name)
        if seen is None or latency > seen[0]:  # between trips, the peak is what counts
            self._samples[name] = (latency, failed)

    async def release(
        self, name: str, now: float, estimate: int, used: int | None, *, sent: bool = True
    ) -> None:
        starts = self._starts.get(name)
        if not starts:  # taken in process during an outage
            self._local.release_nowait(name, now, estimate, used, sent=sent)
            return
        member, second = starts.pop(0) if sent else starts.pop()
        extra = "unsent" if not sent else "" if used is None else str(used)
        if await self._call("r", name, member, estimate, extra, second) is None:
            self._local.release_nowait(name, now, estimate, used, sent=sent)

    def learn(self, name: str, now: float, learned: Learned) -> None:
        if self._down or self._client is None:
            self._local.learn_nowait(name, now, learned)
            return
        self.learned = True
        if learned.tokens is not None:
            self.counts_tokens = True
        self._learned[name] = learned

    # -- the round trip ----------------------------------------------------------

    def _deployment_keys(self, name: str) -> tuple[str, str]:
        keys = self._keys.get(name)
        if keys is None:
            d = f"{len(name)}:{name}"
            keys = self._keys[name] = (f"{self.prefix}dep:{d}", f"{self.prefix}live:{d}")
        return keys

    async def _call(
        self, op: str, name: str, member: str, tokens: int, used: str, second: int
    ) -> tuple[float, int] | None:
        """One script run; (seconds to wait, server ms) or None to decide in process."""
        self._mirror.setdefault(name, _Mirror())
        names = list(self._mirror)
        keys: list[str] = []
        args = [
            op,
            str(names.index(name) + 1),
            member,
            str(tokens),
            used,
            str(second),
            str(round(self.decay * 1000)),
            str(round(self.max_hold * 1000)),
            str(round(max(self.max_hold, 120.0) * 1000)),
        ]
        samples, learned = self._samples, self._learned
        self._samples, self._learned = {}, {}
        for n in names:
            keys.extend(self._deployment_keys(n))
            limit = self._limits.get(n)
            sample = samples.get(n)
            facts = learned.get(n)
            args += [
                "" if limit is None or limit.rpm is None else str(int(limit.rpm)),
                "" if limit is None or limit.tpm is None else repr(limit.tpm),
                "" if sample is None else repr(sample[0]),
                "1" if sample is not None and sample[1] else "0",
                "" if facts is None or facts.requests is None else repr(facts.requests),
                str(round((facts.requests_reset or 60.0) * 1000)) if facts else "0",
                "" if facts is None or facts.tokens is None else repr(facts.tokens),
                str(round((facts.tokens_reset or 60.0) * 1000)) if facts else "0",
                repr((facts.requests_limit or 0.0) / 60_000) if facts else "0",
                repr((facts.tokens_limit or 0.0) / 60_000) if facts else "0",
            ]
        return await self._eval(keys, args, lambda reply, seen: self._apply(names, reply, seen))

    def _apply(self, names: list[str], reply: object, seen_at: float) -> tuple[float, int]:
        if not isinstance(reply, list) or len(reply) != 2 + _OUT * len(names):
            raise ValueError(f"unexpected reply from the routing script: {reply!r:.200}")
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in reply]
        now_ms = int(values[0])
        self._offset = now_ms / 1000 - seen_at
        for i, name in enumerate(names):
            v = values[2 + _OUT * i : 2 + _OUT * (i + 1)]
            self._mirror[name] = _Mirror(
                int(v[0]),
                float(v[1]),
                int(float(v[2])),
                float(v[3]),
                int(float(v[4])),
                int(float(v[5])),
                float(v[6]),
                int(float(v[7])),
                float(v[8]) if v[8] else None,
                float(v[9]) if v[9] else None,
                float(v[11]) if v[11] else None,
            )
        return float(values[1]) / 1000, now_ms

    _DOWN_MESSAGE = (
        "Redis routing store unavailable; routing state is per process until it answers again"
    )
    _UP_MESSAGE = "Redis routing store answers again; routing state is shared"

    def _resynced(self) -> None:
        self._local = LocalRouting(self.decay)
