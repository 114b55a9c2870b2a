"""OpenTelemetry GenAI spans and metrics, checked against the real SDK's in-memory exporters."""

from __future__ import annotations

import random
import string
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from backends_support import BACKENDS, run_on
from reliant import (
    ChatMessage,
    ChatRequest,
    FailoverError,
    HealthPolicy,
    Hedge,
    ProviderError,
    ReliableProvider,
    ReliantEvent,
    StreamError,
    TokenUsage,
    fallback_scope,
    take_last_request_record,
)
from reliant._sanitize import register_secret
from reliant.otel import DURATION_BUCKETS, instrument
from reliant.testing import Fail, Hang, Reply, ScriptedProvider, Stream

pytestmark = pytest.mark.anyio

USER = [ChatMessage.user("hi")]
NS = 1_000_000_000


class Bottom(random.Random):
    """Jitter pinned to the bottom: every backoff is exactly base / 2."""

    def random(self) -> float:
        return 0.0


@dataclass
class Otel:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def request(self) -> ReadableSpan:
        (span,) = [
            s for s in self.finished() if s.kind is SpanKind.INTERNAL and s.name.startswith("chat ")
        ]
        return span

    def attempts(self) -> list[ReadableSpan]:
        return sorted(
            (s for s in self.finished() if s.kind is SpanKind.CLIENT),
            key=lambda s: s.start_time or 0,
        )

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, data point) of metric ``name``."""
        data = self.reader.get_metrics_data()
        found = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        found += [(dict(p.attributes or {}), p) for p in metric.data.data_points]
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(exporter, reader, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def chain(otel: Otel, *providers: ScriptedProvider, **kw: Any) -> ReliableProvider:
    kw.setdefault("max_retries", 0)
    llm = ReliableProvider([(p.name, p) for p in providers], rng=Bottom(), **kw)
    instrument(llm, otel.tracer_provider, otel.meter_provider)
    return llm


def offset(span: ReadableSpan, root: ReadableSpan) -> tuple[float, float]:
    """A span's start and end, in seconds after the root span's start."""
    assert span.start_time is not None and span.end_time is not None
    assert root.start_time is not None
    return ((span.start_time - root.start_time) / NS, (span.end_time - root.start_time) / NS)


def err500(delay: float = 0.25) -> Fail:
    return Fail(ProviderError("down", status_code=500), delay=delay)


async def test_success_span_and_attempt(otel: Otel, anyio_backend: object) -> None:
    """One request span "chat m" with GenAI attributes and usage, one child attempt span."""
    usage = TokenUsage(input_tokens=10, output_tokens=20)
    llm = chain(otel, ScriptedProvider([Reply("ok", delay=0.5, usage=usage)], name="openai"))
    response = await llm.chat(ChatRequest(USER), "gpt", 0.0)
    assert response.text == "ok"
    request = otel.request()
    (attempt,) = otel.attempts()
    assert (request.name, attempt.name) == ("chat gpt", "chat gpt")
    assert attempt.parent is not None and attempt.parent.span_id == request.context.span_id
    assert request.attributes is not None and attempt.attributes is not None
    assert {k: v for k, v in request.attributes.items() if k != "reliant.request.id"} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt",
        "gen_ai.response.model": "gpt",
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 20,
        "gen_ai.response.finish_reasons": ("stop",),
        "reliant.attempts": 1,
        "reliant.outcome": "success",
    }
    assert dict(attempt.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt",
        "reliant.attempt": 1,
        "reliant.outcome": "success",
    }
    assert offset(request, request) == (0.0, 0.5)
    assert offset(attempt, request) == (0.0, 0.5)
    assert request.status.status_code is StatusCode.UNSET


async def test_request_span_is_a_child_of_the_current_span(
    otel: Otel, anyio_backend: object
) -> None:
    """The request span's parent is whatever span was current when the call started."""
    llm = chain(otel, ScriptedProvider([Reply("ok")], name="p"))
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handler") as handler:
        await llm.simple_chat("hi", "m", 0.0)
    request = otel.request()
    assert request.parent is not None
    assert request.parent.span_id == handler.get_span_context().span_id


async def test_retry_spans_and_events(otel: Otel, anyio_backend: object) -> None:
    """Two 500s then success: three attempt spans at their times, two retry events."""
    p = ScriptedProvider([err500(), err500(), Reply("ok", delay=0.25)], name="p")
    llm = chain(otel, p, max_retries=2, base_backoff=1.0)
    await llm.simple_chat("hi", "m", 0.0)
    request = otel.request()
    attempts = otel.attempts()
    assert [offset(a, request) for a in attempts] == [(0.0, 0.25), (0.75, 1.0), (2.0, 2.25)]
    for failed in attempts[:2]:
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.attributes is not None
        assert failed.attributes["error.type"] == "500"
        assert failed.attributes["reliant.failure.reason"] == "retryable"
        assert failed.attributes["http.response.status_code"] == 500
    assert attempts[2].status.status_code is StatusCode.UNSET
    retries = [e for e in request.events if e.name == "reliant.retry"]
    assert [(e.attributes or {}).get("reliant.delay") for e in retries] == [0.5, 1.0]
    assert request.start_time is not None
    assert [(e.timestamp - request.start_time) / NS for e in retries] == [0.25, 1.0]
    (point,) = [p for a, p in otel.points("reliant.retries")]
    assert point.value == 2


async def test_fallback_span_event_and_counter(otel: Otel, anyio_backend: object) -> None:
    """A failover to the backup: a fallback event, the backup as provider, the counter at 1."""
    p = ScriptedProvider([err500()], name="p")
    b = ScriptedProvider([Reply("b")], name="b")
    llm = chain(otel, p, b)
    await llm.simple_chat("hi", "m", 0.0)
    request = otel.request()
    assert request.attributes is not None
    assert request.attributes["gen_ai.provider.name"] == "b"
    (fallback,) = [e for e in request.events if e.name == "reliant.fallback"]
    assert dict(fallback.attributes or {}) == {
        "reliant.from.provider": "p",
        "reliant.from.model": "m",
        "reliant.to.provider": "b",
        "reliant.to.model": "m",
        "reliant.reason": "retryable",
    }
    assert [(a, p.value) for a, p in otel.points("reliant.fallbacks")] == [
        (
            {
                "gen_ai.provider.name": "p",
                "gen_ai.request.model": "m",
                "reliant.reason": "retryable",
            },
            1,
        )
    ]


async def test_all_failed_span_is_an_error(otel: Otel, anyio_backend: object) -> None:
    """Every candidate failed: status ERROR, error.type FailoverError on span and metric."""
    llm = chain(otel, ScriptedProvider([err500()], name="p"), health=None)
    with pytest.raises(FailoverError):
        await llm.simple_chat("hi", "m", 0.0)
    request = otel.request()
    assert request.status.status_code is StatusCode.ERROR
    assert request.status.description is not None
    assert request.status.description.startswith("All providers/models failed")
    assert request.attributes is not None
    assert request.attributes["error.type"] == "FailoverError"
    assert request.attributes["reliant.outcome"] == "failure"
    assert "gen_ai.response.model" not in request.attributes
    ((attributes, point),) = otel.points("gen_ai.client.operation.duration")
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "p",
        "gen_ai.request.model": "m",
        "error.type": "FailoverError",
    }
    assert (point.count, point.sum) == (1, 0.25)
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS


async def test_cancelled_stream_ends_its_spans(otel: Otel, anyio_backend: object) -> None:
    """Leaving a stream at 1.5 s: both spans end at 1.5 s, status ERROR, error.type cancelled."""
    p = ScriptedProvider([Stream(["a", "b"], first_delay=0.5, gap=5.0)], name="p")
    llm = chain(otel, p)
    async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
        await chunks.__anext__()
        await anyio.sleep(1.0)
    request = otel.request()
    (attempt,) = otel.attempts()
    assert offset(request, request) == (0.0, 1.5)
    assert offset(attempt, request) == (0.0, 1.5)
    for span in (request, attempt):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["error.type"] == "cancelled"
        assert span.attributes["reliant.outcome"] == "cancelled"
    assert request.attributes is not None
    assert request.attributes["gen_ai.request.stream"] is True
    assert request.attributes["gen_ai.response.time_to_first_chunk"] == 0.5


async def test_cancelled_call_ends_its_spans(otel: Otel, anyio_backend: object) -> None:
    """A non-streaming call cancelled at 2 s while its attempt hangs: spans end at 2 s."""
    llm = chain(otel, ScriptedProvider([Hang()], name="p"))
    with anyio.move_on_after(2.0):
        await llm.simple_chat("hi", "m", 0.0)
    request = otel.request()
    (attempt,) = otel.attempts()
    assert offset(attempt, request) == (0.0, 2.0)
    assert request.status.status_code is StatusCode.ERROR


async def test_stream_cut_mid_way(otel: Otel, anyio_backend: object) -> None:
    """A stream that breaks after its first chunk: a stream_broken attempt, a StreamError."""
    p = ScriptedProvider([Stream.broken(["a", "b"], first_delay=0.25, gap=0.5)], name="p")
    llm = chain(otel, p)
    with pytest.raises(StreamError):
        async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
            async for _ in chunks:
                pass
    request = otel.request()
    (attempt,) = otel.attempts()
    assert attempt.attributes is not None and request.attributes is not None
    assert attempt.attributes["reliant.failure.reason"] == "stream_broken"
    assert attempt.attributes["error.type"] == "StreamError"
    assert attempt.attributes["gen_ai.response.time_to_first_chunk"] == 0.25
    assert offset(attempt, request) == (0.0, 0.75)
    assert request.attributes["error.type"] == "StreamError"
    assert request.attributes["gen_ai.response.time_to_first_chunk"] == 0.25
    assert [e.name for e in request.events] == ["reliant.first_chunk"]


async def test_stream_success_metrics(otel: Otel, anyio_backend: object) -> None:
    """A stream: duration, time to first chunk and token usage (input, output) are measured."""
    usage = TokenUsage(input_tokens=7, output_tokens=300)
    llm = chain(otel, ScriptedProvider([Reply("hello", delay=0.25, usage=usage)], name="p"))
    async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
        assert [c.delta async for c in chunks] == ["hello", ""]
    (attempt,) = otel.attempts()
    assert attempt.attributes is not None
    assert (
        attempt.attributes["reliant.chunks"],
        attempt.attributes["gen_ai.usage.output_tokens"],
    ) == (
        2,
        300,
    )
    base = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "p",
        "gen_ai.request.model": "m",
        "gen_ai.response.model": "m",
    }
    ((attributes, ttfc),) = otel.points("gen_ai.client.operation.time_to_first_chunk")
    assert (attributes, ttfc.sum) == (base, 0.25)
    ((attributes, duration),) = otel.points("gen_ai.client.operation.duration")
    assert (attributes, duration.sum) == (base, 0.25)
    tokens = sorted(
        (a["gen_ai.token.type"], p.sum) for a, p in otel.points("gen_ai.client.token.usage")
    )
    assert tokens == [("input", 7), ("output", 300)]
    for attributes, _ in otel.points("gen_ai.client.token.usage"):
        assert {k: v for k, v in attributes.items() if k != "gen_ai.token.type"} == base


async def test_hedge_and_circuit_counters(otel: Otel, anyio_backend: object) -> None:
    """A hedge race: the loser's span ends at 1.25 unset, hedges and circuit opens are counted."""
    p = ScriptedProvider([Stream(["p"], first_delay=3.0)], name="p")
    b = ScriptedProvider([Stream(["b"], first_delay=0.25)], name="b")
    llm = chain(otel, p, b, hedge=Hedge(after=1.0))
    async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
        assert [c.delta async for c in chunks] == ["b", ""]
    request = otel.request()
    lost, won = otel.attempts()
    assert (offset(lost, request), offset(won, request)) == ((0.0, 1.25), (1.0, 1.25))
    assert lost.attributes is not None and won.attributes is not None
    assert lost.attributes["reliant.outcome"] == "hedge_lost"
    assert lost.status.status_code is StatusCode.UNSET
    assert won.attributes["reliant.hedge"] is True
    assert [e.name for e in request.events] == [
        "reliant.hedge",
        "reliant.hedge_lost",
        "reliant.first_chunk",
    ]
    assert [p.value for _, p in otel.points("reliant.hedges")] == [1]

    dead = ScriptedProvider([err500()], name="dead")
    llm = chain(otel, dead, b, health=HealthPolicy(open_after=1))
    await llm.simple_chat("hi", "m", 0.0)
    assert [(a, p.value) for a, p in otel.points("reliant.circuit.opens")] == [
        ({"gen_ai.provider.name": "dead", "gen_ai.request.model": "m"}, 1)
    ]


async def test_uninstrument_stops_spans(otel: Otel) -> None:
    """After uninstrument() requests make no spans; instrument() wants a ReliableProvider."""
    llm = ReliableProvider([("p", ScriptedProvider([Reply("ok")]))])
    handle = instrument(llm, otel.tracer_provider, otel.meter_provider)
    await llm.simple_chat("hi", "m", 0.0)
    handle.uninstrument()
    await llm.simple_chat("hi", "m", 0.0)
    assert len(otel.finished()) == 2  # one request, one attempt
    with pytest.raises(TypeError, match="ReliableProvider"):
        instrument(ScriptedProvider([Reply()]))  # type: ignore[arg-type]


def test_import_reliant_does_not_import_opentelemetry() -> None:
    """`import reliant` and even `import reliant.otel` load no opentelemetry module."""
    code = (
        "import sys, reliant, reliant.otel; "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- no key anywhere --------------------------------------------------------------------------

# A key has letters and digits: an all-letter body can be a word the telemetry
# says anyway (hypothesis found "AttemptSucceeded", an event's class name).
KEY_BODY = st.text(string.ascii_letters + string.digits + "-_", min_size=16, max_size=40).filter(
    lambda s: any(c.isdigit() for c in s) and any(c.isalpha() for c in s)
)


def _everything(otel: Otel, events: list[ReliantEvent], record: object) -> str:
    parts: list[str] = [repr(events), repr(record)]
    for span in otel.finished():
        parts += [span.name, repr(dict(span.attributes or {})), repr(span.status.description)]
        for event in span.events:
            parts += [event.name, repr(dict(event.attributes or {}))]
    for name in (
        "gen_ai.client.operation.duration",
        "reliant.retries",
        "reliant.fallbacks",
        "reliant.circuit.opens",
    ):
        parts += [repr(a) for a, _ in otel.points(name)]
    return "\n".join(parts)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(body=KEY_BODY, prefixed=st.booleans(), status=st.sampled_from([401, 429, 500, None]))
def test_no_key_in_any_span_metric_or_event(
    backend: str, body: str, prefixed: bool, status: int | None
) -> None:
    """Keys in provider errors (a known key shape, or a registered key) never reach telemetry."""
    key = "sk-" + body if prefixed else body
    forget = register_secret(None if prefixed else key)  # as the HTTP providers register theirs
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    otel = Otel(exporter, reader, tracer_provider, meter_provider)
    events: list[ReliantEvent] = []
    error = ProviderError(
        f"upstream said: invalid key {key} (Authorization: Bearer {key})",
        status_code=status,
        body=f'{{"error": "bad key {key}"}}',
    )
    primary = ScriptedProvider([Fail(error)], name="p")
    broken = ScriptedProvider([Stream.broken(["a"], message=f"reset, key={key}")], name="b")
    llm = chain(otel, primary, broken, max_retries=1, base_backoff=0.05, on_event=events.append)

    async def main() -> object:
        with fallback_scope():
            try:
                async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
                    async for _ in chunks:
                        pass
            except (StreamError, FailoverError):
                pass
            return take_last_request_record()

    try:
        record = run_on(backend, main)
        assert events and otel.finished()
        text = _everything(otel, events, record)
        assert key not in text
        assert "[REDACTED]" in text  # the key was there, and scrubbed
    finally:
        forget()
        tracer_provider.shutdown()
        meter_provider.shutdown()


async def test_routing_decision_is_on_the_request_span(otel: Otel, anyio_backend: object) -> None:
    """The request span carries routing's strategy, choice and reason; an event keeps the order."""
    from reliant import Routing

    a = ScriptedProvider([Reply("ok")], name="a")
    b = ScriptedProvider([Reply("ok")], name="b")
    llm = chain(otel, a, b, routing=Routing(tiers=[["a", "b"]], strategy="least_busy"))
    await llm.chat(ChatRequest(USER), "gpt", 0.0)
    request = otel.request()
    assert request.attributes is not None
    chosen = request.attributes["reliant.routing.chosen"]
    assert chosen in ("a", "b")
    assert request.attributes["reliant.routing.strategy"] == "least_busy"
    assert request.attributes["reliant.routing.reason"] == "fewest requests in flight"
    (route,) = [e for e in request.events if e.name == "reliant.route"]
    assert route.attributes is not None
    assert tuple(route.attributes["reliant.routing.order"])[:1] == (chosen,)
    assert request.attributes["gen_ai.provider.name"] == chosen
