"""Routing state: what each deployment is doing, kept where the routing decision reads it.

The decision (``_routing.order``) is pure; the state it reads lives here,
behind :class:`RoutingStore`, the routing twin of provider health's
``HealthStore``: in-process by default (:class:`LocalRouting`), in Redis for
a fleet (``RedisRouting``) so that every process honours one RPM budget per
deployment and sees the others' requests in flight.

Per deployment the store keeps
------------------------------
- ``in_flight``: attempts started and not yet ended (a stream ends when the
  caller lets go of it, not at its first item);
- the start times of the attempts in flight, so a decision can see how long
  the oldest has waited;
- a peak EWMA of latency (Finagle's ``PeakEwma``)::

      on a sample s at time t:   w = exp(-(t - stamp) / decay)
                                 cost = s                      if s > cost
                                        cost * w + s * (1 - w) otherwise
      on a read at time t:       cost * exp(-(t - stamp) / decay)

  so a slow sample counts at once, fast ones pull the average down over
  ``decay`` seconds, and an old sample fades toward zero (the deployment
  gets tried again). A decision reads instead the age of the oldest attempt
  still in flight when that is over :data:`STALL` (3) times the average: a
  deployment that has just slowed down shows it before its first slow
  answer returns;
- ``load``: requests routed to it, decayed the same way (affinity's bound);
- the rate-limit windows: the start times of the last 60 s of requests
  (``rpm``), and (time, tokens) of the last 60 s (``tpm``). A request may
  start when fewer than ``rpm`` started in the last 60 s and its token
  estimate fits under ``tpm``; otherwise it is ready when enough old
  entries leave the window. Memory is at most ``rpm`` entries.
- limits learned from response headers (:func:`learn_headers`): remaining
  requests and tokens until a reset time. Requests already in flight when
  the header came, and every one started since, are subtracted, so a burst
  does not overshoot what the server said is left. When the server also
  tells its limit, what is left refills at limit / 60 s (both providers
  document continuously replenished buckets, and OpenAI's reset is the time
  until the bucket is *full*): a deployment with nothing left is ready
  again when one request's worth has refilled. Without the limit it gets no
  request until its reset.

Token estimates
---------------
A request's tokens are estimated before it is sent as ``ceil(characters /
4)`` of every message (the usual rule of thumb for English under BPE
tokenizers) plus :data:`OUTPUT_ALLOWANCE` for the answer; tiktoken is not
needed. When the answer reports its usage (input plus output tokens), the
window entry is corrected to it.
"""

from __future__ import annotations

import math
import re
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ._routing import DeploymentView, RateLimit, State

__all__ = [
    "OUTPUT_ALLOWANCE",
    "Learned",
    "LocalRouting",
    "RoutingStore",
    "learn_headers",
]

WINDOW = 60.0
"""Seconds of a per-minute rate-limit window."""

OUTPUT_ALLOWANCE = 256
"""Tokens assumed for an answer before its usage is known."""

STALL = 3.0
"""An attempt in flight this many times a deployment's average counts as its latency."""

MAX_RESET = 3600.0
"""A reset further away than this (a lying or broken header) is read as this."""


@dataclass(frozen=True, slots=True)
class Learned:
    """Rate-limit facts read from one response's headers (None where absent).

    ``*_reset`` are seconds from when the headers arrived.
    """

    requests: float | None = None
    requests_reset: float | None = None
    tokens: float | None = None
    tokens_reset: float | None = None
    requests_limit: float | None = None
    tokens_limit: float | None = None


class RoutingStore(ABC):
    """Where routing state lives; one per set of processes that should agree.

    ``views`` is synchronous: it reads this process's copy (the whole
    state in-process, a mirror refreshed by every round trip for Redis).
    The rest are ``async`` so a store may do I/O; :class:`LocalRouting`
    never blocks.
    """

    decay: float = 10.0
    counts_tokens: bool = False
    """True once a response announced a token budget: requests' tokens then count."""
    learned: bool = False
    """True once a response announced any rate limit: every decision must then read room."""

    @abstractmethod
    def view(self, name: str, now: float, limit: RateLimit | None, tokens: int) -> DeploymentView:
        """``name``'s state at ``now`` for a request of ``tokens`` estimated tokens."""

    @abstractmethod
    async def acquire(self, name: str, now: float, limit: RateLimit | None, tokens: int) -> float:
        """Start a request on ``name`` if it has capacity: 0.0, else seconds until it has."""

    @abstractmethod
    def observe(self, name: str, now: float, latency: float, failed: bool) -> None:
        """A latency sample of ``name`` (``failed``: counted only if it is a new peak).

        Synchronous: a shared store sends it with its next round trip.
        """

    @abstractmethod
    async def release(
        self, name: str, now: float, estimate: int, used: int | None, *, sent: bool = True
    ) -> None:
        """A request on ``name`` ended: its in-flight slot back, its tokens set to ``used``.

        ``sent=False``: room taken at ``now`` for a request that was never
        sent (its deployment was skipped): the request and its tokens leave
        the windows.
        """

    @abstractmethod
    def learn(self, name: str, now: float, learned: Learned) -> None:
        """Record what a response of ``name`` said about its rate limits (synchronous too)."""

    def rows(
        self, names: Sequence[str], now: float, limits: Mapping[str, RateLimit], tokens: int
    ) -> Mapping[str, State]:
        """What a routing decision reads of each of ``names`` (default: :meth:`view`)."""
        return {n: self.view(n, now, limits.get(n), tokens) for n in names}

    def bind(self, limits: Mapping[str, RateLimit | None]) -> None:
        """The deployments a router will use, and their limits (a shared store refreshes them)."""
        return None


class _Deployment:
    # Its state, and `row`: what a decision reads, refreshed in place (no
    # allocation per decision: see LocalRouting.rows).
    __slots__ = (
        "cost",
        "in_flight",
        "load",
        "load_stamp",
        "pending",
        "req_at",
        "req_left",
        "req_rate",
        "req_reset",
        "row",
        "stamp",
        "starts",
        "tok_at",
        "tok_left",
        "tok_rate",
        "tok_reset",
        "tok_sum",
        "tokens",
    )

    def __init__(self) -> None:
        self.in_flight = 0
        self.pending: deque[float] = deque()  # start times of those in flight, oldest first
        self.cost = 0.0
        self.stamp = 0.0
        self.load = 0.0
        self.load_stamp = 0.0
        self.starts: deque[float] = deque()
        self.tokens: deque[list[float]] = deque()  # [time, tokens]
        self.tok_sum = 0.0
        self.req_left = 0.0
        self.req_reset = -math.inf
        self.req_rate = 0.0  # refill per second, when the server told its limit
        self.req_at = 0.0
        self.tok_left = 0.0
        self.tok_reset = -math.inf
        self.tok_rate = 0.0
        self.tok_at = 0.0
        self.row = _Row()


class _Row:
    __slots__ = ("in_flight", "latency", "load", "ready_in")

    def __init__(self) -> None:
        self.in_flight = 0
        self.latency = 0.0
        self.load = 0.0
        self.ready_in = 0.0


class LocalRouting(RoutingStore):
    """Routing state in this process (the default); every method is O(1) amortized.

    Args:
        decay: Seconds, the time constant of the latency average and the
            recent load (``Routing.decay``).
    """

    def __init__(self, decay: float = 10.0) -> None:
        self.decay = decay
        self._deps: dict[str, _Deployment] = {}

    def __repr__(self) -> str:
        return f"LocalRouting({len(self._deps)} deployments)"

    def _dep(self, name: str) -> _Deployment:
        dep = self._deps.get(name)
        if dep is None:
            dep = self._deps[name] = _Deployment()
        return dep

    # -- reads ---------------------------------------------------------------

    def view(self, name: str, now: float, limit: RateLimit | None, tokens: int) -> DeploymentView:
        dep = self._dep(name)
        self._expire(dep, now)
        ready, left_req, left_tok = _capacity(dep, now, limit, tokens)
        return DeploymentView(
            name,
            dep.in_flight,
            _expected(dep, now, self.decay),
            dep.load * _fade(now - dep.load_stamp, self.decay),
            ready,
            left_req,
            left_tok,
        )

    def rows(
        self, names: Sequence[str], now: float, limits: Mapping[str, RateLimit], tokens: int
    ) -> Mapping[str, State]:
        # The decision's hot path: each deployment's row refreshed in place.
        # Rate-limit room is worked out only for a deployment that has a limit
        # or learned one; the decays are two exp() per deployment.
        out: dict[str, State] = {}
        decay = self.decay
        for name in names:
            dep = self._deps.get(name) or self._dep(name)
            row = dep.row
            row.in_flight = dep.in_flight
            row.latency = _expected(dep, now, decay)
            row.load = dep.load * _fade(now - dep.load_stamp, decay) if dep.load else 0.0
            limit = limits.get(name)
            if limit is None and dep.req_reset <= now and dep.tok_reset <= now:
                row.ready_in = 0.0
            else:
                self._expire(dep, now)
                row.ready_in = _capacity(dep, now, limit, tokens)[0]
            out[name] = row
        return out

    # -- writes --------------------------------------------------------------

    async def acquire(self, name: str, now: float, limit: RateLimit | None, tokens: int) -> float:
        return self.acquire_nowait(name, now, limit, tokens)

    def acquire_nowait(self, name: str, now: float, limit: RateLimit | None, tokens: int) -> float:
        """:meth:`acquire` without a coroutine (this store never waits)."""
        dep = self._deps.get(name) or self._dep(name)
        if limit is not None or dep.req_reset > now or dep.tok_reset > now:
            self._expire(dep, now)
            ready = _capacity(dep, now, limit, tokens)[0]
            if ready > 0:
                return ready
        dep.in_flight += 1
        dep.pending.append(now)
        dep.load = dep.load * _fade(now - dep.load_stamp, self.decay) + 1.0
        dep.load_stamp = now
        if limit is not None:  # the windows are kept only where a limit reads them
            dep.starts.append(now)
            dep.tokens.append([now, float(tokens)])
            dep.tok_sum += tokens
        if dep.req_reset > now:
            dep.req_left -= 1
        if dep.tok_reset > now:
            dep.tok_left -= tokens
        return 0.0

    def observe(self, name: str, now: float, latency: float, failed: bool) -> None:
        self.observe_nowait(name, now, latency, failed)

    def observe_nowait(self, name: str, now: float, latency: float, failed: bool) -> None:
        """:meth:`observe` (the same; named like the other in-process twins)."""
        dep = self._dep(name)
        w = _fade(now - dep.stamp, self.decay)
        if failed and latency <= dep.cost * w:
            return  # a quick failure says nothing about how fast answers come
        # Peak EWMA (see the module comment).
        dep.cost = latency if latency > dep.cost else dep.cost * w + latency * (1.0 - w)
        dep.stamp = now

    async def release(
        self, name: str, now: float, estimate: int, used: int | None, *, sent: bool = True
    ) -> None:
        self.release_nowait(name, now, estimate, used, sent=sent)

    def release_nowait(
        self, name: str, now: float, estimate: int, used: int | None, *, sent: bool = True
    ) -> None:
        """:meth:`release` without a coroutine."""
        dep = self._deps.get(name) or self._dep(name)
        dep.in_flight = max(0, dep.in_flight - 1)
        if dep.pending:
            # Which one ended is not known: the oldest goes (requests of one
            # deployment mostly end in the order they started).
            dep.pending.popleft()
        if not dep.starts and dep.req_reset <= now and dep.tok_reset <= now:
            return  # no window and nothing learned: only the in-flight count moves
        if not sent:
            # This request's start: ``now`` is when its room was taken (the
            # caller passes that time), so the newest entry equal to it.
            for i in range(len(dep.starts) - 1, -1, -1):
                if dep.starts[i] == now:
                    del dep.starts[i]
                    break
            _correct(dep, estimate, 0)
            if dep.req_reset > now:
                dep.req_left += 1
            if dep.tok_reset > now:
                dep.tok_left += estimate
        elif used is not None and used != estimate:
            _correct(dep, estimate, used)

    def learn(self, name: str, now: float, learned: Learned) -> None:
        self.learn_nowait(name, now, learned)

    def learn_nowait(self, name: str, now: float, learned: Learned) -> None:
        """:meth:`learn` (the same)."""
        self.learned = True
        dep = self._dep(name)
        # The server counted this request, not the others still in flight.
        others = max(0, dep.in_flight - 1)
        if learned.requests is not None:
            dep.req_left = learned.requests - others
            dep.req_reset = now + (learned.requests_reset or WINDOW)
            dep.req_rate = (learned.requests_limit or 0.0) / WINDOW
            dep.req_at = now
        if learned.tokens is not None:
            self.counts_tokens = True
            dep.tok_left = learned.tokens
            dep.tok_reset = now + (learned.tokens_reset or WINDOW)
            dep.tok_rate = (learned.tokens_limit or 0.0) / WINDOW
            dep.tok_at = now

    def _expire(self, dep: _Deployment, now: float) -> None:
        edge = now - WINDOW
        starts = dep.starts
        while starts and starts[0] <= edge:
            starts.popleft()
        entries = dep.tokens
        while entries and entries[0][0] <= edge:
            dep.tok_sum -= entries.popleft()[1]


def _expected(dep: _Deployment, now: float, decay: float) -> float:
    # The latency a decision reads: the decayed peak EWMA, or the age of the
    # oldest request still in flight when that is STALLED (over STALL times
    # the average). A deployment that has just slowed down shows it before
    # its first slow answer comes back. Not any age above the average: on a
    # busy client every deployment has requests a little late, and reading
    # them as slowness sent traffic to a deployment four times slower.
    if not dep.cost:
        return 0.0
    latency = dep.cost * _fade(now - dep.stamp, decay)
    if dep.pending:
        age = now - dep.pending[0]
        if age > STALL * latency:
            return age
    return latency


def _fade(elapsed: float, decay: float) -> float:
    # exp(-elapsed / decay), never above 1: a store shared by loops whose
    # clocks differ (a test's virtual clock beside real time) may see a
    # stamp from its "future", which must not overflow or grow the value.
    return math.exp(-elapsed / decay) if elapsed > 0 else 1.0


def _correct(dep: _Deployment, estimate: int, used: int) -> None:
    # Replace the newest window entry that still holds exactly this estimate.
    for entry in reversed(dep.tokens):
        if entry[1] == estimate:
            entry[1] = float(used)
            dep.tok_sum += used - estimate
            return


def _capacity(
    dep: _Deployment, now: float, limit: RateLimit | None, tokens: int
) -> tuple[float, float | None, float | None]:
    # Seconds until a request of `tokens` may start (0: now), and what is left.
    ready = 0.0
    left_req: float | None = None
    left_tok: float | None = None
    if limit is not None and limit.rpm is not None:
        rpm = max(1, int(limit.rpm))
        left_req = float(rpm - len(dep.starts))
        if left_req <= 0:
            ready = dep.starts[len(dep.starts) - rpm] + WINDOW - now
    if limit is not None and limit.tpm is not None:
        left_tok = limit.tpm - dep.tok_sum
        if tokens > left_tok and dep.tokens:
            need = dep.tok_sum + tokens - limit.tpm  # tokens that must leave the window
            freed = 0.0
            at = dep.tokens[-1][0]
            for t, n in dep.tokens:
                freed += n
                if freed >= need:
                    at = t
                    break
            ready = max(ready, at + WINDOW - now)
    if dep.req_reset > now:
        # What the server said was left, refilled since at limit / 60 s when
        # it told its limit (the providers' buckets refill continuously).
        left = dep.req_left + dep.req_rate * (now - dep.req_at)
        left_req = left if left_req is None else min(left_req, left)
        if left < 1:
            wait = (1 - left) / dep.req_rate if dep.req_rate else math.inf
            ready = max(ready, min(wait, dep.req_reset - now))
    if dep.tok_reset > now:
        left = dep.tok_left + dep.tok_rate * (now - dep.tok_at)
        left_tok = left if left_tok is None else min(left_tok, left)
        if left < tokens:
            wait = (tokens - left) / dep.tok_rate if dep.tok_rate else math.inf
            ready = max(ready, min(wait, dep.tok_reset - now))
    return max(ready, 0.0), left_req, left_tok


# -- headers ----------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def learn_headers(headers: Mapping[str, str]) -> Learned | None:
    """The rate-limit facts of one response's headers, or None when it has none.

    Reads OpenAI's (and Azure OpenAI's) ``x-ratelimit-remaining-requests``,
    ``x-ratelimit-remaining-tokens`` and ``x-ratelimit-reset-*`` (durations
    such as ``"1s"``, ``"6m0s"``, ``"120ms"``), and Anthropic's
    ``anthropic-ratelimit-{requests,tokens,input-tokens}-{remaining,reset}``
    (RFC 3339 times). Anything unreadable (not a number, negative, an
    unparseable time) is ignored; a reset further than an hour away is read
    as an hour, so a lying header cannot shut a deployment out for longer.
    ``headers`` must be case-insensitive (httpx2's are).
    """
    requests = _count(headers.get("x-ratelimit-remaining-requests"))
    tokens = _count(headers.get("x-ratelimit-remaining-tokens"))
    if requests is not None or tokens is not None:
        return Learned(
            requests,
            _duration(headers.get("x-ratelimit-reset-requests")),
            tokens,
            _duration(headers.get("x-ratelimit-reset-tokens")),
            _positive_count(headers.get("x-ratelimit-limit-requests")),
            _positive_count(headers.get("x-ratelimit-limit-tokens")),
        )
    a = "anthropic-ratelimit-"
    requests = _count(headers.get(a + "requests-remaining"))
    kind = "tokens" if headers.get(a + "tokens-remaining") is not None else "input-tokens"
    tokens = _count(headers.get(f"{a}{kind}-remaining"))
    if requests is None and tokens is None:
        return None
    return Learned(
        requests,
        _instant(headers.get(a + "requests-reset")),
        tokens,
        _instant(headers.get(f"{a}{kind}-reset")),
        _positive_count(headers.get(a + "requests-limit")),
        _positive_count(headers.get(f"{a}{kind}-limit")),
    )


def _positive_count(value: str | None) -> float | None:
    number = _count(value)
    return number if number else None


def _count(value: str | None) -> float | None:
    if value is None or len(value) > 32:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _duration(value: str | None) -> float | None:
    if value is None or len(value) > 64:
        return None
    text = value.strip().lower()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        plain = _count(text)  # a bare number of seconds
        return None if plain is None else min(plain, MAX_RESET)
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return min(sum(float(n) * scale[u] for n, u in parts), MAX_RESET)


def _instant(value: str | None) -> float | None:
    if value is None or len(value) > 64:
        return None
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    return min(max(at.timestamp() - time.time(), 0.0), MAX_RESET)
