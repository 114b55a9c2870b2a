"""Provider health shared by a fleet: the ``HealthStore`` kept in Redis (``reliant[redis]``).

With health kept per process, each of 16 workers discovers an outage by
itself and runs its own probe and its own retry budget, so a failing
provider still receives 16 times the probes and budgeted retries.
:class:`RedisHealth` keeps the same state (the semantics of
:class:`~reliant.LocalHealth`, which stays the reference) in Redis, so every
process using the same ``prefix`` shares breakers, and every process using
the same ``name`` shares the retry budget of each route.

Decisions
---------
Each decision (``admit``, ``record``, ``release``) is ONE round trip: a Lua
script (registered once, then ``EVALSHA``, loaded again on ``NOSCRIPT``)
does the whole transition atomically on the server, reading the server's
clock (``TIME``) for everything it stores, so machines with skewed clocks
agree. Keys (``P`` is the prefix, ``R`` the route as ``len(provider):provider:model``)::

    P route:R    hash: st (0 closed, 1 open, 2 half-open), f (consecutive
                 failures), until (ms, server clock), of (next open period,
                 ms), err (last error). TTL: what is left of the open
                 period + max(10 x max_open_for, 10 min), refreshed on write.
    P probe:R    the half-open probe slot: SET NX PX probe_ttl holding a
                 token of the holder; it expires by itself if the holder
                 dies, so a crash never leaves a route stuck half-open.
    P budget:N:R hash: route R's retry budget, a ring of ten buckets (q0..q9
                 first tries, t0..t9 retries, b the newest bucket), exactly
                 LocalHealth's RetryBudget (one per route, so a dead route
                 never spends a working one's retries). TTL: 2 x
                 budget_window + 1 s.

A success on a route that the admit just before it saw closed with no
failures changes nothing and is not sent, so a healthy request costs one
round trip in all. Every reply carries the route's state and the server's
time, which keeps a local mirror: :meth:`RedisHealth.snapshot` is synchronous and does no I/O,
and converts server times to the loop's clock with the offset observed at
the last round trip.

When Redis is down or slow
--------------------------
A decision that fails or takes longer than ``timeout`` (50 ms) is made by an
internal :class:`~reliant.LocalHealth` instead, and Redis is left alone for
``reconnect_interval`` (1 s) after that, so a refused connection does not
cost every request a round trip: while it is down, one request per
interval tries it again. One warning is logged per outage on the
``reliant`` logger, and one info line when it answers again; Redis is the
source of truth from then on (the per-process state of the outage is
dropped). A request never fails, and never waits more than ``timeout`` per
decision, because of Redis.

Structured concurrency
----------------------
coredis runs each connection's reader and writer in a task group; that
task group belongs to whoever enters ``async with RedisHealth(...)``. The
constructor does no I/O and needs no event loop; entering connects and
loads the script (bounded by ``connect_timeout``, never failing); leaving,
or ``aclose()`` from the same task, closes the connections. Nothing runs
in the background outside that block.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

try:
    import coredis  # noqa: F401  (the extra's dependency: a clear error when missing)
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "RedisHealth needs coredis, in the 'redis' extra: pip install 'reliant[redis]'"
    ) from err

from . import backoff as _backoff
from ._backend import current_time
from ._health import (
    ALLOW,
    NO_BUDGET,
    PROBE,
    BreakerState,
    Decision,
    HealthPolicy,
    HealthStore,
    LocalHealth,
    Outcome,
    RouteHealth,
    RouteKey,
)
from ._redis_link import RedisLink, positive, redact

__all__ = ["SCRIPT", "RedisHealth"]

# KEYS: route hash, probe slot, budget hash.
# ARGV: 1 op ("a" admit, "r" record, "l" release), 2 probe token,
#   3 open_after, 4 open_for ms, 5 max_open_for ms, 6 retry_budget ratio,
#   7 budget_window ms, 8 retry floor (min_retries_per_second x window),
#   9 probe_ttl ms, 10 route keep ms;
#   admit: 11 new_request, 12 retry, 13 force (each "1" or "0");
#   record: 11 ok, 12 counts, 13 Retry-After open ms or "", 14 silent,
#   15 probe, 16 error text or "", 17 re-open cap ms of a fast failure.
# Reply: {decision, server now ms, st (-1: no such route), f, until ms,
#   open_for ms, probe slot taken (0/1), last error or ""}.
SCRIPT: Final = r"""
local rk, pk, bk = KEYS[1], KEYS[2], KEYS[3]
local op, token = ARGV[1], ARGV[2]
local open_after = tonumber(ARGV[3])
local base_of, max_of = tonumber(ARGV[4]), tonumber(ARGV[5])
local ratio, window, floor = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local probe_ttl, keep = tonumber(ARGV[9]), tonumber(ARGV[10])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local r = {exists = false, st = 0, f = 0, ['until'] = 0, of = base_of, err = ''}
local raw = redis.call('HMGET', rk, 'st', 'f', 'until', 'of', 'err')
if raw[1] then
  r.exists = true
  r.st, r.f = tonumber(raw[1]), tonumber(raw[2])
  r['until'], r.of = tonumber(raw[3]), tonumber(raw[4])
  r.err = raw[5] or ''
end

local function reply(decision)
  local st = r.exists and r.st or -1
  return {decision, now, st, r.f, r['until'], r.of, redis.call('EXISTS', pk), r.err}
end

local function save()
  r.exists = true
  redis.call('HSET', rk, 'st', r.st, 'f', r.f, 'until', r['until'], 'of', r.of, 'err', r.err)
  redis.call('PEXPIRE', rk, math.ceil(math.max(r['until'] - now, 0) + keep))
end

local function open(duration, double, cap)
  r.st, r['until'] = 1, now + duration
  redis.call('DEL', pk)
  if double then r.of = math.min(duration * 2, cap) end
end

-- The retry budget: a ring of ten buckets over the window (RetryBudget).
local b, slot
local q, tr = 0, 0
local function budget()
  local width = window / 10
  local idx = math.floor(now / width)
  local h = {}
  local all = redis.call('HGETALL', bk)
  for i = 1, #all, 2 do h[all[i]] = tonumber(all[i + 1]) end
  b = h['b']
  if b == nil then
    b = idx
    redis.call('HSET', bk, 'b', b)
  elseif idx > b then
    for i = b + 1, math.min(idx, b + 10) do
      local s = i % 10
      h['q' .. s], h['t' .. s] = nil, nil
      redis.call('HDEL', bk, 'q' .. s, 't' .. s)
    end
    b = idx
    redis.call('HSET', bk, 'b', b)
  end
  slot = b % 10
  for i = 0, 9 do
    q = q + (h['q' .. i] or 0)
    tr = tr + (h['t' .. i] or 0)
  end
  redis.call('PEXPIRE', bk, math.ceil(window * 2 + 1000))
end

if op == 'a' then
  local retry, force = ARGV[12] == '1', ARGV[13] == '1'
  local decision = 'allow'
  if r.exists and r.st ~= 0 and not force then
    if r.st == 1 and now < r['until'] then return reply('skip') end
    if redis.call('EXISTS', pk) == 1 then return reply('skip') end
    decision = 'probe'
  end
  budget()
  if retry then
    if tr >= math.max(ratio * q, floor) then return reply('no_budget') end
    redis.call('HINCRBY', bk, 't' .. slot, 1)
  else
    redis.call('HINCRBY', bk, 'q' .. slot, 1)
  end
  if decision == 'probe' then
    if not redis.call('SET', pk, token, 'NX', 'PX', probe_ttl) then return reply('skip') end
    r.st = 2
    save()
  end
  return reply(decision)
elseif op == 'r' then
  local ok, counts, ra = ARGV[11] == '1', ARGV[12] == '1', ARGV[13]
  local silent, probe, err = ARGV[14] == '1', ARGV[15] == '1', ARGV[16]
  local cap = silent and max_of or tonumber(ARGV[17])
  if ok then
    if r.exists and (r.st ~= 0 or r.f > 0) then
      r.st, r.f, r.of = 0, 0, base_of
      redis.call('DEL', pk)
      save()
    end
    return reply('ok')
  end
  if err ~= '' then r.err = err end
  if probe and redis.call('GET', pk) == token then redis.call('DEL', pk) end
  if counts then
    r.f = r.f + 1
    if ra ~= '' then
      open(tonumber(ra), false, cap)
    elseif probe or silent or (r.st == 0 and r.f >= open_after) then
      open(math.min(r.of, cap), true, cap)
    end
  end
  save()
  return reply('ok')
else
  if redis.call('GET', pk) == token then redis.call('DEL', pk) end
  return reply('ok')
end
"""

_SHA: Final = hashlib.sha1(SCRIPT.encode()).hexdigest()
_STATES: Final[dict[int, BreakerState]] = {0: "closed", 1: "open", 2: "half_open"}
_MAX_ERROR = 300  # characters of last_error kept in Redis


@dataclass(slots=True)
class _Mirror:
    """What the last reply said about a route (server-clock milliseconds)."""

    state: BreakerState
    failures: int
    until_ms: int
    open_for_ms: int
    probe: bool
    error: str | None


class RedisHealth(RedisLink, HealthStore):
    """Provider health shared by every process that uses the same Redis.

    Same semantics as :class:`~reliant.LocalHealth` (breakers per route,
    Retry-After cooldowns, half-open probes, the retry budget), with the
    state in Redis: breakers are shared by every store with the same
    ``prefix``, the retry budget by every store with the same ``prefix``
    and ``name``. Use it as an async context manager, which owns the
    connections::

        async with RedisHealth("redis://localhost:6379/0") as health:
            llm = ReliableProvider([...], health=health)
            ...

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://``
            (TLS) or ``unix://path``.
        policy: The thresholds and durations (every process sharing a
            prefix should use the same policy).
        prefix: Start of every key; stores with different prefixes share
            nothing.
        name: Whose retry budgets these are: stores with the same name
            share each route's budget (e.g. one name per service),
            different names keep apart.
        timeout: Longest wait for Redis per decision, in seconds; past it
            the decision is made in process.
        probe_ttl: Seconds the half-open probe slot stays taken without an
            answer from its holder (a holder that died frees it after this).
        connect_timeout: Longest wait for the first connection when the
            store is entered.
        reconnect_interval: While Redis is unavailable, it is tried again at
            most once per this many seconds.

    Raises:
        ValueError: A non-positive time, an empty prefix or name, or a URL
            that is not ``redis://``, ``rediss://`` or ``unix://``.
    """

    def __init__(
        self,
        url: str,
        policy: HealthPolicy | None = None,
        *,
        prefix: str = "reliant:",
        name: str = "default",
        timeout: float = 0.05,
        probe_ttl: float = 30.0,
        connect_timeout: float = 1.0,
        reconnect_interval: float = 1.0,
    ) -> None:
        self._link(
            url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            reconnect_interval=reconnect_interval,
        )
        self.policy = HealthPolicy() if policy is None else policy
        if not isinstance(self.policy, HealthPolicy):
            raise TypeError(f"policy must be a HealthPolicy, got {type(policy).__name__}")
        for label, text in (("prefix", prefix), ("name", name)):
            if not isinstance(text, str) or not text:
                raise ValueError(f"RedisHealth {label} must be a non-empty string")
        self.prefix = prefix
        self.name = name
        self.probe_ttl = positive("probe_ttl", probe_ttl)
        p = self.policy
        self._policy_args = [
            str(p.open_after),
            _ms(p.open_for),
            _ms(p.max_open_for),
            repr(p.retry_budget),
            _ms(p.budget_window),
            repr(p.min_retries_per_second * p.budget_window),
            _ms(self.probe_ttl),
            _ms(max(10 * p.max_open_for, 600.0)),
        ]
        self._fast_cap = _ms(p.fast_cap)
        self._keys: dict[RouteKey, tuple[str, str, str]] = {}
        self._mirror: dict[RouteKey, _Mirror] = {}
        # The in-process fallback, and who granted each held probe slot.
        self._local = LocalHealth(self.policy)
        self._tokens: dict[RouteKey, str] = {}
        self._local_probes: set[RouteKey] = set()
        self._instance = secrets.token_hex(6)
        self._counter = itertools.count()

    _SCRIPT = SCRIPT
    _SHA = _SHA

    def __repr__(self) -> str:
        return (
            f"RedisHealth({redact(self._url)!r}, {self.policy!r}, "
            f"prefix={self.prefix!r}, name={self.name!r})"
        )

    # -- the round trip ----------------------------------------------------------

    def _route_keys(self, key: RouteKey) -> tuple[str, str, str]:
        keys = self._keys.get(key)
        if keys is None:
            provider, model = key
            route = f"{len(provider)}:{provider}:{model}"
            keys = (
                f"{self.prefix}route:{route}",
                f"{self.prefix}probe:{route}",
                f"{self.prefix}budget:{self.name}:{route}",
            )
            self._keys[key] = keys
        return keys

    async def _call(self, key: RouteKey, op: str, token: str, extra: Sequence[str]) -> str | None:
        """Run the script for ``key``; the decision, or None to decide in process."""
        args = [op, token, *self._policy_args, *extra]
        return await self._eval(
            self._route_keys(key), args, lambda reply, seen_at: self._apply(key, reply, seen_at)
        )

    def _apply(self, key: RouteKey, reply: object, seen_at: float) -> str:
        if not isinstance(reply, list) or len(reply) != 8:
            raise ValueError(f"unexpected reply from the health script: {reply!r:.200}")
        decision, now_ms, st, failures, until_ms, open_for_ms, probe, error = reply
        self._offset = int(now_ms) / 1000 - seen_at
        if int(st) < 0:
            self._mirror.pop(key, None)
        else:
            text = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
            self._mirror[key] = _Mirror(
                _STATES.get(int(st), "closed"),
                int(failures),
                int(until_ms),
                int(open_for_ms),
                bool(int(probe)),
                text or None,
            )
        return decision.decode() if isinstance(decision, bytes) else str(decision)

    _DOWN_MESSAGE = (
        "Redis health store unavailable; provider health is per process until it answers again"
    )
    _UP_MESSAGE = "Redis health store answers again; provider health is shared"

    def _log_extra(self) -> dict[str, object]:
        return {"store": self.name, "url": redact(self._url)}

    def _resynced(self) -> None:
        self._local.clear()
        self._local_probes.clear()

    # -- HealthStore -------------------------------------------------------------

    async def admit(
        self, key: RouteKey, *, new_request: bool = False, retry: bool = False, force: bool = False
    ) -> Decision:
        """See :meth:`HealthStore.admit` (one round trip, or an in-process decision)."""
        if self._client is None and not self._entered:
            raise RuntimeError(
                "RedisHealth is not open: use it inside `async with RedisHealth(...) as health:`"
            )
        token = f"{self._instance}:{next(self._counter)}"
        flags = ("1" if new_request else "0", "1" if retry else "0", "1" if force else "0")
        answer = await self._call(key, "a", token, flags)
        if answer is None:
            decision = self._local.admit_nowait(
                key, new_request=new_request, retry=retry, force=force
            )
            if decision.admission == "probe":
                self._local_probes.add(key)
            return decision
        if answer == "allow":
            return ALLOW
        if answer == "probe":
            self._tokens[key] = token
            return PROBE
        if answer == "no_budget":
            return NO_BUDGET
        mirror = self._mirror.get(key)
        return Decision("skip", self._to_loop(mirror.until_ms) if mirror else 0.0)

    async def record(
        self, key: RouteKey, outcome: Outcome, *, probe: bool = False
    ) -> RouteHealth | None:
        """See :meth:`HealthStore.record` (a transition is judged from the mirror)."""
        if outcome.ok and not probe and not self._down:
            seen = self._mirror.get(key)
            if seen is None or (seen.state == "closed" and not seen.failures and not seen.probe):
                # The admit just before this attempt saw nothing to reset:
                # a healthy request costs one round trip, not two.
                return None
        token = ""
        if probe:
            if key not in self._tokens and key in self._local_probes:
                # The slot was granted in process during an outage.
                self._local_probes.discard(key)
                return self._local.record_nowait(key, outcome, probe=True)
            token = self._tokens.pop(key, "")
        open_for = ""
        if outcome.open_for is not None:
            open_for = _ms(min(max(outcome.open_for, 0.0), _backoff.MAX_RETRY_AFTER))
        error = (outcome.error or "")[:_MAX_ERROR]
        extra = (
            "1" if outcome.ok else "0",
            "1" if outcome.counts else "0",
            open_for,
            "1" if outcome.silent else "0",
            "1" if probe else "0",
            error,
            self._fast_cap,
        )
        before = self._mirror.get(key)
        was = None if before is None else (before.state, before.until_ms)
        if await self._call(key, "r", token, extra) is None:
            return self._local.record_nowait(key, outcome, probe=probe)
        after = self._mirror.get(key)
        if after is None or (after.state, after.until_ms) == was:
            return None
        if after.state == "open" or (after.state == "closed" and was and was[0] != "closed"):
            return self._view(after, current_time())
        return None

    async def release(self, key: RouteKey) -> None:
        """See :meth:`HealthStore.release`."""
        token = self._tokens.pop(key, None)
        if token is not None and await self._call(key, "l", token, ()) is not None:
            return
        self._local_probes.discard(key)
        self._local.release_nowait(key)

    def is_down(self, key: RouteKey, now: float) -> bool:
        """See :meth:`HealthStore.is_down` (from the mirror, or in process during an outage)."""
        if self._down:
            return self._local.is_down(key, now)
        m = self._mirror.get(key)
        return (
            m is not None and m.state != "closed" and (m.probe or now < self._to_loop(m.until_ms))
        )

    def snapshot(self) -> dict[RouteKey, RouteHealth]:
        """Every route this process has seen, as of its last round trip (no I/O).

        Times are on the loop's clock, converted from the server's with the
        offset seen at the last reply. During an outage the in-process
        state is shown for the routes it knows.
        """
        now = current_time()
        view = {key: self._view(m, now) for key, m in self._mirror.items()}
        if self._down:
            view.update(self._local.snapshot())
        return view

    def _view(self, m: _Mirror, now: float) -> RouteHealth:
        opened_until = None if m.state == "closed" else self._to_loop(m.until_ms)
        state = m.state
        if state == "open" and opened_until is not None and now >= opened_until:
            state = "half_open"
        return RouteHealth(
            state=state,
            consecutive_failures=m.failures,
            opened_until=opened_until,
            last_error=m.error,
            open_for=m.open_for_ms / 1000,
            probe_in_flight=m.probe,
        )


def _ms(seconds: float) -> str:
    return str(round(seconds * 1000))
