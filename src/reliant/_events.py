"""Typed events: one frozen record per thing that happens in a request.

``ReliableProvider(on_event=hook)`` (or ``llm.add_listener(hook)``) calls a
synchronous hook with each event as it happens; ``reliant.otel`` builds
OpenTelemetry spans and metrics from the same events. Every event carries
the request id, the provider name and model id it is about, the attempt
number (1-based on that route; 0 for request-level events before an
attempt) and ``at``, the running loop's clock (``trio.current_time()``, or
the asyncio loop's ``time()``) when it happened.

Order of events
---------------
::

    RequestStarted
      [RouteChosen]                    routing ordered the candidates (strategy, choice, why)
      [FallbackTaken]                  the route differs from the one that failed or was skipped
      AttemptStarted                   one per call; AttemptSkipped for one provider health refused
        AttemptFailed                  classification reason, sanitized error, status, Retry-After
          [CircuitOpened]              this failure opened the route's breaker
          [RetryScheduled]             same route again after `delay`
        | AttemptSucceeded             (a stream: its first chunk arrived)
          [StreamRecovered]            a committed stream broke earlier; this candidate took over
          [StreamStarted]              the request's first chunk (time to first chunk)
          [CircuitClosed]              this success closed the route's breaker
      [HedgeStarted, AttemptStarted]   a hedge raced against a slow attempt; HedgeLost for the loser
      [StreamFinished]                 the committed stream ended cleanly
    RequestFinished                    always, from a ``finally``: "success", "failure", "cancelled"

Cost
----
Nothing here runs unless someone listens: a request builds a
``RequestObserver`` (``_observe``) only when its ``ReliableProvider`` has a
listener or the caller is inside ``fallback_scope()`` (for the request
record), and every emission point in the planner and the bridge is guarded
by one attribute check (``run.obs is not None``). Without either, no event
object is ever built. With a hook, an event costs its construction (a
frozen dataclass, one to three microseconds here) plus the hook itself.
This module is imported only when a listener is added or a record is
taken: creating sixteen slotted dataclasses costs ~15 ms of import time.

Hooks never see a key: error text in events is the failure trail's text,
already sanitized (``sanitize_api_error``, which scrubs registered keys in
every spelling and known key shapes). A hook that raises is logged once per
``ReliableProvider`` (sanitized, on the ``reliant`` logger) and otherwise
ignored: it never fails, delays or changes the request.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ._exceptions import Attempt
from ._records import StreamRecovery
from ._types import TokenUsage

__all__ = [
    "AttemptFailed",
    "AttemptSkipped",
    "AttemptStarted",
    "AttemptSucceeded",
    "CircuitClosed",
    "CircuitOpened",
    "EventHook",
    "FallbackTaken",
    "HedgeLost",
    "HedgeStarted",
    "ReliantEvent",
    "RequestFinished",
    "RequestOutcome",
    "RequestRecord",
    "RequestStarted",
    "RetryScheduled",
    "RouteChosen",
    "StreamFinished",
    "StreamRecovered",
    "StreamStarted",
]

RequestOutcome: TypeAlias = Literal["success", "failure", "cancelled"]


@dataclass(frozen=True, slots=True)
class _Event:
    request_id: int
    provider: str
    model: str
    attempt: int
    at: float


@dataclass(frozen=True, slots=True)
class RequestStarted(_Event):
    """A request entered the failover planner.

    ``provider`` is the primary and ``model`` the id the primary will be
    sent (after ``model_aliases``), as in every other event; the name the
    caller asked for is ``requested_model``.

    Attributes:
        stream: True for the stream methods.
        requested_model: The model the caller asked for.
    """

    stream: bool
    requested_model: str


@dataclass(frozen=True, slots=True)
class RouteChosen(_Event):
    """Routing ordered this request's candidates (``provider`` is the chosen deployment).

    Sent right after :class:`RequestStarted` when ``ReliableProvider`` has
    ``routing`` or ``rate_limits``; ``model`` is the requested model.

    Attributes:
        strategy: The routing strategy.
        order: Every candidate in the order they will be tried.
        reason: Why the chosen deployment leads, in a few words.
        left_out: Deployments without rate-limit capacity (not candidates).
        waited: Seconds the request waited for rate-limit capacity.
    """

    strategy: str
    order: tuple[str, ...]
    reason: str
    left_out: tuple[str, ...]
    waited: float


@dataclass(frozen=True, slots=True)
class AttemptStarted(_Event):
    """A call to ``provider`` with ``model`` is being made (``at`` is its start).

    Attributes:
        hedge: True when it races a slower attempt (see :class:`HedgeStarted`).
        probe: True when it probes a half-open breaker.
    """

    hedge: bool
    probe: bool


@dataclass(frozen=True, slots=True)
class AttemptSucceeded(_Event):
    """The attempt answered (a stream: its first chunk arrived and it committed).

    Attributes:
        started_at: When the attempt started.
    """

    started_at: float

    @property
    def duration(self) -> float:
        """Seconds from the attempt's start to its answer (first chunk for streams)."""
        return self.at - self.started_at


@dataclass(frozen=True, slots=True)
class AttemptFailed(_Event):
    """The attempt failed; what the planner made of it follows (retry, fallback, circuit).

    Attributes:
        started_at: When the attempt started.
        reason: The classification, as in a failure trail (``retryable``,
            ``non_retryable``, ``rate_limited``, ``timeout``, ...), or
            ``stream_broken`` for a committed stream that broke, or
            ``context_truncated`` when the history was halved and the same
            route is asked again.
        error: Sanitized, one-line error text.
        error_kind: Low-cardinality error kind (OpenTelemetry's
            ``error.type``): the ``ProviderError.kind`` (``timeout``, ...),
            else its HTTP status (``"503"``), else the exception's class
            name. Called ``error_type`` before; that name now means a class
            name only (:class:`RequestFinished`, :class:`RequestRecord`).
        status: The HTTP status, when the error carried one.
        retry_after: Seconds the server asked to wait, when it said so.
    """

    started_at: float
    reason: str
    error: str
    error_kind: str
    status: int | None
    retry_after: float | None

    @property
    def error_type(self) -> str:
        """Deprecated: :attr:`error_kind` (``error_type`` is a class name elsewhere)."""
        warnings.warn(
            "AttemptFailed.error_type is deprecated, use error_kind (error_type means the "
            "exception's class name in RequestFinished and RequestRecord)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.error_kind


@dataclass(frozen=True, slots=True)
class AttemptSkipped(_Event):
    """An attempt provider health did not allow; no call was made.

    Attributes:
        reason: ``circuit_open`` (the breaker is open or probed),
            ``retry_budget`` (a retry the budget refused) or
            ``hedge_budget`` (a hedge the hedge budget refused).
        detail: Human-readable detail.
    """

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class RetryScheduled(_Event):
    """The route that just failed (``attempt``) is asked again after ``delay`` seconds.

    Attributes:
        delay: The backoff to be slept (Retry-After, or jittered backoff; 0
            after a history truncation).
        reason: The failure's classification.
    """

    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class FallbackTaken(_Event):
    """The request moves to another route (provider, or model of the model chain).

    ``provider``/``model`` are the new route (also ``to_provider``/``to_model``);
    ``attempt`` is the attempt number on it.

    Attributes:
        from_provider: The route that failed or was skipped.
        from_model: Its model id.
        to_provider: The route taken now.
        to_model: Its model id.
        reason: Why: the failure's classification, ``circuit_open``,
            ``retry_budget`` or ``stream_broken``.
    """

    from_provider: str
    from_model: str
    to_provider: str
    to_model: str
    reason: str


@dataclass(frozen=True, slots=True)
class StreamStarted(_Event):
    """The request's first chunk arrived from ``provider`` (the stream committed).

    Attributes:
        time_to_first_chunk: Seconds from the request's start.
        attempt_started_at: When the committed attempt started.
    """

    time_to_first_chunk: float
    attempt_started_at: float


@dataclass(frozen=True, slots=True)
class StreamFinished(_Event):
    """The committed stream ended cleanly.

    Attributes:
        chunks: Items delivered by the serving attempt(s), the final one included.
        usage: Token usage the stream reported, if any.
        duration: Seconds from the request's start to the end of the stream.
        finish_reason: Why the model stopped, when known.
        response_model: The model id the server reported, when it did.
    """

    chunks: int
    usage: TokenUsage | None
    duration: float
    finish_reason: str | None
    response_model: str | None


@dataclass(frozen=True, slots=True)
class StreamRecovered(_Event):
    """A committed stream that broke mid-way was taken over by ``provider`` (``mid_stream``).

    Attributes:
        from_provider: The provider whose stream broke.
        from_model: Its model id.
        after_chars: Characters of answer text delivered before the break.
        reason: Why it broke (sanitized).
        mode: ``"continue"`` or ``"restart"``.
    """

    from_provider: str
    from_model: str
    after_chars: int
    reason: str
    mode: str


@dataclass(frozen=True, slots=True)
class CircuitOpened(_Event):
    """This attempt's failure opened (or re-opened) the route's breaker.

    Attributes:
        reopens_at: Trio time the route takes a probe again.
        failures: Consecutive failures counted on the route.
        error: The route's last error (sanitized), if known.
    """

    reopens_at: float
    failures: int
    error: str | None

    @property
    def open_for(self) -> float:
        """Seconds the breaker stays open."""
        return self.reopens_at - self.at


@dataclass(frozen=True, slots=True)
class CircuitClosed(_Event):
    """This attempt's success closed the route's breaker (it was open or half-open)."""


@dataclass(frozen=True, slots=True)
class HedgeStarted(_Event):
    """A hedge: ``provider``/``model`` started while a slower attempt still runs.

    Attributes:
        hedged_provider: The slow attempt's provider.
        hedged_model: Its model id.
        after: Seconds the slow attempt had run.
    """

    hedged_provider: str
    hedged_model: str
    after: float


@dataclass(frozen=True, slots=True)
class HedgeLost(_Event):
    """A racer was cancelled because another answered first.

    Attributes:
        started_at: When the losing attempt started.
        winner_provider: Who answered first.
        winner_model: Its model id.
    """

    started_at: float
    winner_provider: str
    winner_model: str


@dataclass(frozen=True, slots=True)
class RequestFinished(_Event):
    """The request ended; always the last event of a request (sent from a ``finally``).

    ``provider``/``model``/``attempt`` are the serving route when one served,
    else the last route tried (else the primary and the model asked).

    Attributes:
        outcome: ``"success"``, ``"failure"`` or ``"cancelled"``.
        duration: Seconds from the request's start.
        attempts: Calls made (skips not counted, hedges counted).
        usage: Token usage, when the answer reported it.
        requested_model: The model the caller asked for.
        stream: True for the stream methods.
        served: True when a route served (the answer, or a committed stream).
        error_type: For a failure: the exception's class name
            (``FailoverError``, ``StreamError``, ...); ``"cancelled"`` when
            cancelled; None on success.
        error: Sanitized text of the error, when it failed.
        time_to_first_chunk: For streams that committed: seconds to the
            first chunk.
        finish_reason: Why the model stopped, when known.
        response_model: The model id the server reported, when it did.
    """

    outcome: RequestOutcome
    duration: float
    attempts: int
    usage: TokenUsage | None
    requested_model: str
    stream: bool
    served: bool
    error_type: str | None
    error: str | None
    time_to_first_chunk: float | None
    finish_reason: str | None
    response_model: str | None


ReliantEvent: TypeAlias = (
    RequestStarted
    | RouteChosen
    | AttemptStarted
    | AttemptSucceeded
    | AttemptFailed
    | AttemptSkipped
    | RetryScheduled
    | FallbackTaken
    | StreamStarted
    | StreamFinished
    | StreamRecovered
    | CircuitOpened
    | CircuitClosed
    | HedgeStarted
    | HedgeLost
    | RequestFinished
)
"""Every event a ``ReliableProvider`` sends to its listeners."""

EventHook: TypeAlias = Callable[[ReliantEvent], object]
"""A synchronous listener; its return value is ignored."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """What one request did, recorded for every request made inside ``fallback_scope()``.

    Attributes:
        request_id: The id its events carry.
        requested_provider: The first (primary) provider of the chain.
        requested_model: The model the caller asked for.
        actual_provider: Who served (the answer, or the committed stream),
            or None when nobody did; the same name as in
            :class:`~reliant.ProviderFallbackInfo` (``served_provider``
            before, now a deprecated alias).
        actual_model: The model id that served, as sent to that provider
            (``served_model`` before, now a deprecated alias).
        outcome: ``"success"``, ``"failure"`` or ``"cancelled"``.
        attempts: Every attempt in order, **the one that served included**
            (unlike ``ProviderFallbackInfo.attempts``, which holds only the
            attempts before it), with ``started_after``/``ended_after``
            (seconds since the request started) and the raw trio-clock
            ``started_at``/``ended_at``: the failure trail (failures, skips,
            lost hedges, broken streams), then the one that served (reason
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
    actual_provider: str | None
    actual_model: str | None
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

    @property
    def served_provider(self) -> str | None:
        """Deprecated alias of :attr:`actual_provider`."""
        _renamed("RequestRecord.served_provider", "actual_provider")
        return self.actual_provider

    @property
    def served_model(self) -> str | None:
        """Deprecated alias of :attr:`actual_model`."""
        _renamed("RequestRecord.served_model", "actual_model")
        return self.actual_model

    def summary(self) -> str:
        """The request's story in one line: who served, what was skipped, retried, hedged.

        For example ``served by anthropic (claude-haiku-4-5) in 2 ms after
        skipping openai (gpt-4o: circuit open)``, or ``served by backup (m)
        in 50 ms after primary (m) failed twice (1 retry)``. Every attempt
        that did not serve is accounted for: failures (with their retries),
        routes skipped by provider health, hedges (lost, or refused by the
        budget), broken streams and the recoveries that took over.
        """
        ms = f"{self.duration * 1000:.0f} ms"
        story = _story(self.attempts, len(self.recoveries))
        if self.actual_provider is not None and self.outcome == "success":
            head = f"served by {self.actual_provider} ({self.actual_model}) in {ms}"
            return f"{head} after {story}" if story else head
        if self.error:  # the failure trail already tells every attempt
            return f"{self.outcome} after {ms}: {self.error}"
        return f"{self.outcome} after {ms}" + (f" ({story})" if story else "")


def _renamed(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is deprecated, use {new} (the name ProviderFallbackInfo uses)",
        DeprecationWarning,
        stacklevel=3,
    )


_TIMES = {1: "once", 2: "twice"}
_SKIP_WORDS = {"circuit_open": "circuit open", "retry_budget": "retry budget"}


def _story(attempts: tuple[Attempt, ...], recoveries: int) -> str:
    """What happened before (or instead of) the answer, as comma-separated clauses."""
    failed: dict[str, int] = {}
    skipped: dict[str, list[str]] = {}
    lost: list[str] = []
    hedges_refused = broken = 0
    for a in attempts:
        route = f"{a.provider} ({a.model})"
        if a.reason in _SKIP_WORDS:
            why = _SKIP_WORDS[a.reason]
            reasons = skipped.setdefault(a.provider, [])
            if f"{a.model}: {why}" not in reasons:
                reasons.append(f"{a.model}: {why}")
        elif a.reason == "hedge_lost":
            lost.append(route)
        elif a.reason == "hedge_budget":
            hedges_refused += 1
        elif a.reason == "stream_broken":
            broken += 1
        elif a.reason not in ("success", "cancelled"):
            failed[route] = failed.get(route, 0) + 1
    clauses = [f"skipping {p} ({', '.join(r)})" for p, r in skipped.items()]
    for route, n in failed.items():
        times = _TIMES.get(n, f"{n} times")
        retries = f" ({n - 1} {'retry' if n == 2 else 'retries'})" if n > 1 else ""
        clauses.append(f"{route} failed {times}{retries}" if n > 1 else f"{route} failed")
    if broken:
        clauses.append(f"{broken} broken stream{'s' if broken > 1 else ''}")
    if recoveries:
        clauses.append(f"{recoveries} recovered mid-stream")
    if lost:
        clauses.append(f"{', '.join(dict.fromkeys(lost))} lost the hedge race")
    if hedges_refused:
        clauses.append(f"{hedges_refused} hedge{'s' if hedges_refused > 1 else ''} refused")
    return ", ".join(clauses)
