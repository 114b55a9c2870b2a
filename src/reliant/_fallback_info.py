"""Telling the caller that a request was served by someone else.

The seed used a tokio task-local; here a ``ContextVar`` holds a per-scope
*mutable cell*. ``fallback_scope()`` installs a fresh cell; recording writes
into whatever cell is current; ``take_last_provider_fallback()`` empties it.

Why a cell and not the value itself: trio copies the context into every task
it spawns, so a child that *set* the variable would change only its own copy.
Mutating a shared cell instead makes a fallback recorded by the streaming
bridge task (a child of the caller's nursery) visible to the caller, which
the seed's design cannot do. Concurrent requests each open their own scope,
get their own cell, and never see each other's information. Outside any
scope recording is a no-op and taking returns None.

The same cell carries a :class:`RequestRecord` for *every* request made in
the scope (success, failure or cancellation, whoever served), taken with
``take_last_request_record()``; ``take_last_provider_fallback()`` keeps its
meaning (None when the primary served at once).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from ._exceptions import Attempt
from ._types import TokenUsage

__all__ = [
    "ProviderFallbackInfo",
    "RequestRecord",
    "StreamRecovery",
    "current_cell",
    "fallback_scope",
    "record_provider_fallback",
    "take_last_provider_fallback",
    "take_last_request_record",
]


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


@dataclass(frozen=True, slots=True)
class ProviderFallbackInfo:
    """Which provider and model actually served a request, versus what was asked.

    Attributes:
        requested_provider: The first (primary) provider of the chain.
        requested_model: The model the caller asked for.
        actual_provider: The provider that served the answer.
        actual_model: The model id that served it, as sent to that provider
            (after ``model_aliases`` mapping).
        recoveries: Streams that broke mid-way and were recovered
            (``ReliableProvider(mid_stream=...)``), in order.
        attempts: The attempts before the one that served, with their
            timings: failures, candidates provider health skipped, hedges
            that lost (the failure trail a ``FailoverError`` would carry).
    """

    requested_provider: str
    requested_model: str
    actual_provider: str
    actual_model: str
    recoveries: tuple[StreamRecovery, ...] = ()
    attempts: tuple[Attempt, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """What one request did, recorded for every request made inside ``fallback_scope()``.

    Attributes:
        request_id: The id its events carry.
        requested_provider: The first (primary) provider of the chain.
        requested_model: The model the caller asked for.
        served_provider: Who served (the answer, or the committed stream),
            or None when nobody did.
        served_model: The model id that served, as sent to that provider.
        outcome: ``"success"``, ``"failure"`` or ``"cancelled"``.
        attempts: Every attempt in order, with ``started_at``/``ended_at``
            (trio clock): the failure trail (failures, skips, lost hedges,
            broken streams), then the one that served (reason
            ``"success"``, or ``"cancelled"``/``"stream_broken"`` when the
            stream did not finish) and attempts still in flight when the
            request ended (``"cancelled"``). A history truncation shows as
            ``"context_truncated"``.
        recoveries: Streams that broke mid-way and were recovered.
        started_at: Trio time the request started.
        ended_at: Trio time it ended (a stream: its upstream ended).
        stream: True for the stream methods.
        time_to_first_chunk: Seconds to the first chunk (streams that committed).
        usage: Token usage, when the answer reported it.
        error_type: The exception's class name on failure, ``"cancelled"``
            when cancelled, else None.
        error: Sanitized error text on failure.
    """

    request_id: int
    requested_provider: str
    requested_model: str
    served_provider: str | None
    served_model: str | None
    outcome: Literal["success", "failure", "cancelled"]
    attempts: tuple[Attempt, ...]
    recoveries: tuple[StreamRecovery, ...]
    started_at: float
    ended_at: float
    stream: bool = False
    time_to_first_chunk: float | None = None
    usage: TokenUsage | None = None
    error_type: str | None = None
    error: str | None = None

    @property
    def duration(self) -> float:
        """Seconds from the request's start to its end."""
        return self.ended_at - self.started_at

    def summary(self) -> str:
        """One line: who served, after which failures, how long it took."""
        ms = f"{self.duration * 1000:.0f} ms"
        failed = [f"{a.provider} ({a.model})" for a in self.attempts if a.reason not in _NOT_FAILED]
        after = f" after {', '.join(dict.fromkeys(failed))} failed" if failed else ""
        if self.served_provider is not None and self.outcome == "success":
            return f"served by {self.served_provider} ({self.served_model}){after} in {ms}"
        return f"{self.outcome} after {ms}" + (f": {self.error}" if self.error else "")


_NOT_FAILED = frozenset(
    ("success", "cancelled", "circuit_open", "retry_budget", "hedge_lost", "hedge_budget")
)


class _Cell:
    __slots__ = ("record", "value")

    def __init__(self) -> None:
        self.value: ProviderFallbackInfo | None = None
        self.record: RequestRecord | None = None


_CURRENT: ContextVar[_Cell | None] = ContextVar("reliant_fallback_cell", default=None)


@contextmanager
def fallback_scope() -> Iterator[None]:
    """Collect fallback information for the calls made inside this block.

    Scopes nest; the innermost one receives the records. Tasks spawned inside
    the block share its cell.
    """
    token = _CURRENT.set(_Cell())
    try:
        yield
    finally:
        _CURRENT.reset(token)


def take_last_provider_fallback() -> ProviderFallbackInfo | None:
    """Return and clear the last fallback recorded in the current scope."""
    cell = _CURRENT.get()
    if cell is None:
        return None
    value, cell.value = cell.value, None
    return value


def take_last_request_record() -> RequestRecord | None:
    """Return and clear the record of the last request that ended in the current scope.

    Every request made inside ``fallback_scope()`` leaves one, whatever its
    outcome; None outside any scope or when no request ended since the last take.
    """
    cell = _CURRENT.get()
    if cell is None:
        return None
    record, cell.record = cell.record, None
    return record


def current_cell() -> _Cell | None:
    """The current scope's cell (None outside any scope), for the request observer."""
    return _CURRENT.get()


def record_provider_fallback(info: ProviderFallbackInfo) -> None:
    """Store ``info`` in the current scope's cell; a no-op outside any scope."""
    cell = _CURRENT.get()
    if cell is not None:
        cell.value = info
