"""Hedged requests: start the next candidate when the current one is slow, keep the first.

A provider that is slow but not dead (queueing, a cold start) is the
commonest bad day, and a first-chunk timeout punishes it twice: the caller
waits the whole timeout, then starts from zero elsewhere. Hedging ("The Tail
at Scale", gRPC's hedging policy) sends the same request to the next
candidate once the current attempt has been silent for ``after`` seconds,
and keeps whichever delivers first.

Race algorithm
--------------
::

    race(first slot):                       # one nursery; every racer in its own scope
        start racer(first)
        while extra < max_extra and no winner and someone still runs:
            wait until the newest racer has run `after` seconds (its route's
                p95 TTFT in "p95" mode) or the race settles
            hedge budget (<= budget x requests in the window, at least
                min_hedges_per_second x window) and the retry
                budget and the next candidate's breaker allow it?
                -> start racer(next candidate), else stop hedging
        racer(slot): attempt; at its commit point (first chunk, or the whole
            response) it claims the win: the first claim cancels every other
            racer's scope (their connections close at that instant); a later
            claim loses
    no winner: every failure is reported to the planner, the newest last, so
        the usual failover continues after the newest candidate

A racer that fails does not end the race while another still runs. The
losers appear in the failure trail as ``hedge_lost`` with their timings;
the winner is what fallback information names. Cancelling the caller
cancels the nursery, hence every racer; nothing outlives the race.

The ``"p95"`` delay is the 95th percentile of the route's observed times to
first chunk (winners only), floored at ``min_after``; until 20 samples exist
it is ``initial_after``. Samples are kept in a ring of 256 per route and the
percentile is recomputed every 16 new samples, so the cost per request is a
dict look-up.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from ._backend import Backend, current_time
from ._backend import current as current_backend
from ._health import RetryBudget, RouteKey
from ._records import HedgedRun, SlotView
from ._records import Lost as Lost

__all__ = ["Hedge", "Hedger", "Lost", "race"]

R = TypeVar("R")

P95_MIN_SAMPLES = 20
_RING = 256
_REFRESH = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class Hedge:
    """When and how much to hedge (``ReliableProvider(hedge=Hedge(...))``).

    Attributes:
        after: Seconds without a first chunk (or a response) before the
            next candidate is started too, or ``"p95"``: the route's observed
            95th-percentile time to first chunk.
        max_extra: Extra attempts in flight at most (1 to 4).
        budget: Hedges allowed as a fraction of requests over ``window``.
        window: Seconds of the hedge budget's sliding window.
        min_hedges_per_second: The budget's floor: this many hedges per
            second (``min_hedges_per_second x window`` per window) are
            always allowed, whatever the traffic. Without it a service
            sending one request every few seconds had its first request
            hedged and every later one refused (10 % of a handful of
            requests is less than one hedge), so hedging looked broken.
            The same shape as provider health's ``min_retries_per_second``.
        min_after: Floor of the ``"p95"`` delay.
        initial_after: The ``"p95"`` delay until 20 samples exist.

    Raises:
        TypeError, ValueError: For a bad value, naming the field.
    """

    after: float | Literal["p95"] = 1.0
    max_extra: int = 1
    budget: float = 0.1
    window: float = 10.0
    min_hedges_per_second: float = 1.0
    min_after: float = 0.05
    initial_after: float = 1.0

    def __post_init__(self) -> None:
        if self.after != "p95":
            _positive("after", self.after)
        if isinstance(self.max_extra, bool) or not isinstance(self.max_extra, int):
            raise TypeError(f"Hedge.max_extra must be an integer, got {self.max_extra!r}")
        if not 1 <= self.max_extra <= 4:
            raise ValueError(f"Hedge.max_extra must be from 1 to 4, got {self.max_extra}")
        _positive("budget", self.budget, zero=True)
        if self.budget > self.max_extra:
            raise ValueError(
                f"Hedge.budget must be at most max_extra ({self.max_extra}), got {self.budget}"
            )
        _positive("window", self.window)
        _positive("min_hedges_per_second", self.min_hedges_per_second, zero=True)
        _positive("min_after", self.min_after)
        _positive("initial_after", self.initial_after)


def _positive(name: str, value: object, *, zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Hedge.{name} must be a number of seconds or 'p95', got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ValueError(f"Hedge.{name} must be a positive finite number, got {value!r}")


@dataclass(slots=True)
class _Samples:
    ring: deque[float] = field(default_factory=lambda: deque(maxlen=_RING))
    fresh: int = 0
    p95: float | None = None


class Hedger:
    """The runtime of one ``Hedge`` policy: its budget and the observed TTFTs."""

    __slots__ = ("_budget", "_routes", "policy")

    def __init__(self, policy: Hedge) -> None:
        self.policy = policy
        self._budget = RetryBudget(policy.budget, policy.window, policy.min_hedges_per_second)
        self._routes: dict[RouteKey, _Samples] = {}

    async def race(
        self, run: HedgedRun, first: SlotView, attempt: Attempt[R]
    ) -> tuple[Any, R] | None:
        """:func:`race` with this hedger: how the planner's drivers hedge (``HedgeDriver``)."""
        return await race(run, first, attempt, self)

    def delay_for(self, key: RouteKey) -> float:
        """Seconds to wait for ``key``'s attempt before hedging."""
        after = self.policy.after
        if after != "p95":
            return after
        samples = self._routes.get(key)
        if samples is None or samples.p95 is None:
            return self.policy.initial_after
        return max(samples.p95, self.policy.min_after)

    def observe(self, key: RouteKey, ttft: float) -> None:
        """Record a winner's time to first chunk."""
        samples = self._routes.get(key)
        if samples is None:
            samples = self._routes[key] = _Samples()
        samples.ring.append(max(ttft, 0.0))
        samples.fresh += 1
        n = len(samples.ring)
        if n >= P95_MIN_SAMPLES and (samples.p95 is None or samples.fresh >= _REFRESH):
            ordered = sorted(samples.ring)
            samples.p95 = ordered[max(math.ceil(0.95 * n) - 1, 0)]
            samples.fresh = 0

    def note_request(self) -> None:
        """Count one request in the hedge budget's window."""
        self._budget.note_request(current_time())

    def try_hedge(self) -> bool:
        """Spend one hedge from the budget; False when it is exhausted."""
        return self._budget.try_retry(current_time())


@dataclass(slots=True, eq=False)
class _Racer(Generic[R]):
    slot: SlotView
    scope: Any  # the backend's CancelScope
    started: float
    result: R | None = None
    error: Exception | None = None
    finished: bool = False
    reported: bool = False


class _Race(Generic[R]):
    __slots__ = ("changed", "racers", "running", "winner")

    def __init__(self, be: Backend) -> None:
        self.racers: list[_Racer[R]] = []
        self.running = 0
        self.winner: _Racer[R] | None = None
        self.changed = be.Event()


Attempt = Callable[[Any, Callable[[], bool]], Awaitable[R]]
"""``(slot, claim) -> result``: one attempt; it calls ``claim()`` at its commit point
and raises ``Lost`` when the claim is refused."""


async def race(
    run: HedgedRun, first: SlotView, attempt: Attempt[R], hedger: Hedger
) -> tuple[Any, R] | None:
    """Race ``first`` against hedges (see the module comment).

    Returns:
        The winner and its result, or None when every racer failed (their
        failures are then reported to ``run``, which decides what is next).

    Raises:
        Whatever the winner's attempt raised after its commit point (a
        committed stream that broke), unchanged.
    """
    be = current_backend()
    state: _Race[R] = _Race(be)
    hedger.note_request()

    async def run_racer(racer: _Racer[R]) -> None:
        def claim() -> bool:
            if state.winner is not None:
                return False
            state.winner = racer
            now = be.current_time()
            # Everyone else is settled now, before the winner commits, so the
            # trail (and the fallback information the commit records) names
            # the failures and the losers, with their timings.
            for other in state.racers:
                if other is racer:
                    continue
                other.reported = True
                if other.error is not None:
                    run.note_failure(other.slot, other.error)
                elif not other.finished:
                    other.scope.cancel()
                    run.lost(other.slot, other.started, now, racer.slot)
            hedger.observe((racer.slot.name, racer.slot.model_id), now - racer.started)
            racer.slot.succeeded()
            state.changed.set()
            return True

        try:
            with racer.scope:
                try:
                    racer.result = await attempt(racer.slot, claim)
                except Lost:
                    pass
                except Exception as err:
                    racer.error = err
                racer.finished = True
        finally:
            state.running -= 1
            if state.running == 0:
                state.changed.set()

    async with be.open_nursery() as nursery:

        def start(slot: SlotView) -> _Racer[R]:
            racer: _Racer[R] = _Racer(slot, be.CancelScope(), be.current_time())
            state.racers.append(racer)
            state.running += 1
            nursery.start_soon(run_racer, racer)
            return racer

        newest = start(first)
        for _ in range(hedger.policy.max_extra):
            delay = hedger.delay_for((newest.slot.name, newest.slot.model_id))
            with be.move_on_at(newest.started + delay):
                await state.changed.wait()
            if state.changed.is_set():
                break
            if not hedger.try_hedge():
                run.note_hedge_refused(newest.slot, "hedge budget exhausted; no hedge sent")
                break
            nxt = await run.hedge()
            if nxt is None:
                break
            newest = start(nxt)
    winner = state.winner
    if winner is not None:
        for racer in state.racers:
            if racer is not winner and racer.error is not None and not racer.reported:
                run.note_failure(racer.slot, racer.error)  # failed after the claim
        if winner.error is not None:
            raise winner.error
        return winner.slot, winner.result  # type: ignore[return-value]
    # Nobody won, so every racer failed: the newest one's failure decides what
    # the run does next (it holds the run's position), the others are noted.
    newest = state.racers[-1]
    for racer in state.racers[:-1]:
        if racer.error is not None:
            run.note_failure(racer.slot, racer.error)
    if newest.error is not None:
        newest.slot.failed(newest.error)
    return None
