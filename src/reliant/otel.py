"""OpenTelemetry spans and metrics for reliant, following the GenAI semantic conventions.

``pip install 'reliant[otel]'`` (which needs only ``opentelemetry-api``),
then::

    from reliant.otel import instrument

    llm = ReliableProvider([...])
    instrument(llm)  # the global tracer and meter providers, or pass your own

Why a listener and not a wrapper
--------------------------------
:func:`instrument` adds one listener (``ReliableProvider.add_listener``) and
builds everything from reliant's typed events: the planner already knows
every attempt, retry, fallback, breaker transition and hedge with its exact
trio time, so nothing is wrapped or patched, other listeners keep working,
and an uninstrumented provider pays nothing. The same mechanism serves user
hooks, ``reliant chat --trace`` and this module. ``import reliant`` never
imports OpenTelemetry; this module imports it only when :func:`instrument`
runs.

What is recorded
----------------
One span per request, ``chat {gen_ai.request.model}`` (kind ``INTERNAL``:
it is the logical operation, made of calls), a child of whatever span is
current when the request starts, and under it one span per attempt,
``chat {model id}`` (kind ``CLIENT``: one call to one provider), started and
ended at the attempt's own times: a failed attempt ends when it failed
(status ``ERROR``, ``error.type``, ``reliant.failure.reason``), a lost hedge
when it was cancelled (``reliant.outcome = hedge_lost``, status unset), the
serving attempt of a stream when the stream ends. Request span attributes:
``gen_ai.operation.name`` (``chat``), ``gen_ai.provider.name`` (the
configured name of the provider that served, else the last one tried),
``gen_ai.request.model``, ``gen_ai.response.model`` (the model the server
reported, else the model id that served), ``gen_ai.usage.input_tokens`` /
``output_tokens``, ``gen_ai.response.finish_reasons``,
``gen_ai.request.stream`` and ``gen_ai.response.time_to_first_chunk`` for
streams, ``error.type`` on failure, and ``reliant.request.id``,
``reliant.attempts``, ``reliant.outcome``. Retries, fallbacks, skipped
attempts, breaker transitions, hedges, the first chunk and mid-stream
recoveries are span events on the request span, at their times.

``error.type`` is the exception's class name for a request that failed
(``FailoverError``, ``ContextWindowExceededError``, ``StreamError``,
``NoStreamingProviderError``...), and for an attempt the
``ProviderError.kind`` (``timeout``, ``response_too_large``,
``malformed_response``, ``content_filter``), else its HTTP status
(``"429"``, ``"503"``), else the exception's class name. A cancelled
request (the caller left the ``async with``, or was cancelled) ends its
spans at that instant with status ``ERROR`` and ``error.type =
"cancelled"``.

Metrics: ``gen_ai.client.operation.duration`` (s, per request),
``gen_ai.client.token.usage`` (``{token}``, ``gen_ai.token.type`` input and
output) and ``gen_ai.client.operation.time_to_first_chunk`` (s, streams),
with the conventional bucket boundaries and attributes; counters
``reliant.retries``, ``reliant.fallbacks``, ``reliant.circuit.opens`` and
``reliant.hedges`` with ``gen_ai.provider.name`` and
``gen_ai.request.model`` (the route) and ``reliant.reason`` where there is
one.

Keys never reach a span: every error text reliant hands to listeners is
sanitized, and nothing here reads a request's messages or an answer's text.

Limitation: reliant's spans are not made the *current* span while an
attempt runs (attempts run in several tasks, and a context attached in one
and detached in another breaks OpenTelemetry's context stack), so spans of
an HTTP instrumentation appear next to the attempt spans, under the caller's
span, not inside them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._events import (
    AttemptFailed,
    AttemptSkipped,
    AttemptStarted,
    AttemptSucceeded,
    CircuitClosed,
    CircuitOpened,
    FallbackTaken,
    HedgeLost,
    HedgeStarted,
    ReliantEvent,
    RequestFinished,
    RequestStarted,
    RetryScheduled,
    RouteChosen,
    StreamFinished,
    StreamRecovered,
    StreamStarted,
)
from ._reliable import ReliableProvider

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

__all__ = ["DURATION_BUCKETS", "TOKEN_BUCKETS", "Instrumentation", "instrument"]

DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
"""Bucket boundaries the GenAI conventions give for durations (seconds)."""

TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
"""Bucket boundaries the GenAI conventions give for ``gen_ai.client.token.usage``."""

_OPERATION = "chat"
_NEEDS_EXTRA = "reliant.otel needs OpenTelemetry, in the 'otel' extra: pip install 'reliant[otel]'"


@dataclass(slots=True)
class _Request:
    span: Span
    base_ns: int  # wall-clock ns at the request's start
    t0: float  # its trio time
    model: str
    stream: bool
    attempts: dict[tuple[str, str, int], Span] = field(default_factory=dict)

    def ns(self, at: float) -> int:
        return self.base_ns + round((at - self.t0) * 1e9)


class Instrumentation:
    """The listener :func:`instrument` adds; :meth:`uninstrument` removes it again."""

    def __init__(
        self,
        llm: ReliableProvider,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
    ) -> None:
        try:
            from opentelemetry import metrics, trace
            from opentelemetry.trace import SpanKind, Status, StatusCode
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(_NEEDS_EXTRA) from err
        from . import __version__

        self._llm = llm
        self._trace = trace
        self._client = SpanKind.CLIENT
        self._internal = SpanKind.INTERNAL
        self._status = Status
        self._error = StatusCode.ERROR
        self._tracer = trace.get_tracer("reliant", __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter("reliant", __version__, meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
        )
        self._ttfc = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to first chunk of a streaming GenAI operation.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self._retries = meter.create_counter(
            "reliant.retries", unit="{retry}", description="Retries of a route reliant scheduled."
        )
        self._fallbacks = meter.create_counter(
            "reliant.fallbacks",
            unit="{fallback}",
            description="Moves of a request to another provider or model.",
        )
        self._opens = meter.create_counter(
            "reliant.circuit.opens",
            unit="{open}",
            description="Circuit breakers opened (or re-opened) by an attempt's failure.",
        )
        self._hedges = meter.create_counter(
            "reliant.hedges", unit="{hedge}", description="Hedged attempts started."
        )
        self._requests: dict[int, _Request] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            RequestStarted: self._request_started,
            RouteChosen: self._route_chosen,
            AttemptStarted: self._attempt_started,
            AttemptSucceeded: self._attempt_succeeded,
            AttemptFailed: self._attempt_failed,
            AttemptSkipped: self._attempt_skipped,
            RetryScheduled: self._retry,
            FallbackTaken: self._fallback,
            StreamStarted: self._stream_started,
            StreamFinished: self._stream_finished,
            StreamRecovered: self._stream_recovered,
            CircuitOpened: self._circuit_opened,
            CircuitClosed: self._circuit_closed,
            HedgeStarted: self._hedge_started,
            HedgeLost: self._hedge_lost,
            RequestFinished: self._request_finished,
        }

    def __call__(self, event: ReliantEvent) -> None:
        """Turn one event into spans, span events and measurements."""
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def uninstrument(self) -> None:
        """Stop listening (requests already running finish their spans)."""
        self._llm.remove_listener(self)

    # -- requests -------------------------------------------------------------------

    def _request_started(self, e: RequestStarted) -> None:
        base_ns = time.time_ns()
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": _OPERATION,
            "gen_ai.provider.name": e.provider,
            "gen_ai.request.model": e.requested_model,
            "reliant.request.id": e.request_id,
        }
        if e.stream:
            attributes["gen_ai.request.stream"] = True
        span = self._tracer.start_span(
            f"{_OPERATION} {e.requested_model}",
            kind=self._internal,
            attributes=attributes,
            start_time=base_ns,
        )
        self._requests[e.request_id] = _Request(span, base_ns, e.at, e.requested_model, e.stream)

    def _route_chosen(self, e: RouteChosen) -> None:
        # The decision is an attribute of the request: its span says where
        # routing sent it and why, and an event keeps the whole order.
        request = self._requests.get(e.request_id)
        if request is None:
            return
        request.span.set_attributes(
            {
                "reliant.routing.strategy": e.strategy,
                "reliant.routing.chosen": e.provider,
                "reliant.routing.reason": e.reason,
            }
        )
        self._event(
            e.request_id,
            "reliant.route",
            e.at,
            {"reliant.routing.order": list(e.order), "reliant.routing.left_out": list(e.left_out),
             "reliant.routing.waited": e.waited},
        )  # fmt: skip

    def _request_finished(self, e: RequestFinished) -> None:
        request = self._requests.pop(e.request_id, None)
        error = e.error_type
        metric: dict[str, Any] = {
            "gen_ai.operation.name": _OPERATION,
            "gen_ai.provider.name": e.provider,
            "gen_ai.request.model": e.requested_model,
        }
        response_model = e.response_model or (e.model if e.served else None)
        if response_model is not None:
            metric["gen_ai.response.model"] = response_model
        if error is not None:
            metric["error.type"] = error
        self._duration.record(e.duration, metric)
        usage = e.usage
        if usage is not None:
            tokens = {k: v for k, v in metric.items() if k != "error.type"}
            if usage.input_tokens is not None:
                self._tokens.record(usage.input_tokens, {**tokens, "gen_ai.token.type": "input"})
            if usage.output_tokens is not None:
                self._tokens.record(usage.output_tokens, {**tokens, "gen_ai.token.type": "output"})
        if request is None:
            return
        end = request.ns(e.at)
        for span in request.attempts.values():  # attempts the request's end interrupted
            span.set_attribute("reliant.outcome", e.outcome)
            if error is not None:
                span.set_attribute("error.type", error)
                span.set_status(self._status(self._error, e.outcome))
            span.end(end)
        span = request.span
        span.set_attribute("gen_ai.provider.name", e.provider)
        if response_model is not None:
            span.set_attribute("gen_ai.response.model", response_model)
        if usage is not None:
            if usage.input_tokens is not None:
                span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
            if usage.output_tokens is not None:
                span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        if e.finish_reason is not None:
            span.set_attribute("gen_ai.response.finish_reasons", [e.finish_reason])
        span.set_attribute("reliant.attempts", e.attempts)
        span.set_attribute("reliant.outcome", e.outcome)
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(self._status(self._error, e.error or e.outcome))
        span.end(end)

    # -- attempts -------------------------------------------------------------------

    def _attempt_started(self, e: AttemptStarted) -> None:
        request = self._requests.get(e.request_id)
        if request is None:
            return
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": _OPERATION,
            "gen_ai.provider.name": e.provider,
            "gen_ai.request.model": e.model,
            "reliant.attempt": e.attempt,
        }
        if request.stream:
            attributes["gen_ai.request.stream"] = True
        if e.hedge:
            attributes["reliant.hedge"] = True
        if e.probe:
            attributes["reliant.probe"] = True
        key = (e.provider, e.model, e.attempt)
        stale = request.attempts.pop(key, None)
        if stale is not None:  # never expected: the same attempt twice
            stale.end(request.ns(e.at))
        request.attempts[key] = self._tracer.start_span(
            f"{_OPERATION} {e.model}",
            context=self._trace.set_span_in_context(request.span),
            kind=self._client,
            attributes=attributes,
            start_time=request.ns(e.at),
        )

    def _attempt_succeeded(self, e: AttemptSucceeded) -> None:
        request = self._requests.get(e.request_id)
        if request is None:
            return
        key = (e.provider, e.model, e.attempt)
        span = request.attempts.get(key)
        if span is None:
            return
        if request.stream:  # the attempt goes on until its stream ends
            span.set_attribute("gen_ai.response.time_to_first_chunk", e.duration)
            return
        del request.attempts[key]
        span.set_attribute("reliant.outcome", "success")
        span.end(request.ns(e.at))

    def _attempt_failed(self, e: AttemptFailed) -> None:
        request = self._requests.get(e.request_id)
        if request is None:
            return
        span = request.attempts.pop((e.provider, e.model, e.attempt), None)
        if span is None:
            return
        span.set_attribute("error.type", e.error_kind)
        span.set_attribute("reliant.failure.reason", e.reason)
        span.set_attribute("reliant.outcome", "failure")
        if e.status is not None:
            span.set_attribute("http.response.status_code", e.status)
        if e.retry_after is not None:
            span.set_attribute("reliant.retry_after", e.retry_after)
        span.set_status(self._status(self._error, e.error))
        span.end(request.ns(e.at))

    def _attempt_skipped(self, e: AttemptSkipped) -> None:
        self._event(
            e.request_id,
            "reliant.attempt_skipped",
            e.at,
            {"gen_ai.provider.name": e.provider, "gen_ai.request.model": e.model,
             "reliant.reason": e.reason},
        )  # fmt: skip

    def _hedge_lost(self, e: HedgeLost) -> None:
        request = self._requests.get(e.request_id)
        if request is None:
            return
        span = request.attempts.pop((e.provider, e.model, e.attempt), None)
        if span is not None:
            span.set_attribute("reliant.outcome", "hedge_lost")
            span.end(request.ns(e.at))
        self._event(
            e.request_id,
            "reliant.hedge_lost",
            e.at,
            {"gen_ai.provider.name": e.provider, "gen_ai.request.model": e.model,
             "reliant.winner.provider": e.winner_provider},
        )  # fmt: skip

    # -- request-level happenings ---------------------------------------------------------

    def _event(self, request_id: int, name: str, at: float, attributes: dict[str, Any]) -> None:
        request = self._requests.get(request_id)
        if request is not None:
            request.span.add_event(name, attributes, request.ns(at))

    def _retry(self, e: RetryScheduled) -> None:
        route = {"gen_ai.provider.name": e.provider, "gen_ai.request.model": e.model}
        self._retries.add(1, {**route, "reliant.reason": e.reason})
        self._event(
            e.request_id,
            "reliant.retry",
            e.at,
            {**route, "reliant.attempt": e.attempt, "reliant.delay": e.delay,
             "reliant.reason": e.reason},
        )  # fmt: skip

    def _fallback(self, e: FallbackTaken) -> None:
        self._fallbacks.add(
            1,
            {"gen_ai.provider.name": e.from_provider, "gen_ai.request.model": e.from_model,
             "reliant.reason": e.reason},
        )  # fmt: skip
        self._event(
            e.request_id,
            "reliant.fallback",
            e.at,
            {"reliant.from.provider": e.from_provider, "reliant.from.model": e.from_model,
             "reliant.to.provider": e.to_provider, "reliant.to.model": e.to_model,
             "reliant.reason": e.reason},
        )  # fmt: skip

    def _circuit_opened(self, e: CircuitOpened) -> None:
        route = {"gen_ai.provider.name": e.provider, "gen_ai.request.model": e.model}
        self._opens.add(1, route)
        self._event(
            e.request_id,
            "reliant.circuit_opened",
            e.at,
            {**route, "reliant.open_for": e.open_for, "reliant.failures": e.failures},
        )

    def _circuit_closed(self, e: CircuitClosed) -> None:
        self._event(
            e.request_id,
            "reliant.circuit_closed",
            e.at,
            {"gen_ai.provider.name": e.provider, "gen_ai.request.model": e.model},
        )

    def _hedge_started(self, e: HedgeStarted) -> None:
        route = {"gen_ai.provider.name": e.provider, "gen_ai.request.model": e.model}
        self._hedges.add(1, route)
        self._event(
            e.request_id,
            "reliant.hedge",
            e.at,
            {**route, "reliant.hedged.provider": e.hedged_provider, "reliant.after": e.after},
        )

    def _stream_started(self, e: StreamStarted) -> None:
        request = self._requests.get(e.request_id)
        self._ttfc.record(
            e.time_to_first_chunk,
            {
                "gen_ai.operation.name": _OPERATION,
                "gen_ai.provider.name": e.provider,
                "gen_ai.request.model": request.model if request is not None else e.model,
                "gen_ai.response.model": e.model,
            },
        )
        if request is None:
            return
        request.span.set_attribute("gen_ai.response.time_to_first_chunk", e.time_to_first_chunk)
        request.span.add_event(
            "reliant.first_chunk",
            {"gen_ai.provider.name": e.provider, "gen_ai.request.model": e.model},
            request.ns(e.at),
        )

    def _stream_recovered(self, e: StreamRecovered) -> None:
        self._event(
            e.request_id,
            "reliant.stream_recovered",
            e.at,
            {"reliant.from.provider": e.from_provider, "reliant.from.model": e.from_model,
             "reliant.to.provider": e.provider, "reliant.to.model": e.model,
             "reliant.after_chars": e.after_chars, "reliant.mode": e.mode},
        )  # fmt: skip

    def _stream_finished(self, e: StreamFinished) -> None:
        request = self._requests.get(e.request_id)
        if request is None:
            return
        span = request.attempts.pop((e.provider, e.model, e.attempt), None)
        if span is None:
            return
        span.set_attribute("reliant.outcome", "success")
        span.set_attribute("reliant.chunks", e.chunks)
        if e.usage is not None:
            if e.usage.input_tokens is not None:
                span.set_attribute("gen_ai.usage.input_tokens", e.usage.input_tokens)
            if e.usage.output_tokens is not None:
                span.set_attribute("gen_ai.usage.output_tokens", e.usage.output_tokens)
        span.end(request.ns(e.at))


def instrument(
    llm: ReliableProvider,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> Instrumentation:
    """Record OpenTelemetry GenAI spans and metrics for every request of ``llm``.

    Args:
        llm: The provider to observe (requests already running are not).
        tracer_provider: Where spans go (default: the global one).
        meter_provider: Where metrics go (default: the global one).

    Returns:
        The listener; ``.uninstrument()`` removes it.

    Raises:
        ImportError: ``opentelemetry-api`` is not installed.
        TypeError: ``llm`` is not a ``ReliableProvider``.
    """
    if not isinstance(llm, ReliableProvider):
        raise TypeError(f"instrument() needs a ReliableProvider, got {type(llm).__name__}")
    instrumentation = Instrumentation(llm, tracer_provider, meter_provider)
    llm.add_listener(instrumentation)
    return instrumentation
