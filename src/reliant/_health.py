"""Provider health: circuit breakers, cooldowns and a retry budget shared by requests.

Without it every request starts from zero: a dead primary costs every caller
its whole retry ladder, a 429 with ``Retry-After: 30`` makes the caller sleep
although a healthy fallback exists, and during an outage every caller's
retries multiply the traffic sent to a provider that is already failing.
Health remembers, across the requests of one ``ReliableProvider`` (or of
several, or of a fleet with a shared store), what the last attempts taught.

Interface
---------
The failover planner is the only caller (through one ``_admission.HealthGate``
per request), and it stays the one place that decides the order of
attempts. Before an attempt it asks
:meth:`HealthStore.admit`; after it, it reports :meth:`HealthStore.record`
(or :meth:`HealthStore.release` when the attempt was cancelled before it had
an outcome). Both are ``async`` so a store may do I/O (the Redis store does
one round trip per decision); the in-process :class:`LocalHealth` never
blocks and never checkpoints, so using it adds no scheduling point.

Breaker algorithm (one record per (provider name, model id as sent))
--------------------------------------------------------------------
::

    closed ──(open_after consecutive retryable failures,
    │         or a rate limit with Retry-After: open for exactly that long,
    │         or a silent route: first-chunk timeout / long silence then reset)──► open
    open ──(now >= opened_until: the next admit takes the one probe slot)──► half_open
    half_open ──(probe succeeded)──► closed, the open period back to open_for
    half_open ──(probe failed)──► open again for twice the last period (<= max_open_for)
    half_open ──(probe cancelled, or ended with an error that says nothing
                 about health)──► half_open, slot free for the next request

While open, and while the probe is in flight, ``admit`` answers ``skip``:
the planner moves to the next candidate without calling and without a
backoff sleep. It never refuses outright: a candidate skipped this way is
kept and tried as a last resort (``force=True``, which bypasses the breaker)
when no other candidate is left, so a one-provider set-up behaves as if
there were no breaker at all and an outage of every provider still gets the
request tried. Non-retryable failures (auth, bad request, context window)
do not count toward opening; any success resets the count.

Retry budget (per route, as Envoy keeps one per cluster)
--------------------------------------------------------
First tries are always allowed; a retry (attempt 2+ on the same route) is
allowed while the retries that route admitted in the last ``budget_window``
seconds are fewer than ``max(retry_budget * first tries on the route in the
window, min_retries_per_second * budget_window)``. The window is a ring of
ten buckets, so memory per route is constant and a decision is O(1) however
many requests pass. Under an outage this caps the traffic to each route at
about ``1 + retry_budget`` times its first tries, instead of
``max_retries + 1`` times; the floor keeps a quiet route's occasional retry
always allowed.

Why per route: a budget exists to stop retry storms against an upstream
whose retries fail too. One budget for the whole store let dead routes
spend it, so a working route that needed its one retry (a provider that
fails a request once, then answers) was refused, and requests the seed's
plain ladder serves failed (105 of 200 in a burst). Kept per route, a dead
route spends only its own allowance. Budgets of routes unused for a whole
window are dropped once there are many, so memory stays bounded.

Re-open periods: fast failures and silent routes
------------------------------------------------
A failed probe re-opens the breaker for twice the last period. How far it
doubles depends on what the failure cost: a route that answers at once
with an error (a 5xx in milliseconds) is cheap to probe, so its period is
capped at ``max_open_for_fast`` (10 s) and it gets its traffic back within
that long of recovering; a silent route (a first-chunk timeout, a long
silence then a reset) costs each probe its whole timeout, so its period
doubles up to ``max_open_for`` (60 s). Either way an outage costs about one
probe per period per route.

Every time comes from the running loop's clock (``current_time()``,
or the asyncio loop's ``time()``: :func:`reliant._backend.current_time`), so
tests drive breakers and the budget with a virtual clock at exact times.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from . import backoff as _backoff
from ._backend import current_time

__all__ = [
    "BreakerState",
    "Decision",
    "HealthPolicy",
    "HealthStore",
    "LocalHealth",
    "Outcome",
    "RetryBudget",
    "RouteHealth",
    "RouteKey",
]

RouteKey: TypeAlias = tuple[str, str]
"""(provider name, model id as sent to that provider)."""

BreakerState: TypeAlias = Literal["closed", "open", "half_open"]


def _number(name: str, value: object, *, positive: bool, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"HealthPolicy.{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"HealthPolicy.{name} must be finite, got {value!r}")
    if positive and not (number > 0 or (allow_zero and number == 0)):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"HealthPolicy.{name} must be {bound}, got {value!r}")
    return number


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthPolicy:
    """How provider health judges routes; every field is validated.

    Attributes:
        open_after: Consecutive retryable failures that open a breaker.
        open_for: Seconds a breaker first stays open; doubled on each
            re-open (a failed probe) up to ``max_open_for``.
        max_open_for: Cap of the doubling for a silent route (timeouts,
            hangs): each probe of one costs its whole timeout.
        max_open_for_fast: Cap of the doubling for a route that fails fast
            (an error status at once): cheap to probe, so it is probed at
            least this often and gets traffic back soon after it recovers.
            Never below ``open_for``, never above ``max_open_for``.
        retry_budget: Retries allowed on a route as a fraction of its first
            tries in the window.
        budget_window: Seconds of the sliding window of the retry budget.
        min_retries_per_second: Retries always allowed on each route,
            whatever the ratio.
        silent_after: An attempt that waited this long and then failed with
            a transport error counts as a silent route (opens at once).
        max_retry_after_wait: A rate limit whose Retry-After is at most
            this many seconds is waited out on the same route (the request
            keeps its preferred model) when that route was not already
            known to be down and the caller's deadline allows the wait; a
            longer one sends the request to the next candidate at once. The
            route's fleet-wide cooldown applies either way. 0 always moves on.

    Raises:
        TypeError: A field of the wrong type.
        ValueError: Zero, negative, NaN or infinite values (``retry_budget``,
            ``min_retries_per_second`` and ``max_retry_after_wait`` may be 0), or
            ``max_open_for < open_for``.
    """

    open_after: int = 3
    open_for: float = 5.0
    max_open_for: float = 60.0
    max_open_for_fast: float = 10.0
    retry_budget: float = 0.2
    budget_window: float = 10.0
    min_retries_per_second: float = 3.0
    silent_after: float = 5.0
    max_retry_after_wait: float = 3.0

    def __post_init__(self) -> None:
        if isinstance(self.open_after, bool) or not isinstance(self.open_after, int):
            raise TypeError(
                f"HealthPolicy.open_after must be an integer, got {type(self.open_after).__name__}"
            )
        if self.open_after < 1:
            raise ValueError(f"HealthPolicy.open_after must be at least 1, got {self.open_after}")
        _number("open_for", self.open_for, positive=True)
        _number("max_open_for", self.max_open_for, positive=True)
        _number("max_open_for_fast", self.max_open_for_fast, positive=True)
        _number("retry_budget", self.retry_budget, positive=True, allow_zero=True)
        _number("budget_window", self.budget_window, positive=True)
        _number(
            "min_retries_per_second", self.min_retries_per_second, positive=True, allow_zero=True
        )
        _number("silent_after", self.silent_after, positive=True)
        _number("max_retry_after_wait", self.max_retry_after_wait, positive=True, allow_zero=True)
        if self.max_open_for < self.open_for:
            raise ValueError(
                f"HealthPolicy.max_open_for ({self.max_open_for}) must be >= "
                f"open_for ({self.open_for})"
            )

    @property
    def fast_cap(self) -> float:
        """The re-open cap that applies to a route that fails fast (see the field)."""
        return min(self.max_open_for, max(self.open_for, self.max_open_for_fast))

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> HealthPolicy:
        """Build a policy from a mapping (a TOML table); unknown keys raise ``ValueError``."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown health setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RouteHealth:
    """A snapshot of one route's breaker, as ``ReliableProvider.health()`` shows it.

    Attributes:
        state: ``"closed"``, ``"open"`` or ``"half_open"``.
        consecutive_failures: Retryable failures since the last success.
        opened_until: Trio-clock time the open period ends (None when closed).
        last_error: Sanitized text of the last failure (None if none yet).
        open_for: Seconds the next (re-)open will last.
        probe_in_flight: True while one request probes a half-open route.
    """

    state: BreakerState
    consecutive_failures: int
    opened_until: float | None
    last_error: str | None
    open_for: float
    probe_in_flight: bool = False


Admission: TypeAlias = Literal["allow", "probe", "skip", "no_budget"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What :meth:`HealthStore.admit` allows.

    Attributes:
        admission: ``"allow"`` (call it), ``"probe"`` (call it; this request
            holds the half-open probe slot and must report the outcome or
            release it), ``"skip"`` (breaker open or a probe in flight: do
            not call), ``"no_budget"`` (a retry the budget refuses).
        reopens_at: For ``"skip"``: when the route takes a probe again; the
            planner tries skipped routes in that order as a last resort.
    """

    admission: Admission
    reopens_at: float = 0.0


ALLOW = Decision("allow")
PROBE = Decision("probe")
NO_BUDGET = Decision("no_budget")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt taught about its route.

    Attributes:
        ok: The attempt succeeded (a stream: it delivered its first item).
        counts: A retryable failure that counts toward opening the breaker
            (False for successes and for errors that say nothing about the
            route's health: auth, bad request, context window).
        open_for: Open the breaker at once for exactly this long (a
            Retry-After), or None.
        silent: Open at once for the current open period (a silent route).
        error: Sanitized error text, kept as the route's ``last_error``.
    """

    ok: bool
    counts: bool = False
    open_for: float | None = None
    silent: bool = False
    error: str | None = None


SUCCESS = Outcome(ok=True)


class HealthStore(ABC):
    """Where health lives; the planner's only view of it.

    Implementations: :class:`LocalHealth` (in process, the default) and
    ``RedisHealth`` (shared by a fleet). One store may serve several
    ``ReliableProvider``\\ s; they then share breakers and the budget.
    """

    policy: HealthPolicy

    @abstractmethod
    async def admit(
        self, key: RouteKey, *, new_request: bool = False, retry: bool = False, force: bool = False
    ) -> Decision:
        """Decide whether an attempt on ``key`` may be made now.

        Args:
            key: The route.
            new_request: This is the first attempt of a request. The
                built-in stores no longer need it (each route counts its
                own first tries: every admit without ``retry``); kept for
                stores that count requests.
            retry: This is a retry on the same route (it needs budget);
                otherwise a first try, counted in the route's budget window.
            force: The planner has no other candidate left: bypass the
                breaker (never returns ``"skip"``), the budget still applies.
        """

    @abstractmethod
    async def record(
        self, key: RouteKey, outcome: Outcome, *, probe: bool = False
    ) -> RouteHealth | None:
        """Report an attempt's outcome; ``probe`` when it held the probe slot.

        Returns:
            The route's new state when this outcome opened (or re-opened) or
            closed its breaker, else None (the planner turns it into a
            ``CircuitOpened``/``CircuitClosed`` event; a store that does not
            know may always return None).
        """

    @abstractmethod
    async def release(self, key: RouteKey) -> None:
        """Give back a probe slot whose attempt ended without an outcome (cancelled)."""

    @abstractmethod
    def snapshot(self) -> dict[RouteKey, RouteHealth]:
        """Every known route's state, as best this store knows it without I/O."""

    def any_open(self) -> bool:
        """False when no breaker is known to be open (routing then asks no route); no I/O."""
        return True

    def is_down(self, key: RouteKey, now: float) -> bool:
        """True while ``key``'s breaker is open or its probe is out, as known without I/O.

        Routing puts such a deployment last in its tier (the planner would
        only skip it); once its open period is over it is not down, so it
        leads again and the planner's probe goes to it.
        """
        return False


class RetryBudget:
    """Retries allowed as a share of requests over a sliding window (see the module comment).

    Ten buckets cover the window; counts older than the window fall off as
    the clock moves, so the answer is an O(1) sum over ten numbers.
    """

    __slots__ = ("_bucket", "_floor", "_ratio", "_requests", "_retries", "_start", "_width")

    BUCKETS = 10

    def __init__(self, ratio: float, window: float, min_per_second: float) -> None:
        self._ratio = ratio
        self._width = window / self.BUCKETS
        self._floor = min_per_second * window
        self._requests = [0] * self.BUCKETS
        self._retries = [0] * self.BUCKETS
        self._bucket = 0  # absolute index of the newest bucket
        self._start = False

    def _advance(self, now: float) -> int:
        index = math.floor(now / self._width)
        if not self._start:
            self._start, self._bucket = True, index
        elif index > self._bucket:
            # Clear every bucket the clock skipped over (all of them after a
            # long quiet spell); an earlier time (a clock that jumped back)
            # counts in the newest bucket, never a negative age.
            for i in range(self._bucket + 1, min(index, self._bucket + self.BUCKETS) + 1):
                self._requests[i % self.BUCKETS] = 0
                self._retries[i % self.BUCKETS] = 0
            self._bucket = index
        return self._bucket % self.BUCKETS

    def note_request(self, now: float) -> None:
        """Count one request."""
        self._requests[self._advance(now)] += 1

    def stale(self, now: float) -> bool:
        """True when nothing was counted for a whole window (the budget may be dropped)."""
        return not self._start or math.floor(now / self._width) >= self._bucket + self.BUCKETS

    def try_retry(self, now: float) -> bool:
        """Count one retry and return True if the budget allows it, else False."""
        slot = self._advance(now)
        allowed = max(self._ratio * sum(self._requests), self._floor)
        if sum(self._retries) >= allowed:
            return False
        self._retries[slot] += 1
        return True


_PRUNE_AT = 1024  # retry budgets kept before the idle ones are looked for


@dataclass(slots=True)
class _Route:
    open_for: float
    state: BreakerState = "closed"
    failures: int = 0
    opened_until: float = 0.0
    probe: bool = False
    last_error: str | None = field(default=None)

    def open(self, now: float, duration: float, max_open_for: float, *, double: bool) -> None:
        self.state = "open"
        self.opened_until = now + duration
        self.probe = False
        if double:
            self.open_for = min(duration * 2, max_open_for)


class LocalHealth(HealthStore):
    """Health kept in this process: the default store of ``ReliableProvider``.

    Pass one instance to several ``ReliableProvider``\\ s to make them share
    breakers and the retry budget. Never blocks, never checkpoints.

    Args:
        policy: The thresholds and durations.
    """

    __slots__ = ("_budgets", "_opened", "_prune_at", "_routes", "policy")

    def __init__(self, policy: HealthPolicy | None = None) -> None:
        self.policy = HealthPolicy() if policy is None else policy
        if not isinstance(self.policy, HealthPolicy):
            raise TypeError(f"policy must be a HealthPolicy, got {type(policy).__name__}")
        self._routes: dict[RouteKey, _Route] = {}
        self._budgets: dict[RouteKey, RetryBudget] = {}
        self._prune_at = _PRUNE_AT
        self._opened: set[RouteKey] = set()  # routes whose breaker is not closed

    def _budget(self, key: RouteKey, now: float) -> RetryBudget:
        budget = self._budgets.get(key)
        if budget is None:
            if len(self._budgets) >= self._prune_at:
                # Many routes (say, model ids chosen per request): drop the
                # budgets nothing used for a whole window; they hold nothing.
                for old in [k for k, b in self._budgets.items() if b.stale(now)]:
                    del self._budgets[old]
                self._prune_at = max(_PRUNE_AT, 2 * len(self._budgets))
            p = self.policy
            budget = RetryBudget(p.retry_budget, p.budget_window, p.min_retries_per_second)
            self._budgets[key] = budget
        return budget

    def __repr__(self) -> str:
        return f"LocalHealth({self.policy!r})"

    async def admit(
        self, key: RouteKey, *, new_request: bool = False, retry: bool = False, force: bool = False
    ) -> Decision:
        """See :meth:`HealthStore.admit`."""
        return self.admit_nowait(key, new_request=new_request, retry=retry, force=force)

    def admit_nowait(
        self,
        key: RouteKey,
        *,
        new_request: bool = False,
        retry: bool = False,
        force: bool = False,
        now: float | None = None,
    ) -> Decision:
        """The synchronous twin of :meth:`admit` (this store never waits).

        ``now``: the loop's time, when the caller has just read it.
        """
        if now is None:
            now = current_time()
        route = self._routes.get(key)
        decision = ALLOW
        if route is not None and route.state != "closed" and not force:
            if route.state == "open" and now < route.opened_until:
                return Decision("skip", route.opened_until)
            if route.probe:
                return Decision("skip", route.opened_until)
            decision = PROBE
        budget = self._budget(key, now)
        if not retry:
            budget.note_request(now)  # a first try on this route
        elif not budget.try_retry(now):
            return NO_BUDGET
        if decision is PROBE:
            assert route is not None
            route.state, route.probe = "half_open", True
        return decision

    async def record(
        self, key: RouteKey, outcome: Outcome, *, probe: bool = False
    ) -> RouteHealth | None:
        """See :meth:`HealthStore.record`."""
        return self.record_nowait(key, outcome, probe=probe)

    def record_nowait(
        self, key: RouteKey, outcome: Outcome, *, probe: bool = False
    ) -> RouteHealth | None:
        """The synchronous twin of :meth:`record` (returns a transition, see there)."""
        route = self._routes.get(key)
        if outcome.ok:
            if route is not None and (route.state != "closed" or route.failures):
                was = route.state
                route.state, route.failures, route.probe = "closed", 0, False
                self._opened.discard(key)
                route.open_for = self.policy.open_for
                if was != "closed":
                    return _view(route, current_time())
            return None
        if route is None:
            route = self._routes[key] = _Route(self.policy.open_for)
        if outcome.error is not None:
            route.last_error = outcome.error
        if probe:
            route.probe = False
        if not outcome.counts:
            return None  # says nothing about the route; a probe's slot is simply free again
        route.failures += 1
        now = current_time()
        max_open = self.policy.max_open_for
        if outcome.open_for is not None:
            # A Retry-After is the server's own word: exactly that long
            # (capped like every Retry-After wait), and no doubling.
            duration = min(max(outcome.open_for, 0.0), _backoff.MAX_RETRY_AFTER)
            route.open(now, duration, max_open, double=False)
            self._opened.add(key)
            return _view(route, now)
        # A failed probe re-opens, a silent route opens at once, and a
        # closed route opens at the threshold; each doubles the period, up
        # to the cap of what the failure cost (see the module comment).
        threshold = route.state == "closed" and route.failures >= self.policy.open_after
        if probe or outcome.silent or threshold:
            cap = max_open if outcome.silent else self.policy.fast_cap
            route.open(now, min(route.open_for, cap), cap, double=True)
            self._opened.add(key)
            return _view(route, now)
        return None

    async def release(self, key: RouteKey) -> None:
        """See :meth:`HealthStore.release`."""
        self.release_nowait(key)

    def release_nowait(self, key: RouteKey) -> None:
        """The synchronous twin of :meth:`release`."""
        route = self._routes.get(key)
        if route is not None:
            route.probe = False

    def clear(self) -> None:
        """Forget every route and every retry budget's window (a fresh start)."""
        self._routes.clear()
        self._budgets.clear()
        self._opened.clear()
        self._prune_at = _PRUNE_AT

    def any_open(self) -> bool:
        """See :meth:`HealthStore.any_open`."""
        return bool(self._opened)

    def is_down(self, key: RouteKey, now: float) -> bool:
        """See :meth:`HealthStore.is_down`."""
        route = self._routes.get(key)
        return (
            route is not None
            and route.state != "closed"
            and (route.probe or now < route.opened_until)
        )

    def snapshot(self) -> dict[RouteKey, RouteHealth]:
        """See :meth:`HealthStore.snapshot`."""
        now = current_time()
        return {key: _view(route, now) for key, route in self._routes.items()}


def _view(route: _Route, now: float) -> RouteHealth:
    state = route.state
    if state == "open" and now >= route.opened_until:
        state = "half_open"  # the next request would probe it
    return RouteHealth(
        state=state,
        consecutive_failures=route.failures,
        opened_until=None if route.state == "closed" else route.opened_until,
        last_error=route.last_error,
        open_for=route.open_for,
        probe_in_flight=route.probe,
    )
