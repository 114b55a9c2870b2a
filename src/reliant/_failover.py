"""The failover planner: one state machine that every call kind drives.

The seed copied its retry loop five times (one per call kind) and the copies
drifted. Here the loop exists once, as the explicit state machine
:class:`FailoverRun`. A caller iterates it (``async for slot in run``), makes
one attempt with ``slot.provider``/``slot.model_id``/``slot.messages`` and
reports ``slot.succeeded()`` or ``slot.failed(err)``; the run decides what
comes next and sleeps any backoff before handing out the next slot. Two
drivers exist: :meth:`Planner.call` for every non-streaming call kind, and
the streaming bridge (``_bridge``), which keeps its per-attempt cancel scope
and the upstream context open across the committed stream and therefore
cannot be a callback inside someone else's loop.

Algorithm
---------
::

    for model in [requested] + model_fallbacks[requested]:        # model chain
        for name, provider in candidates:                          # provider chain
            backoff = base_backoff
            for attempt in 1 .. max_retries + 1:                   # retries
                try: value = attempt_fn(provider, alias(name, model), messages)
                success  -> record fallback info if anything differed from the
                            request (retry, other model, other provider,
                            truncated history); return value
                failure  -> classify(err):
                  context window:
                     no history (system-prompt calls) -> raise ContextWindowExceededError now
                     history not truncated yet -> drop the oldest half of the
                        non-system messages; if something was dropped, retry at
                        once (this counts as an attempt, no backoff), else raise
                        ContextWindowExceededError ("cannot be reduced further")
                     already truncated -> record, next candidate
                  empty stream   -> record, next candidate
                  non-retryable  -> record, next candidate (no retry budget spent)
                  retryable      -> record; if attempts remain, sleep
                                    next_backoff(backoff, err) (Retry-After wins,
                                    else equal jitter) and double backoff (<= 10 s)
    raise FailoverError(header + one line per recorded attempt)
          with __cause__ = ExceptionGroup(every attempt's error)

Provider health (``_health``), when on, wraps every step of that walk::

    before an attempt: admit(route) ->
        allow / probe  -> call it (a probe holds the route's one half-open slot)
        skip           -> trail "circuit_open", defer the candidate, next one now
                          (no call, no backoff sleep)
        no_budget      -> trail "retry_budget" (a retry the budget refused), next
    after an attempt:  record(route, outcome)
        a Retry-After or a silent route (timeout; transport error after a long
        wait) opens the breaker at once, so the loop moves on instead of
        retrying, unless it is the last candidate
    when the walk is over: the deferred candidates, soonest re-open first,
        with the breaker bypassed (never refuse outright; a one-provider
        set-up behaves as without health)

Routing (``_router``), when on, runs before the walk and only orders it: the
drivers ask :meth:`Planner.routed` for the pool (the chosen deployment first,
its tier's others in the balancer's order, then the next tiers; deployments
without rate-limit room left out, those with an open breaker last in their
tier) and hand it to the run as its candidates and its primary. After the
request, :meth:`Planner.settle` gives back the room the decision took when
no attempt used it. The walk itself is the same with or without routing.

Rooms. The run walks; each policy it consults sits in its own module behind
a narrow interface:

- provider health through one ``_admission.HealthGate`` per request
  (``admit`` / ``record`` / ``release`` / ``aclose``; the run never calls a
  store itself; only routing's ``Planner.routed`` asks which routes are
  down, without I/O): the gate holds probe slots
  and the outcomes a shared store has not heard yet, and calls the
  in-process store's ``*_nowait`` twins directly (health then costs about
  2 us per request, not a coroutine and a shielded scope per decision);
- hedging (``_hedge``), observation (``_observe``) and routing (``_router``)
  through the protocols of ``_records``, handed in by ``_reliable``; hedging
  drives the run through :meth:`FailoverRun.hedge`, ``note_failure`` and
  ``lost``, mid-stream recovery (``_recovery``, in the bridge) through
  :meth:`FailoverRun.recover`;
- what happened is written to a ``_trail.Trail`` (failures, skips, lost
  hedges, recoveries, the errors kept), which also builds the final error.

Two deliberate departures from the seed, both about not wasting calls: a
context-window failure on history that was already truncated moves on to the
next candidate (which may have a bigger window) instead of retrying the same
pair with the same too-long input; and when every recorded failure was a
context-window failure the error raised is ``ContextWindowExceededError``. A
``FailoverError`` from a nested ``ReliableProvider`` is final for that pair
too: it already walked its own whole chain, retrying it would repeat all of it.

Only ``Exception`` is caught. ``trio.Cancelled``, ``asyncio.CancelledError``
and every other ``BaseException`` leave the loop at once, unrecorded and
unretried; backoff sleeps are plain sleeps of the running loop (trio's, or
anyio's on asyncio: :mod:`reliant._backend`, bound once per run), so
cancellation interrupts them too and all timing follows that loop's clock.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any, TypeVar

from . import backoff as _backoff
from ._admission import HealthGate, gate_type, silent
from ._backend import current as current_backend
from ._exceptions import (
    Attempt,
    ContextWindowExceededError,
    FailoverError,
    FailureReason,
)
from ._fallback_info import (
    ProviderFallbackInfo,
    current_cell,
    record_provider_fallback,
)
from ._health import Decision, HealthStore, Outcome, RouteKey
from ._log import log
from ._provider import Provider
from ._records import (
    HedgeDriver,
    Lost,
    Observer,
    ObserverFactory,
    RouterDriver,
    StreamRecovery,
)
from ._trail import Trail, describe_failure
from ._types import ChatMessage
from .classify import Classification, classify

__all__ = [
    "EmptyStream",
    "FailoverRun",
    "OnlyEmptyStreams",
    "Planner",
    "Slot",
    "truncate_for_context",
]


T = TypeVar("T")

FAILOVER_HEADER = "All providers/models failed. Attempts:"
STREAM_FAILOVER_HEADER = "All streaming providers/models failed. Attempts:"
CONTEXT_WINDOW_HEADER = "Request exceeds model context window. Attempts:"
CANNOT_REDUCE_HEADER = (
    "Request exceeds model context window and cannot be reduced further. "
    "Try a model with a larger context window or send fewer messages or tools. Attempts:"
)


class EmptyStream(Exception):
    """Raised by a streaming attempt whose upstream ended without saying anything.

    Either it ended without any item, or its first item was a bare final
    (``final``: no text, reasoning, tool call, usage or finish reason, as a
    server that answers with its terminator alone sends). Either way no
    answer was given, so the run moves on to the next candidate.
    """

    def __init__(self, final: object = None) -> None:
        super().__init__()
        self.final = final

    def __str__(self) -> str:
        return "stream produced no events"


class OnlyEmptyStreams(Exception):
    """Every candidate produced an empty stream and none failed: a clean, empty answer.

    ``final`` is the last bare final item an empty attempt sent (None when
    none sent one), which the caller then gets as the whole answer.
    """

    def __init__(self, final: object = None) -> None:
        super().__init__()
        self.final = final


def truncate_for_context(messages: Sequence[ChatMessage]) -> tuple[list[ChatMessage], int]:
    """Drop the oldest half of the non-system messages.

    System messages and the most recent non-system message always survive,
    so the request still says who the model is and what was asked.

    Returns:
        The shortened list and how many messages were dropped (0 when there
        is at most one non-system message, i.e. nothing can be dropped).
    """
    non_system = [i for i, m in enumerate(messages) if m.role != "system"]
    if len(non_system) <= 1:
        return list(messages), 0
    drop = set(non_system[: len(non_system) // 2])
    return [m for i, m in enumerate(messages) if i not in drop], len(drop)


class Planner:
    """Model chain x provider chain x retries, shared by every call kind.

    Args:
        providers: ``(name, provider)`` pairs in priority order.
        max_retries: Retries per (provider, model) pair; attempts = retries + 1.
        base_backoff: First backoff in seconds, floored at 50 ms.
        model_fallbacks: model -> models to try after it.
        model_aliases: provider name -> {requested model: that provider's id}.
        rng: Source of jitter; injectable so tests can pin it.
        health: Where breakers and the retry budget live, or None for the
            seed's behaviour (every request pays every retry).
        fallback_on_content_filter: Treat a content-filter refusal like any
            non-retryable error (next candidate) instead of final.
        hedger: Hedged requests (``_hedge.Hedger``), or None.
        emit: The listeners of events (``_observe.Emitter``), or None when nobody listens.
        observer: Makes a request's observer (``_observe.RequestObserver``)
            when someone listens or a ``fallback_scope()`` is open; None
            never observes.
        router: Routing across deployments (``_router.Router``), or None
            for the plain chain: it orders each request's candidates before
            the walk, which goes on exactly as without it.

    The planner knows hedging, observation and routing only by the
    protocols of ``_records`` (``HedgeDriver``, ``Observer``,
    ``RouterDriver``): the assembler (``_reliable``) hands it the objects,
    so it imports none of them.
    """

    __slots__ = (
        "_aliases",
        "_fallbacks",
        "base_backoff",
        "emit",
        "fallback_on_content_filter",
        "gate",
        "health",
        "hedger",
        "max_retries",
        "observer",
        "primary",
        "providers",
        "rng",
        "router",
    )

    def __init__(
        self,
        providers: Sequence[tuple[str, Provider]],
        max_retries: int,
        base_backoff: float,
        model_fallbacks: Mapping[str, Sequence[str]],
        model_aliases: Mapping[str, Mapping[str, str]],
        rng: random.Random | None = None,
        health: HealthStore | None = None,
        fallback_on_content_filter: bool = False,
        hedger: HedgeDriver | None = None,
        emit: Callable[[Any], None] | None = None,
        observer: ObserverFactory | None = None,
        router: RouterDriver | None = None,
    ) -> None:
        self.emit = emit
        self.router = router
        self.observer = observer
        self.providers = tuple(providers)
        self.fallback_on_content_filter = fallback_on_content_filter
        self.hedger = hedger
        self.max_retries = max_retries
        self.base_backoff = max(base_backoff, _backoff.MIN_BASE_BACKOFF)
        self._fallbacks = {k: tuple(v) for k, v in model_fallbacks.items()}
        self._aliases = {k: dict(v) for k, v in model_aliases.items()}
        self.rng = rng
        self.health = health
        # Provider health's per-request gate (``_admission``), chosen for the store once.
        self.gate = None if health is None else gate_type(health)
        self.primary = self.providers[0][0] if self.providers else ""

    def model_chain(self, model: str) -> list[str]:
        """The requested model followed by its configured fallbacks."""
        return [model, *self._fallbacks.get(model, ())]

    def model_id(self, provider_name: str, model: str) -> str:
        """The model id ``provider_name`` expects for ``model``."""
        aliases = self._aliases.get(provider_name)
        return aliases.get(model, model) if aliases else model

    def attempts(
        self,
        *,
        model: str,
        messages: Sequence[ChatMessage] | None,
        candidates: Sequence[tuple[str, Provider]] | None = None,
        header: str = FAILOVER_HEADER,
        primary: str | None = None,
    ) -> FailoverRun:
        """Start one run of the state machine; iterate it with ``async for``.

        The driver must ``await run.aclose()`` when it is done with the run
        (in a ``finally``): that reports the last outcome to provider health
        and gives back a probe slot an abandoned attempt held.

        Args:
            model: The requested model.
            messages: The conversation, or None for calls without history
                (a context-window failure then cannot be recovered).
            candidates: Providers to try (default: all).
            header: First line of the ``FailoverError`` message.
            primary: The candidate the request is meant for, against which
                fallback information and events tell a fallback (default:
                the first configured provider; routing passes its choice).
        """
        pool = self.providers if candidates is None else tuple(candidates)
        return FailoverRun(self, model, messages, pool, header, primary or self.primary)

    def routed(
        self,
        pool: Sequence[tuple[str, Provider]],
        model: str,
        messages: Sequence[ChatMessage] | None,
        prompt: Sequence[str | None] = (),
    ) -> Awaitable[tuple[Sequence[tuple[str, Provider]], Any]]:
        """``pool`` in routing's order for this request, and its decision (await it).

        Call it only with routing on. Routing is told which deployments
        provider health knows to be down for ``model`` (it puts them last
        in their tier; the walk would only skip them). Not a coroutine of
        its own: the router's is awaited directly.
        """
        assert self.router is not None
        health, down = self.health, None
        if health is not None and health.any_open():
            now = current_backend().current_time()
            model_id = self.model_id

            def down(name: str) -> bool:
                return health.is_down((name, model_id(name, model)), now)

        return self.router.route(pool, messages, prompt, down)

    @property
    def unsettled(self) -> bool:
        """After a routed request: True when its decision took room no attempt used."""
        return self.router is not None and self.router.unsettled

    async def settle(self) -> None:
        """Give back the room a routed request's decision took and no attempt used.

        Shielded: a cancelled request must still give it back.
        """
        router = self.router
        if router is not None and router.unsettled:
            be = current_backend()
            with be.CancelScope(shield=True):
                await router.settle()

    async def call(
        self,
        fn: Callable[[Provider, str, Sequence[ChatMessage] | None], Awaitable[T]],
        *,
        model: str,
        messages: Sequence[ChatMessage] | None,
        prompt: Sequence[str | None] = (),
    ) -> T:
        """Run ``fn(provider, model_id, messages)`` under failover: the non-streaming driver.

        ``prompt`` is what routing reads of a call without history
        (``messages`` None): its system prompt and message.
        """
        pool: Sequence[tuple[str, Provider]] = self.providers
        decision: Any = None
        if self.router is not None:  # no coroutine per call without routing
            pool, decision = await self.routed(pool, model, messages, prompt)
        run = self.attempts(
            model=model,
            messages=messages,
            candidates=pool,
            primary=None if decision is None else decision.chosen,
        )
        obs = run.obs
        if obs is not None:
            obs.request_started(False, decision)
        hedger = self.hedger
        value: T | None = None
        error: BaseException | None = None
        try:
            async for slot in run:
                if hedger is not None:
                    won = await hedger.race(run, slot, _hedgeable(fn))
                    if won is not None:
                        value = won[1]
                        return value
                    continue
                try:
                    value = await fn(slot.provider, slot.model_id, slot.messages)
                except Exception as err:
                    slot.failed(err)
                else:
                    slot.succeeded()
                    return value
            raise run.failure()
        except BaseException as err:
            error = err
            raise
        finally:
            if run.unsettled:
                await run.aclose()
            if decision is not None and self.unsettled:  # mostly not: the first attempt used it
                await self.settle()
            if obs is not None:
                run.finish(error, value)


def _hedgeable(
    fn: Callable[[Provider, str, Sequence[ChatMessage] | None], Awaitable[T]],
) -> Callable[[Slot, Callable[[], bool]], Awaitable[T]]:
    # A non-streaming attempt commits when its whole response is there.
    async def attempt(slot: Slot, claim: Callable[[], bool]) -> T:
        value = await fn(slot.provider, slot.model_id, slot.messages)
        if not claim():
            raise Lost()
        return value

    return attempt


class Slot:
    """One attempt handed out by :class:`FailoverRun`; report its outcome exactly once.

    ``probe`` is True when this attempt holds a half-open breaker's one
    probe slot; ``started_at`` is the loop time it was handed out;
    ``chain_model`` the model of the chain it serves (before aliases);
    ``hedge`` True for a hedged attempt. A plain slotted class, not a frozen
    dataclass: one is built per attempt and a frozen ``__init__`` costs a
    microsecond more (treat it as read-only all the same).
    """

    __slots__ = (
        "attempt",
        "chain_model",
        "hedge",
        "messages",
        "model_id",
        "name",
        "probe",
        "provider",
        "run",
        "started_at",
    )

    def __init__(
        self,
        run: FailoverRun,
        name: str,
        provider: Provider,
        model_id: str,
        messages: Sequence[ChatMessage] | None,
        attempt: int,
        probe: bool = False,
        started_at: float = 0.0,
        chain_model: str = "",
        hedge: bool = False,
    ) -> None:
        self.run = run
        self.name = name
        self.provider = provider
        self.model_id = model_id
        self.messages = messages
        self.attempt = attempt
        self.probe = probe
        self.started_at = started_at
        self.chain_model = chain_model
        self.hedge = hedge

    def __repr__(self) -> str:
        return f"Slot({self.name!r}, {self.model_id!r}, attempt={self.attempt})"

    def failed(self, err: Exception) -> None:
        """Classify ``err`` and decide the next step (may raise ``ContextWindowExceededError``)."""
        self.run._failed(self, err)

    def succeeded(self) -> None:
        """Commit to this attempt: the run ends, fallback info is recorded if anything differed."""
        self.run._succeeded(self)


@dataclass(slots=True)
class _Deferred:
    """A candidate provider health skipped; tried as a last resort, soonest re-open first."""

    reopens_at: float
    mi: int
    pi: int
    n: int
    wait: float


class FailoverRun:
    """The state machine of one request (see the module comment for the algorithm).

    ``async for slot in run`` yields one :class:`Slot` per attempt, sleeping
    the backoff before a retry. The iteration stops after a success or when
    every candidate is used up; then :meth:`failure` gives the error to raise.
    """

    __slots__ = (
        "_all_context",
        "_be",
        "_began",
        "_deferred",
        "_empty_final",
        "_forcing",
        "_gate",
        "_header",
        "_max_attempts",
        "_mi",
        "_models",
        "_n",
        "_now",
        "_pi",
        "_planner",
        "_pool",
        "_primary",
        "_requested",
        "_saw_error",
        "_sleep",
        "_state",
        "_trail",
        "_truncated",
        "_wait",
        "_waiting",
        "messages",
        "obs",
        "skip_if",
    )

    def __init__(
        self,
        planner: Planner,
        model: str,
        messages: Sequence[ChatMessage] | None,
        pool: tuple[tuple[str, Provider], ...],
        header: str,
        primary: str,
    ) -> None:
        self._planner = planner
        self._primary = primary
        self._requested = model
        self._models = planner.model_chain(model)
        self._pool = pool
        self._header = header
        self._max_attempts = planner.max_retries + 1
        self.messages = messages
        self._mi = 0
        self._pi = 0
        self._n = 1
        self._wait = planner.base_backoff
        self._sleep = 0.0
        self._state = _READY if pool else _EXHAUSTED
        # The request's start: trail entries tell their times relative to it.
        self._be = be = current_backend()  # the running loop's primitives, bound once
        # The loop's clock as one callable: a read is one call, where
        # trio.current_time() is three.
        self._now = now = be.clock()
        self._began = now()
        # Made on the first entry: most requests never write one.
        self._trail = _UNWRITTEN
        self._truncated = False
        self._saw_error = False
        self._empty_final: object = None  # the last bare final an empty stream sent
        self._waiting = False  # the next retry waits out a Retry-After (see _waits_out)
        self._all_context = True
        # Provider health only: candidates skipped for an open breaker, and
        # whether the walk is now forcing them through as last resorts.
        self._deferred: list[_Deferred] = []
        self._forcing = False
        # Mid-stream recovery only: candidates the bridge wants passed over
        # (those that cannot continue a prefill).
        self.skip_if: Callable[[Provider], bool] | None = None
        # Events and the request record (``_events``): only when someone
        # listens or the caller is inside fallback_scope(). Every emission
        # below is guarded by this one attribute.
        emit, cell = planner.emit, current_cell()
        self.obs: Observer | None = None
        if (emit is not None or cell is not None) and planner.observer is not None:
            self.obs = planner.observer(
                emit,
                cell,
                primary,
                model,
                self._max_attempts,
                planner.model_id(primary, model),
            )
        # Provider health (``_admission``): asked before, told after each attempt.
        gate, health = planner.gate, planner.health
        self._gate: HealthGate | None = None
        if gate is not None:
            assert health is not None
            self._gate = gate(health, be, now, None if self.obs is None else self.obs.circuit)

    def __aiter__(self) -> FailoverRun:
        return self

    async def __anext__(self) -> Slot:
        if self._state is _PENDING:
            raise RuntimeError("report the previous attempt's outcome before asking for the next")
        if self._gate is not None:
            return await self._next_with_health(self._gate)
        if self.skip_if is not None:
            self._pass_over(self.skip_if)
        if self._state is not _READY:
            raise StopAsyncIteration
        if self._sleep:
            await self._sleep_backoff()
        return self._hand_out(False)

    async def _sleep_backoff(self) -> None:
        # The backoff decided by the last failure, slept before the retry is handed out.
        delay, self._sleep = self._sleep, 0.0
        await self._be.sleep(delay)

    def _hand_out(self, probe: bool, hedge: bool = False) -> Slot:
        # The current candidate becomes the attempt in flight.
        name, provider = self._pool[self._pi]
        chain_model = self._models[self._mi]
        self._state = _PENDING
        slot = Slot(
            self,
            name,
            provider,
            self._planner.model_id(name, chain_model),
            self.messages,
            self._n,
            probe,
            self._now(),
            chain_model,
            hedge,
        )
        if self.obs is not None:
            if hedge:
                self.obs.hedge_started(slot)
            else:
                self.obs.attempt_started(slot)
        return slot

    def _defer(self, decision: Decision, key: RouteKey) -> None:
        # An open breaker skipped the candidate (trail "circuit_open"): it is
        # tried as a last resort once nothing else is left.
        wait = decision.reopens_at - self._now()
        self._skip(key[0], key[1], "circuit_open", _open_detail(wait))
        deferred = _Deferred(decision.reopens_at, self._mi, self._pi, self._n, self._wait)
        self._deferred.append(deferred)

    def _route(self) -> RouteKey:
        name = self._pool[self._pi][0]
        return (name, self._planner.model_id(name, self._models[self._mi]))

    async def _next_with_health(self, gate: HealthGate) -> Slot:
        # The same walk, with every candidate first asked of provider health:
        # an open breaker defers the candidate (no call, no sleep), a retry
        # the budget refuses moves on, and deferred candidates come back,
        # soonest re-open first, once nothing else is left.
        if self.skip_if is not None:
            self._pass_over(self.skip_if)
        while self._state is _READY:
            # A retry that waits out its route's own Retry-After is let
            # through the breaker that Retry-After opened (force): the
            # server asked this request to come back then.
            retry, force = self._n > 1, self._forcing or self._waiting or self._last_candidate()
            self._waiting = False
            key = self._route()
            if gate.immediate:
                decision = gate.admit_nowait(key, retry=retry, force=force)
            else:
                decision = await gate.admit(key, retry=retry, force=force)
            if decision.admission == "skip":
                self._defer(decision, key)
            elif decision.admission == "no_budget":
                self._skip(key[0], key[1], "retry_budget", _BUDGET_DETAIL)
            if decision.admission in ("skip", "no_budget"):
                self._sleep = 0.0
                self._next_candidate()
                continue
            if self._sleep:
                await self._sleep_backoff()
            return self._hand_out(decision.admission == "probe")
        raise StopAsyncIteration

    # -- hedging (see _hedge) -------------------------------------------------

    async def hedge(self) -> Slot | None:
        """The next candidate, handed out while the current attempt is still running.

        Only a candidate provider health admits right now (never a forced
        last resort, and the hedge counts against the retry budget); others
        are deferred as usual. Returns None, leaving the run as it was, when
        no candidate can be hedged to.
        """
        if self._state is not _PENDING:
            raise RuntimeError("hedge() needs an attempt in flight")
        saved = (self._mi, self._pi, self._n, self._wait, self._forcing, list(self._deferred))
        trail_len = len(self._trail.attempts)
        self._next_candidate()
        while self._state is _READY and not self._forcing:
            if self.skip_if is not None and self.skip_if(self._pool[self._pi][1]):
                self._next_candidate()
                continue
            probe = False
            if self._gate is not None:
                key = self._route()
                decision = await self._gate.admit(key, retry=True, force=False)
                if decision.admission == "skip":
                    self._defer(decision, key)
                    self._next_candidate()
                    continue
                if decision.admission == "no_budget":
                    break
                probe = decision.admission == "probe"
            slot = self._hand_out(probe, hedge=True)
            log(
                INFO,
                "hedging: started the next candidate too",
                extra={"provider": slot.name, "model": slot.model_id, "attempt": slot.attempt},
            )
            return slot
        # Nothing to hedge to: put the walk back where it was.
        self._mi, self._pi, self._n, self._wait, self._forcing, self._deferred = saved
        del self._trail.attempts[trail_len:]
        self._state = _PENDING
        return None

    def note_failure(self, slot: Slot, err: Exception) -> None:
        """A racer failed while the race went on: trail and provider health only.

        The planner's next step is decided by the newest racer's outcome
        (``slot.failed``), reported last. A content-filter refusal is final
        all the same.
        """
        verdict = _verdict(err)
        self._saw_error = True
        self._final_if_filtered(slot, err, verdict)
        if verdict.context_window:
            self._record(slot, "non_retryable", err)
            self._report(slot, _NEUTRAL)
            return
        self._all_context = False
        self._judge(slot, err, verdict)

    def lost(self, slot: Slot, started: float, ended: float, winner: Slot | None) -> None:
        """A racer was cancelled because another answered first: ``hedge_lost`` in the trail."""
        who = f"{winner.name} (model {winner.model_id})" if winner is not None else "another"
        detail = f"cancelled after {ended - started:.3f} s: {who} answered first"
        self._write().note(
            slot.name, slot.model_id, slot.attempt, "hedge_lost", detail, started, ended
        )
        if self.obs is not None:
            self.obs.hedge_lost(slot, started, ended, winner)
        self.abandon(slot)

    def abandon(self, slot: Slot) -> None:
        """Forget a racer without an outcome: its probe slot, if any, is given back."""
        if slot.probe and self._gate is not None:
            self._gate.release((slot.name, slot.model_id))

    def note_hedge_refused(self, slot: Slot, detail: str) -> None:
        """The hedge budget refused a hedge: the trail says so, and the race goes on alone."""
        now, trail = self._now(), self._write()
        trail.note(slot.name, slot.model_id, slot.attempt, "hedge_budget", detail, None, now)
        if self.obs is not None:
            self.obs.skipped(slot.name, slot.model_id, slot.attempt, "hedge_budget", detail)
        log(
            INFO,
            "hedge refused",
            extra={"provider": slot.name, "model": slot.model_id, "reason": "hedge_budget"},
        )

    def _pass_over(self, skip: Callable[[Provider], bool]) -> None:
        while self._state is _READY and skip(self._pool[self._pi][1]):
            self._next_candidate()

    def remaining(self) -> list[Provider]:
        """The providers the run may still try, the current candidate first."""
        if self._state is not _READY and self._state is not _DONE:
            return []
        rest: list[Provider] = []
        mi, pi = self._mi, self._pi
        while mi < len(self._models):
            rest.append(self._pool[pi][1])
            pi += 1
            if pi == len(self._pool):
                pi, mi = 0, mi + 1
        rest.extend(self._pool[d.pi][1] for d in self._deferred)
        return rest

    def broke(self, slot: Slot, err: Exception) -> str:
        """A committed attempt's stream broke: a failure for provider health.

        Returns the sanitized detail. Nothing is retried here: the caller
        already saw text. See :meth:`recover` for ``mid_stream`` recovery.
        """
        detail = describe_failure(err)
        if self.obs is not None:
            self.obs.attempt_failed(slot, "stream_broken", detail, err)
        # Not as a probe: its slot was given back when the stream committed.
        self._report(slot, Outcome(False, True, None, False, detail), probe=False)
        return detail

    def recover(self, slot: Slot, err: Exception, *, after_chars: int, mode: str) -> None:
        """Resume the run after ``slot``'s committed stream broke (``mid_stream`` recovery).

        The break goes into the trail as ``stream_broken``; the run moves to
        the next candidate, or retries the same route when no other remains
        (without a backoff sleep: the caller is waiting mid-answer).
        """
        if self._state is not _DONE:
            raise RuntimeError("only a committed attempt can be recovered")
        detail = self.broke(slot, err)
        recovery = StreamRecovery(slot.name, slot.model_id, after_chars, detail, mode)
        now, trail = self._now(), self._write()
        trail.recovered(recovery, err, slot.attempt, slot.started_at, now)
        if self.obs is not None:
            self.obs.recovering()
        log(
            WARNING,
            "stream broke mid-answer, recovering",
            extra={
                "provider": slot.name,
                "model": slot.model_id,
                "attempt": slot.attempt,
                "error": detail,
                "after_chars": after_chars,
            },
        )
        self._state = _PENDING
        if self._last_candidate():
            self._n, self._sleep, self._state = self._n + 1, 0.0, _READY
        else:
            self._next_candidate()

    def recovery_mode(self, mode: str) -> None:
        """Correct how the last recovery proceeds (a continuation that became a restart)."""
        self._write().recovery_mode(mode)

    def _last_candidate(self) -> bool:
        # True when nothing else could serve after this candidate: a breaker
        # must then not skip it (never refuse outright).
        if self._deferred:
            return False
        return self._mi == len(self._models) - 1 and self._pi == len(self._pool) - 1

    def _write(self) -> Trail:
        # The trail, made now if this is its first entry.
        trail = self._trail
        if trail is _UNWRITTEN:
            trail = self._trail = Trail(self._max_attempts, self._began)
        return trail

    def _skip(self, name: str, model_id: str, reason: FailureReason, detail: str) -> None:
        self._write().note(name, model_id, self._n, reason, detail)
        if self.obs is not None:
            self.obs.skipped(name, model_id, self._n, reason, detail)
        log(
            INFO,
            "provider health skipped an attempt",
            extra={"provider": name, "model": model_id, "attempt": self._n, "reason": reason},
        )

    @property
    def immediate(self) -> bool:
        """True when the next ``__anext__`` will not await anything.

        That is, no backoff to sleep and no shared health store to ask; the
        streaming bridge then needs no cancel scope around it.
        """
        return not self._sleep and (self._gate is None or self._gate.immediate)

    @property
    def unsettled(self) -> bool:
        """True while :meth:`aclose` has something to report to provider health."""
        return self._gate is not None and self._gate.unsettled

    async def aclose(self) -> None:
        """Report the last outcome to provider health and give back an unused probe slot.

        Shielded and bounded (see ``_admission``): a cancelled request must
        still give back the probe slot it held.
        """
        if self._gate is not None and self._gate.unsettled:
            await self._gate.aclose()

    def finish(self, error: BaseException | None, value: object = None) -> None:
        """The driver is done with the request (call only when ``obs`` is set).

        Sends ``RequestFinished`` and writes the request record; ``error``
        is what the caller gets (None on success), ``value`` the answer of
        a non-streaming call (for its usage).
        """
        if self.obs is not None:
            self.obs.request_finished(self._trail.attempts, self._trail.recoveries, error, value)

    @property
    def trail(self) -> list[Attempt]:
        """The failed attempts so far."""
        return list(self._trail.attempts)

    def failure(self) -> Exception:
        """The error that ends an exhausted run."""
        if not self._saw_error and self._trail.attempts:
            # Skips never end a run on their own (skipped candidates are
            # tried last), so without any error every candidate was empty.
            return OnlyEmptyStreams(self._empty_final)
        if self._saw_error and self._all_context:
            header = CONTEXT_WINDOW_HEADER if self.messages is None else CANNOT_REDUCE_HEADER
            return self._trail.error(ContextWindowExceededError, header)
        return self._trail.error(FailoverError, self._header)

    # -- transitions -------------------------------------------------------

    def _record(self, slot: Slot, reason: FailureReason, err: Exception) -> str:
        detail = self._write().failed(
            slot.name,
            slot.model_id,
            slot.attempt,
            reason,
            err,
            slot.started_at,
            self._now(),
            keep=not isinstance(err, EmptyStream),
        )
        if self.obs is not None:
            self.obs.attempt_failed(slot, reason, detail, err)
        return detail

    def _report(self, slot: Slot, outcome: Outcome, *, probe: bool | None = None) -> None:
        # Provider health hears about the attempt at once from the in-process
        # store, else at the next __anext__ or at aclose(), both async: a
        # shared store may need I/O, this method may not.
        if self._gate is not None:
            probe = slot.probe if probe is None else probe
            self._gate.record((slot.name, slot.model_id), outcome, probe, slot.attempt)

    def _next_candidate(self) -> None:
        self._n = 1
        self._wait = self._planner.base_backoff
        if self._forcing or self._mi >= len(self._models):
            self._resume_deferred()
            return
        self._pi += 1
        if self._pi == len(self._pool):
            self._pi = 0
            self._mi += 1
        if self._mi < len(self._models):
            self._state = _READY
        else:
            self._resume_deferred()

    def _resume_deferred(self) -> None:
        if not self._deferred:
            self._state = _EXHAUSTED
            return
        if not self._forcing:
            self._forcing = True
            self._deferred.sort(key=lambda d: d.reopens_at)  # stable: plan order breaks ties
        d = self._deferred.pop(0)
        self._mi, self._pi, self._n, self._wait = d.mi, d.pi, d.n, d.wait
        self._state = _READY

    def _retry(self, delay: float) -> None:
        if self._n >= self._max_attempts:
            self._next_candidate()
            return
        self._n += 1
        self._sleep = delay
        self._state = _READY

    def _failed(self, slot: Slot, err: Exception) -> None:
        if self._state is not _PENDING:
            raise RuntimeError("an attempt's outcome was reported twice")
        log_extra = {"provider": slot.name, "model": slot.model_id, "attempt": slot.attempt}
        if isinstance(err, EmptyStream):
            if err.final is not None:
                self._empty_final = err.final
            self._record(slot, "non_retryable", err)
            self._all_context = False
            self._report(slot, _NEUTRAL)
            log(WARNING, "stream produced no events, moving on", extra=log_extra)
            self._next_candidate()
            return
        self._saw_error = True
        verdict = _verdict(err)
        self._final_if_filtered(slot, err, verdict)
        if verdict.context_window:
            self._report(slot, _NEUTRAL)
            shorter, dropped = (
                truncate_for_context(self.messages)
                if self.messages is not None and not self._truncated
                else ((), 0)
            )
            if dropped:
                assert self.messages is not None
                self._truncated, self.messages = True, list(shorter)
                if self.obs is not None:
                    self.obs.truncated(slot, len(self._trail.attempts), err)
                log(
                    WARNING,
                    "context window exceeded; truncated history and retrying",
                    extra={**log_extra, "dropped": dropped, "remaining": len(shorter)},
                )
                self._retry(0.0)
                return
            # Nothing left to drop (no history, one huge message, or already
            # truncated): never the same input to the same route again, but
            # the next candidate may have a larger window.
            self._record(slot, "non_retryable", err)
            self._next_candidate()
            return
        self._all_context = False
        detail, cooldown = self._judge(slot, err, verdict)
        if not verdict.retryable:
            log(WARNING, "non-retryable error, moving on", extra={**log_extra, "error": detail})
            self._next_candidate()
            return
        if self._n >= self._max_attempts:
            log(WARNING, "retries exhausted, moving on", extra={**log_extra, "error": detail})
            self._next_candidate()
            return
        delay = _backoff.next_backoff(self._wait, err, rng=self._planner.rng)
        if cooldown and not self._last_candidate() and not self._waits_out(slot, verdict, delay):
            # This failure opens the route's breaker at once (a Retry-After,
            # or a silent route that made the caller wait out a timeout), so
            # while another candidate remains it is not asked again: the
            # next one now, without a sleep.
            log(WARNING, "route cooling down, moving on", extra={**log_extra, "error": detail})
            self._next_candidate()
            return
        self._wait = _backoff.double_backoff(self._wait)
        if self.obs is not None:
            self.obs.retry(slot, delay, verdict.reason)
        log(
            WARNING,
            "provider call failed, retrying",
            extra={**log_extra, "backoff": delay, "reason": verdict.reason, "error": detail},
        )
        self._retry(delay)

    def _waits_out(self, slot: Slot, verdict: Classification, delay: float) -> bool:
        # A short Retry-After on a route that was fine until now: the caller
        # put this model first, and it answers again in a moment, so wait
        # for it rather than move on. Not when the route was already known
        # to be down (this attempt was its probe, or a last resort past an
        # open breaker), nor when the caller's own deadline would pass first.
        # The breaker still opens for the Retry-After (the fleet cools the
        # route down); the waiting request alone comes back through it.
        assert self._gate is not None  # a cooldown is health's verdict
        ra = verdict.retry_after
        self._waiting = (
            verdict.rate_limited
            and ra is not None
            and ra <= self._gate.policy.max_retry_after_wait
            and not slot.probe
            and not self._forcing
            and self._now() + delay < self._be.current_effective_deadline()
        )
        return self._waiting

    def _final_if_filtered(self, slot: Slot, err: Exception, verdict: Classification) -> None:
        # A safety decision is final: not retried, not routed around (unless
        # the caller opted into fallback).
        if verdict.final or (
            verdict.content_filter and not self._planner.fallback_on_content_filter
        ):
            self._record(slot, verdict.reason, err)
            self._report(slot, _NEUTRAL)
            self._state = _DONE
            raise err

    def _judge(self, slot: Slot, err: Exception, verdict: Classification) -> tuple[str, bool]:
        # Trail and provider health for an ordinary failure. Returns the
        # sanitized detail and whether the failure opened the route's breaker
        # at once (a Retry-After, or a silent route).
        detail = self._record(slot, verdict.reason, err)
        gate = self._gate
        if gate is None:
            return detail, False
        quiet = silent(err, slot.started_at, self._now(), gate.policy)
        open_for = verdict.retry_after if verdict.rate_limited else None
        self._report(slot, Outcome(False, verdict.retryable, open_for, quiet, detail))
        return detail, quiet or open_for is not None

    def _succeeded(self, slot: Slot) -> None:
        if self._state is not _PENDING:
            raise RuntimeError("an attempt's outcome was reported twice")
        self._state = _DONE
        if self.obs is not None:
            self.obs.succeeded(slot, self._trail.open_recovery())
        self._report(slot, _SUCCESS)
        chain_model = slot.chain_model or self._models[self._mi]
        if (
            slot.attempt > 1
            or self._trail.recoveries
            or self._trail.attempts
            or self._truncated
            or chain_model != self._requested
            or slot.name != self._primary
        ):
            log(
                INFO,
                "provider recovered (failover/retry)",
                extra={
                    "provider": slot.name,
                    "model": slot.model_id,
                    "attempt": slot.attempt,
                    "original_model": self._requested,
                    "context_truncated": self._truncated,
                },
            )
            recoveries = self._trail.taken_over(slot.name, slot.model_id)
            if current_cell() is not None:  # built only when someone will read it
                record_provider_fallback(
                    ProviderFallbackInfo(
                        self._primary,
                        self._requested,
                        slot.name,
                        slot.model_id,
                        recoveries,
                        tuple(self._trail.attempts),
                    )
                )


_UNWRITTEN = Trail(0, 0.0)  # read-only: the trail of a run that wrote nothing yet
_SUCCESS = Outcome(ok=True)
_NEUTRAL = Outcome(ok=False)  # an error that says nothing about the route's health
_BUDGET_DETAIL = "retry budget exhausted; retry not sent"


def _open_detail(wait: float) -> str:
    return f"circuit open; skipped without a call (probe allowed in {max(wait, 0.0):.3g} s)"


_READY = "ready"
_PENDING = "pending"
_DONE = "done"
_EXHAUSTED = "exhausted"


# A nested ReliableProvider that raised FailoverError already walked its whole
# chain: retrying it would repeat every one of its attempts, so it is final
# for this pair (and a context-window failure stays one).
_NESTED_FINAL = Classification("non_retryable", False, False, False, None)
_NESTED_CONTEXT = Classification("non_retryable", False, False, True, None)


def _verdict(err: Exception) -> Classification:
    if isinstance(err, ContextWindowExceededError):
        return _NESTED_CONTEXT
    if isinstance(err, FailoverError):
        return _NESTED_FINAL
    return classify(err)
