"""The emitter and the per-request observer behind typed events (see ``_events``).

Kept apart from the event classes so that ``import reliant`` never builds
them: ``_events`` is imported when the first listener is added, or when a
request record is taken.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
from typing import TYPE_CHECKING, Any

from ._backend import current as current_backend
from ._exceptions import Attempt, ProviderError
from ._fallback_info import _Cell
from ._log import logger
from ._records import SlotView as Slot
from ._records import StreamRecovery
from ._sanitize import collapse_whitespace, sanitize_api_error
from ._types import TokenUsage

if TYPE_CHECKING:
    from ._events import (
        AttemptFailed,
        AttemptSkipped,
        AttemptStarted,
        AttemptSucceeded,
        CircuitClosed,
        CircuitOpened,
        EventHook,
        FallbackTaken,
        HedgeLost,
        HedgeStarted,
        ReliantEvent,
        RequestFinished,
        RequestOutcome,
        RequestRecord,
        RequestStarted,
        RetryScheduled,
        RouteChosen,
        StreamFinished,
        StreamRecovered,
        StreamStarted,
    )
    from ._health import RouteHealth
    from ._routing import RouteDecision

__all__ = ["Emitter", "RequestObserver", "Tally", "check_hook", "error_type"]


def load_events() -> None:
    """Import ``_events`` and bind its classes here (they are only used after this ran).

    Called when a listener is added and before a record is built, so no
    event class exists until someone can receive one, and an emission costs
    no import statement.
    """
    if "RequestFinished" in globals():
        return
    from . import _events

    globals().update({name: getattr(_events, name) for name in _events.__all__})


def check_hook(hook: object, what: str = "on_event") -> EventHook:
    """Reject what cannot be a listener: not callable, or async (its coroutine would never run).

    Raises:
        TypeError: Naming ``what``.
    """
    if not callable(hook):
        raise TypeError(f"{what} must be a callable taking one event, got {type(hook).__name__}")
    call = getattr(hook, "__call__", None)  # noqa: B004 - an object with an async __call__
    if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(call):
        raise TypeError(
            f"{what} must be a synchronous callable: it is called inline, from the request's "
            "own task, and an async function's coroutine would never run; hand the event to "
            "a memory channel (send_nowait) from a sync function instead"
        )
    return hook


class Emitter:
    """The listeners of one ``ReliableProvider``; calling it hands an event to each.

    Immutable: adding a listener makes a new emitter (requests already
    running keep theirs), sharing the flag that a listener's error was
    logged, so that happens once per ``ReliableProvider``.
    """

    __slots__ = ("_logged", "listeners")

    def __init__(self, listeners: tuple[EventHook, ...], logged: list[bool] | None = None) -> None:
        self.listeners = listeners
        self._logged = [False] if logged is None else logged
        if listeners:
            load_events()

    def with_listeners(self, listeners: tuple[EventHook, ...]) -> Emitter:
        """An emitter for ``listeners`` that shares this one's logged-once flag."""
        return Emitter(listeners, self._logged)

    def __call__(self, event: ReliantEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception as err:
                self._failed(listener, err)

    def _failed(self, listener: EventHook, err: Exception) -> None:
        if self._logged[0]:
            return
        self._logged[0] = True
        text = collapse_whitespace(sanitize_api_error(f"{type(err).__name__}: {err}"))
        name = getattr(listener, "__qualname__", type(listener).__name__)
        logger.warning(
            "an event listener raised; the request goes on (further errors of this "
            "provider's listeners are not logged)",
            extra={"listener": name, "error": text},
        )


def error_type(err: BaseException) -> str:
    """A low-cardinality name for ``err`` (OpenTelemetry's ``error.type``)."""
    if isinstance(err, ProviderError):
        if err.kind is not None:
            return err.kind
        if err.status_code is not None:
            return str(err.status_code)
    return type(err).__name__


class Tally:
    """What a committed stream delivered: items, and the usage/finish/model its items carried."""

    __slots__ = ("chunks", "finish_reason", "model", "usage")

    def __init__(self) -> None:
        self.chunks = 0
        self.usage: TokenUsage | None = None
        self.finish_reason: str | None = None
        self.model: str | None = None

    def note(self, item: object) -> None:
        """Count one delivered item."""
        self.chunks += 1
        usage = getattr(item, "usage", None)
        if usage is not None:
            self.usage = usage
        reason = getattr(item, "finish_reason", None)
        if reason is not None:
            self.finish_reason = reason
            model = getattr(item, "model", None)
            if model is not None:
                self.model = model


_IDS = itertools.count(1)

# The committed attempt: slot, ended_at (None while it streams), reason, detail.
_Served = tuple["Slot", float | None, str, str]


class RequestObserver:
    """The events and the record of one request (built only when someone listens).

    The planner and the bridge call one method per thing that happens; this
    class builds the events (when there are listeners) and the
    :class:`~reliant.RequestRecord` (inside ``fallback_scope()``).
    """

    __slots__ = (
        "_calls",
        "_cell",
        "_extra",
        "_finished",
        "_last",
        "_live",
        "_max_attempts",
        "_now",
        "_prev",
        "_result",
        "_served",
        "_stream",
        "_t0",
        "_ttfc",
        "emit",
        "primary",
        "primary_model",
        "request_id",
        "requested_model",
        "tally",
    )

    def __init__(
        self,
        emit: Emitter | None,
        cell: _Cell | None,
        primary: str,
        requested_model: str,
        max_attempts: int,
        primary_model: str | None = None,
    ) -> None:
        self.emit = emit
        self._cell = cell
        self.request_id = next(_IDS)
        self.primary = primary
        self.requested_model = requested_model
        # The id the primary is sent: what `model` means in every event.
        self.primary_model = requested_model if primary_model is None else primary_model
        self._max_attempts = max_attempts
        # The clock's own method (a third of trio.current_time()'s cost on trio).
        self._now = current_backend().clock()
        self._t0 = self._now()
        self._stream = False
        self._calls = 0
        # The route the request was last on (failed or skipped) and why: a
        # FallbackTaken is sent when the next attempt is on another route.
        self._prev: tuple[str, str, str] | None = None
        self._last: tuple[str, str, int] | None = None  # the last route tried
        self._live: list[Slot] = []  # attempts handed out without an outcome yet
        self._served: _Served | None = None  # the committed attempt and how it ended
        self._extra: list[tuple[int, Attempt]] = []  # record-only attempts, at trail index
        self._ttfc: float | None = None
        self._finished = False
        self._result: tuple[Any, ...] = ()
        self.tally = Tally()

    # -- the request ------------------------------------------------------------

    def request_started(self, stream: bool, route: RouteDecision | None = None) -> None:
        """The driver began the request (``route``: what routing decided for it, if on)."""
        self._stream = stream
        if self.emit is not None:
            self.emit(
                RequestStarted(
                    self.request_id,
                    self.primary,
                    self.primary_model,
                    0,
                    self._t0,
                    stream,
                    self.requested_model,
                )
            )
            if route is not None:
                self.emit(
                    RouteChosen(
                        self.request_id,
                        route.chosen,
                        self.requested_model,
                        0,
                        self._t0,
                        route.strategy,
                        route.order,
                        route.reason,
                        route.left_out,
                        route.waited,
                    )
                )

    def request_finished(
        self,
        trail: list[Attempt],
        recoveries: list[StreamRecovery],
        error: BaseException | None,
        value: object = None,
    ) -> None:
        """The driver is done: RequestFinished, and the request record (inside a scope)."""
        if self._finished:
            return
        self._finished = True
        now = self._now()
        if error is None:
            outcome: RequestOutcome = "success"
            etype = text = None
        elif isinstance(error, Exception):
            outcome, etype = "failure", type(error).__name__
            text = collapse_whitespace(sanitize_api_error(str(error) or etype))
        else:
            outcome, etype, text = "cancelled", "cancelled", None
        tally = self.tally
        usage = tally.usage
        finish = tally.finish_reason
        response_model = tally.model
        if value is not None:
            usage = getattr(value, "usage", None)
            finish = getattr(value, "finish_reason", None)
            response_model = getattr(value, "model", None)
        served = self._served
        if served is not None:
            provider, model, attempt = served[0].name, served[0].model_id, served[0].attempt
        elif self._last is not None:
            provider, model, attempt = self._last
        else:
            provider, model, attempt = self.primary, self.primary_model, 0
        if self.emit is not None:
            self.emit(
                RequestFinished(
                    self.request_id,
                    provider,
                    model,
                    attempt,
                    now,
                    outcome,
                    now - self._t0,
                    self._calls,
                    usage,
                    self.requested_model,
                    self._stream,
                    served is not None,
                    etype,
                    text,
                    self._ttfc,
                    finish,
                    response_model,
                )
            )
        cell = self._cell
        if cell is not None:
            # Built when someone takes it: most scopes only want fallback info.
            self._result = (tuple(trail), tuple(recoveries), now, outcome, usage, etype, text)
            cell.record = self.record

    def record(self) -> RequestRecord:
        """The request record (after :meth:`request_finished`)."""
        load_events()
        trail, recoveries, now, outcome, usage, etype, text = self._result
        served = self._served
        return RequestRecord(
            request_id=self.request_id,
            requested_provider=self.primary,
            requested_model=self.requested_model,
            actual_provider=None if served is None else served[0].name,
            actual_model=None if served is None else served[0].model_id,
            outcome=outcome,
            attempts=self._attempts(trail, now, outcome),
            recoveries=recoveries,
            started_at=self._t0,
            ended_at=now,
            stream=self._stream,
            time_to_first_chunk=self._ttfc,
            usage=usage,
            error_type=etype,
            error=text,
        )

    def _attempts(
        self, trail: tuple[Attempt, ...], now: float, outcome: RequestOutcome
    ) -> tuple[Attempt, ...]:
        merged: list[Attempt] = []
        extra = iter(self._extra)
        pending = next(extra, None)
        for i, attempt in enumerate([*trail, None]):
            while pending is not None and pending[0] <= i:
                merged.append(pending[1])
                pending = next(extra, None)
            if attempt is not None:
                merged.append(attempt)
        served = self._served
        if served is not None:
            slot, ended, reason, detail = served
            if ended is None:  # a stream the request's end interrupted
                ended, reason = now, "stream_broken" if outcome == "failure" else outcome
            merged.append(self._attempt(slot, reason, detail, ended))
        for slot in self._live:
            merged.append(self._attempt(slot, "cancelled", "the request ended first", now))
        return tuple(merged)

    def _attempt(self, slot: Slot, reason: object, detail: str, ended: float) -> Attempt:
        return Attempt(
            slot.name,
            slot.model_id,
            slot.attempt,
            self._max_attempts,
            reason,  # type: ignore[arg-type]
            detail,
            slot.started_at,
            ended,
            self._t0,
        )

    # -- attempts -----------------------------------------------------------------

    def attempt_started(self, slot: Slot) -> None:
        """A slot was handed out (after any backoff sleep)."""
        self._calls += 1
        self._live.append(slot)
        self._last = (slot.name, slot.model_id, slot.attempt)
        prev, self._prev = self._prev, None
        emit = self.emit
        if emit is None:
            return
        if prev is not None and not slot.hedge and (prev[0], prev[1]) != (slot.name, slot.model_id):
            emit(
                FallbackTaken(
                    self.request_id,
                    slot.name,
                    slot.model_id,
                    slot.attempt,
                    slot.started_at,
                    prev[0],
                    prev[1],
                    slot.name,
                    slot.model_id,
                    prev[2],
                )
            )
        emit(
            AttemptStarted(
                self.request_id,
                slot.name,
                slot.model_id,
                slot.attempt,
                slot.started_at,
                slot.hedge,
                slot.probe,
            )
        )

    def _done(self, slot: Slot) -> None:
        with contextlib.suppress(ValueError):
            self._live.remove(slot)

    def attempt_failed(self, slot: Slot, reason: str, detail: str, err: Exception) -> None:
        """An attempt failed (before its commit, or a committed stream broke)."""
        self._done(slot)
        self._prev = (slot.name, slot.model_id, reason)
        if reason == "stream_broken":
            self._served = (slot, self._now(), reason, detail)
        if self.emit is not None:
            self.emit(
                AttemptFailed(
                    self.request_id,
                    slot.name,
                    slot.model_id,
                    slot.attempt,
                    self._now(),
                    slot.started_at,
                    reason,
                    detail,
                    error_type(err),
                    err.status_code if isinstance(err, ProviderError) else None,
                    err.retry_after if isinstance(err, ProviderError) else None,
                )
            )

    def truncated(self, slot: Slot, trail_len: int, err: Exception) -> None:
        """A context-window failure: the history was halved, the route is asked again at once."""
        detail = collapse_whitespace(sanitize_api_error(str(err) or type(err).__name__))
        if self._cell is not None:
            now = self._now()
            record = self._attempt(slot, "context_truncated", detail, now)
            self._extra.append((trail_len, record))
        self.attempt_failed(slot, "context_truncated", detail, err)
        self._prev = None
        self.retry(slot, 0.0, "context_truncated")

    def retry(self, slot: Slot, delay: float, reason: str) -> None:
        """The failed route is asked again after ``delay``."""
        if self.emit is not None:
            self.emit(
                RetryScheduled(
                    self.request_id,
                    slot.name,
                    slot.model_id,
                    slot.attempt,
                    self._now(),
                    delay,
                    reason,
                )
            )

    def skipped(self, name: str, model_id: str, attempt: int, reason: str, detail: str) -> None:
        """Provider health refused an attempt (no call)."""
        if self._prev is None:
            self._prev = (name, model_id, reason)
        if self.emit is not None:
            self.emit(
                AttemptSkipped(
                    self.request_id, name, model_id, attempt, self._now(), reason, detail
                )
            )

    def succeeded(self, slot: Slot, recovered: StreamRecovery | None) -> None:
        """The attempt answered, or (a stream) committed at its first chunk."""
        self._done(slot)
        now = self._now()
        first = self._stream and self._ttfc is None
        if first:
            self._ttfc = now - self._t0
        # A non-streaming answer is complete now; a stream ends later.
        self._served = (slot, None if self._stream else now, "success", "")
        emit = self.emit
        if emit is None:
            return
        rid = self.request_id
        emit(AttemptSucceeded(rid, slot.name, slot.model_id, slot.attempt, now, slot.started_at))
        if recovered is not None:
            emit(
                StreamRecovered(
                    rid,
                    slot.name,
                    slot.model_id,
                    slot.attempt,
                    now,
                    recovered.provider,
                    recovered.model,
                    recovered.after_chars,
                    recovered.reason,
                    recovered.mode,
                )
            )
        if first:
            assert self._ttfc is not None
            emit(
                StreamStarted(
                    rid, slot.name, slot.model_id, slot.attempt, now, self._ttfc, slot.started_at
                )
            )

    def recovering(self) -> None:
        """The committed stream that broke is in the trail now (mid-stream recovery)."""
        self._served = None

    def stream_finished(self, slot: Slot) -> None:
        """The committed stream ended cleanly."""
        now = self._now()
        self._served = (slot, now, "success", "")
        if self.emit is not None:
            tally = self.tally
            self.emit(
                StreamFinished(
                    self.request_id,
                    slot.name,
                    slot.model_id,
                    slot.attempt,
                    now,
                    tally.chunks,
                    tally.usage,
                    now - self._t0,
                    tally.finish_reason,
                    tally.model,
                )
            )

    # -- health and hedging -------------------------------------------------------

    def circuit(self, key: tuple[str, str], attempt: int, view: RouteHealth) -> None:
        """Provider health reports that an outcome opened or closed ``key``'s breaker."""
        if self.emit is None:
            return
        now = self._now()
        if view.state == "closed":
            self.emit(CircuitClosed(self.request_id, key[0], key[1], attempt, now))
        else:
            self.emit(
                CircuitOpened(
                    self.request_id,
                    key[0],
                    key[1],
                    attempt,
                    now,
                    view.opened_until if view.opened_until is not None else now,
                    view.consecutive_failures,
                    view.last_error,
                )
            )

    def hedge_started(self, slot: Slot) -> None:
        """``slot`` races the attempt in flight; AttemptStarted follows."""
        hedged = self._live[-1] if self._live else None
        if self.emit is not None and hedged is not None:
            self.emit(
                HedgeStarted(
                    self.request_id,
                    slot.name,
                    slot.model_id,
                    slot.attempt,
                    slot.started_at,
                    hedged.name,
                    hedged.model_id,
                    slot.started_at - hedged.started_at,
                )
            )
        self.attempt_started(slot)

    def hedge_lost(self, slot: Slot, started: float, ended: float, winner: Slot | None) -> None:
        """A racer was cancelled: another answered first."""
        self._done(slot)
        if self.emit is not None:
            self.emit(
                HedgeLost(
                    self.request_id,
                    slot.name,
                    slot.model_id,
                    slot.attempt,
                    ended,
                    started,
                    "" if winner is None else winner.name,
                    "" if winner is None else winner.model_id,
                )
            )
