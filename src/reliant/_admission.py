"""Provider health as one request's walk sees it: admit a candidate, hear an outcome.

The planner (``_failover``) decides the order of attempts; provider health
(``_health``) remembers across requests what attempts taught. Between the
two sits this room: one :class:`HealthGate` per request that walks with
health on. It is the planner's only contact with a :class:`HealthStore`,
through four operations::

    admit(key, retry=, force=)     -> Decision   before each attempt
    record(key, outcome, probe, n)               after each attempt
    release(key)                                 a racer forgotten without an outcome
    aclose()                                     when the request is over

and it owns the per-request state that makes those right:

- **the first admission** of the request counts as a first try for the
  route's retry budget, every later one as a retry;
- **held probes**: a granted probe is the route's one half-open slot for
  everyone; it is held until its outcome is recorded, and ``aclose()``
  gives back one a cancelled or abandoned attempt still holds;
- **pending outcomes**: ``record`` is synchronous (``Slot.failed`` must be),
  but a shared store does I/O, so its outcomes wait here and reach the
  store before the next admission or at ``aclose()``.

The in-process :class:`LocalHealth` never waits: every operation then calls
its ``*_nowait`` twin directly (no coroutine, no shielded cancel scope), so
health costs about 2 us per request. :attr:`HealthGate.immediate` tells the
streaming bridge that the next admission will not await anything.

What the walk does with a decision (defer a skipped candidate, trail a
refused retry, force a last resort through the breaker) stays in the
planner: this room answers and remembers, it does not walk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from ._backend import Backend
from ._exceptions import ProviderError
from ._health import (
    Decision,
    HealthPolicy,
    HealthStore,
    LocalHealth,
    Outcome,
    RouteHealth,
    RouteKey,
)

__all__ = ["GateFactory", "HealthGate", "Transition", "gate_type", "silent"]

#: Told when an outcome moved a route's breaker: (route, attempt number, new state).
Transition = Callable[[RouteKey, int, RouteHealth], None]

# A shared store gets at most this long, shielded, to hear a cancelled
# request's last outcome and give back its probe slot.
_SETTLE_TIMEOUT = 1.0


class HealthGate:
    """One request's dealings with provider health (see the module comment).

    Two implementations, chosen once per planner by :func:`gate_type`: one
    for the in-process store, whose every operation is synchronous, and one
    for a shared store, which awaits. The planner holds the type and builds
    one gate per request.

    Args:
        store: The health store the request consults.
        be: The running loop's primitives (a shared store's ``aclose``
            needs its shielded scope).
        now: The loop's clock as one callable (``Backend.clock()``), read
            once per admission by the in-process store.
        transition: Called when an outcome changed a route's breaker
            (the request's observer), or None.
    """

    #: True when admitting and recording never await (the in-process store).
    immediate: ClassVar[bool]

    __slots__ = ("_first", "_held", "transition")

    # Each kind's constructor takes ``(store, be, now, transition)`` and sets these:
    transition: Transition | None
    _first: bool  # the next admission is the request's first
    _held: list[RouteKey] | None  # probe slots held; made when first needed

    @property
    def policy(self) -> HealthPolicy:
        """The store's thresholds (what counts as silent, how long a Retry-After is waited out)."""
        raise NotImplementedError

    @property
    def unsettled(self) -> bool:
        """True while :meth:`aclose` has an outcome to report or a probe slot to give back."""
        return bool(self._held)

    def admit_nowait(self, key: RouteKey, *, retry: bool, force: bool) -> Decision:
        """:meth:`admit` when :attr:`immediate`: no coroutine on every attempt."""
        raise NotImplementedError

    async def admit(self, key: RouteKey, *, retry: bool, force: bool) -> Decision:
        """Ask whether ``key`` may be called now; a granted probe is held.

        ``retry``: the request already tried this route. ``force``: a last
        resort, let through an open breaker.
        """
        raise NotImplementedError

    def record(self, key: RouteKey, outcome: Outcome, probe: bool, attempt: int) -> None:
        """An attempt on ``key`` ended with ``outcome``; recording a probe frees its slot."""
        raise NotImplementedError

    def release(self, key: RouteKey) -> None:
        """Forget a racer's attempt without an outcome: its probe slot, if held, is given back.

        With a shared store the slot goes back at :meth:`aclose`.
        """

    async def aclose(self) -> None:
        """Report the last outcomes and give back unused probe slots.

        A cancelled request must still do this: a probe slot left held would
        keep the route half-open for everyone else.
        """
        raise NotImplementedError

    def _admitted(self, key: RouteKey, decision: Decision) -> Decision:
        if decision.admission == "probe":
            if self._held is None:
                self._held = []
            self._held.append(key)
        return decision


class _InProcessGate(HealthGate):
    """The gate of :class:`LocalHealth`: its ``*_nowait`` twins, called directly."""

    immediate = True

    __slots__ = ("_now", "store")

    def __init__(
        self,
        store: HealthStore,
        be: Backend,
        now: Callable[[], float],
        transition: Transition | None,
    ) -> None:
        # Written out, not super().__init__(): one is built per request.
        self.store: LocalHealth = store  # type: ignore[assignment]  # gate_type chose it
        self._now = now
        self.transition = transition
        self._first = True
        self._held = None

    @property
    def policy(self) -> HealthPolicy:
        return self.store.policy

    def admit_nowait(self, key: RouteKey, *, retry: bool, force: bool) -> Decision:
        decision = self.store.admit_nowait(
            key, new_request=self._first, retry=retry, force=force, now=self._now()
        )
        self._first = False
        if decision.admission == "allow":  # the common case, without a call
            return decision
        return self._admitted(key, decision)

    async def admit(self, key: RouteKey, *, retry: bool, force: bool) -> Decision:
        return self.admit_nowait(key, retry=retry, force=force)

    def record(self, key: RouteKey, outcome: Outcome, probe: bool, attempt: int) -> None:
        if probe and self._held and key in self._held:
            self._held.remove(key)
        view = self.store.record_nowait(key, outcome, probe=probe)
        if view is not None and self.transition is not None:
            self.transition(key, attempt, view)

    def release(self, key: RouteKey) -> None:
        if self._held and key in self._held:
            self._held.remove(key)
            self.store.release_nowait(key)

    async def aclose(self) -> None:
        while self._held:
            self.store.release_nowait(self._held.pop())


class _SharedGate(HealthGate):
    """The gate of a store that does I/O: outcomes wait here until the next admission."""

    immediate = False

    __slots__ = ("_be", "_pending", "store")

    def __init__(
        self,
        store: HealthStore,
        be: Backend,
        now: Callable[[], float],
        transition: Transition | None,
    ) -> None:
        self.store = store
        self._be = be
        self.transition = transition
        self._first = True
        self._held = None
        self._pending: list[tuple[RouteKey, Outcome, bool, int]] = []

    @property
    def policy(self) -> HealthPolicy:
        return self.store.policy

    @property
    def unsettled(self) -> bool:
        return bool(self._pending or self._held)

    async def admit(self, key: RouteKey, *, retry: bool, force: bool) -> Decision:
        await self._settle()
        decision = await self.store.admit(key, new_request=self._first, retry=retry, force=force)
        self._first = False
        return self._admitted(key, decision)

    def record(self, key: RouteKey, outcome: Outcome, probe: bool, attempt: int) -> None:
        if probe and self._held and key in self._held:
            self._held.remove(key)
        self._pending.append((key, outcome, probe, attempt))

    async def _settle(self) -> None:
        while self._pending:
            key, outcome, probe, attempt = self._pending.pop(0)
            view = await self.store.record(key, outcome, probe=probe)
            if view is not None and self.transition is not None:
                self.transition(key, attempt, view)

    async def aclose(self) -> None:
        # Shielded from cancellation, bounded to a second.
        be = self._be
        with be.CancelScope(shield=True, deadline=be.current_time() + _SETTLE_TIMEOUT):
            await self._settle()
            while self._held:
                await self.store.release(self._held.pop())


#: Builds one request's gate: ``(store, be, now, transition) -> HealthGate``.
GateFactory = Callable[[HealthStore, Backend, Callable[[], float], Transition | None], HealthGate]


def gate_type(store: HealthStore) -> GateFactory:
    """The gate for ``store``: chosen once, when the planner is built."""
    return _InProcessGate if isinstance(store, LocalHealth) else _SharedGate


def silent(err: Exception, started_at: float, now: float, policy: HealthPolicy) -> bool:
    """Whether a failure swallowed the caller's time (it then opens the breaker at once).

    A first-chunk or request timeout, or a transport failure (no status)
    after at least ``policy.silent_after`` seconds of waiting.
    """
    if isinstance(err, ProviderError):
        if err.kind == "timeout":
            return True
        if err.status_code is None and err.kind is None:
            return now - started_at >= policy.silent_after
    return False
