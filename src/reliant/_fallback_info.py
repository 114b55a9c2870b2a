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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._exceptions import Attempt
from ._records import StreamRecovery as StreamRecovery

if TYPE_CHECKING:
    from ._events import RequestRecord

__all__ = [
    "ProviderFallbackInfo",
    "StreamRecovery",
    "current_cell",
    "fallback_scope",
    "record_provider_fallback",
    "take_last_provider_fallback",
    "take_last_request_record",
]


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
        attempts: The attempts **before** the one that served (which is
            not included, unlike ``RequestRecord.attempts``), with their
            timings (``started_after``/``ended_after``: seconds since the
            request started): failures, candidates provider health
            skipped, hedges that lost (the failure trail a
            ``FailoverError`` would carry).
    """

    requested_provider: str
    requested_model: str
    actual_provider: str
    actual_model: str
    recoveries: tuple[StreamRecovery, ...] = ()
    attempts: tuple[Attempt, ...] = ()


class _Cell:
    __slots__ = ("record", "value")

    def __init__(self) -> None:
        self.value: ProviderFallbackInfo | None = None
        # The record, or what builds it when taken (most scopes never take it).
        self.record: RequestRecord | Callable[[], RequestRecord] | None = None


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
    return record() if callable(record) else record


def current_cell() -> _Cell | None:
    """The current scope's cell (None outside any scope), for the request observer."""
    return _CURRENT.get()


def record_provider_fallback(info: ProviderFallbackInfo) -> None:
    """Store ``info`` in the current scope's cell; a no-op outside any scope."""
    cell = _CURRENT.get()
    if cell is not None:
        cell.value = info
