"""Records and narrow interfaces that the planner and its policies all speak of.

A room at the bottom of the import graph: it imports only the standard
library, so every module that needs these records (``_failover``,
``_events``, ``_fallback_info``, ``_observe``, ``_hedge``) imports them from
here and none of them has to import another to get them. That is how the
import circles went away: ``_events`` and ``_fallback_info`` used to import
each other for :class:`StreamRecovery`, and the planner (``_failover``) and
its hedging and observation policies (``_hedge``, ``_observe``) imported
each other's classes, if only for type checking.

The planner now knows its policies only by the protocols below, which say
exactly what it calls; ``_reliable`` (the assembler) hands it the objects.
The policies know an attempt only by :class:`SlotView` and a run only by
:class:`HedgedRun`: what they read and call, never the planner's internals.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

__all__ = [
    "HedgeDriver",
    "HedgedRun",
    "Lost",
    "Observer",
    "ObserverFactory",
    "RouterDriver",
    "SlotView",
    "StreamRecovery",
]

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class StreamRecovery:
    """One committed stream that broke mid-way and was recovered on another candidate.

    Attributes:
        provider: The provider whose stream broke.
        model: Its model id.
        after_chars: Characters of answer text the caller had received from it.
        reason: Why it broke (sanitized error text).
        mode: ``"continue"`` (the next candidate continued the text) or
            ``"restart"`` (it answered anew after a restart signal).
        to_provider: The candidate that took over.
        to_model: Its model id.
    """

    provider: str
    model: str
    after_chars: int
    reason: str
    mode: str
    to_provider: str = ""
    to_model: str = ""


class Lost(Exception):
    """Raised by a hedged attempt whose claim came after another racer's."""


class SlotView(Protocol):
    """What a policy reads of one attempt (the planner's ``Slot``)."""

    @property
    def name(self) -> str: ...
    @property
    def model_id(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def started_at(self) -> float: ...
    @property
    def hedge(self) -> bool: ...
    @property
    def probe(self) -> bool: ...

    def succeeded(self) -> None: ...
    def failed(self, err: Exception) -> None: ...


class HedgedRun(Protocol):
    """What hedging calls on the run it races attempts of (the planner's ``FailoverRun``)."""

    async def hedge(self) -> Any: ...
    def note_failure(self, slot: Any, err: Exception) -> None: ...
    def lost(self, slot: Any, started: float, ended: float, winner: Any) -> None: ...
    def note_hedge_refused(self, slot: Any, detail: str) -> None: ...


class HedgeDriver(Protocol):
    """Hedging as the planner's non-streaming driver uses it (``_hedge.Hedger``)."""

    async def race(
        self, run: Any, first: Any, attempt: Callable[[Any, Callable[[], bool]], Awaitable[R]]
    ) -> tuple[Any, R] | None: ...


class Observer(Protocol):
    """What the planner and the bridge tell about a request (``_observe.RequestObserver``)."""

    tally: Any

    def request_started(self, stream: bool, route: Any = None) -> None: ...
    def request_finished(
        self,
        trail: list[Any],
        recoveries: list[StreamRecovery],
        error: BaseException | None,
        value: object = None,
    ) -> None: ...
    def attempt_started(self, slot: Any) -> None: ...
    def attempt_failed(self, slot: Any, reason: str, detail: str, err: Exception) -> None: ...
    def truncated(self, slot: Any, trail_len: int, err: Exception) -> None: ...
    def retry(self, slot: Any, delay: float, reason: str) -> None: ...
    def skipped(self, name: str, model_id: str, attempt: int, reason: str, detail: str) -> None: ...
    def succeeded(self, slot: Any, recovered: StreamRecovery | None) -> None: ...
    def recovering(self) -> None: ...
    def stream_finished(self, slot: Any) -> None: ...
    def circuit(self, key: tuple[str, str], attempt: int, view: Any) -> None: ...
    def hedge_started(self, slot: Any) -> None: ...
    def hedge_lost(self, slot: Any, started: float, ended: float, winner: Any) -> None: ...


class RouterDriver(Protocol):
    """Routing as the planner's drivers use it (``_router.Router``): the pool, ordered."""

    async def route(
        self,
        pool: Sequence[tuple[str, Any]],
        messages: Any,
        prompt: Sequence[str | None],
        down: Callable[[str], bool] | None,
    ) -> tuple[tuple[tuple[str, Any], ...], Any]: ...
    @property
    def unsettled(self) -> bool: ...
    async def settle(self) -> None: ...


ObserverFactory = Callable[..., Observer]
"""``(emit, cell, primary, requested_model, max_attempts, primary_model) -> Observer``."""
