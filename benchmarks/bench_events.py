"""What observing a request costs: no listener, a hook, OpenTelemetry (no-op and SDK).

In process, on an instant provider (answers at once; streams two chunks and
the final one), thousands of calls per figure, for a non-streaming call and
a stream. Modes, interleaved so machine noise hits them alike:

- ``none``: no listener, outside ``fallback_scope()``: no event is built.
- ``record``: no listener, inside ``fallback_scope()``: the request record only.
- ``hook``: ``on_event=`` a function that does nothing.
- ``otel_noop``: ``reliant.otel.instrument`` with OpenTelemetry's no-op providers.
- ``otel_sdk``: the SDK with ``SimpleSpanProcessor(InMemorySpanExporter)`` and an
  ``InMemoryMetricReader`` (spans are cleared between runs).

Prints microseconds per request and per event, writes results/events.json.

    python benchmarks/bench_events.py
"""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator, Awaitable, Callable

import trio
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider

from _util import best_of, row, write_json
from reliant import (
    ChatMessage,
    Provider,
    ReliableProvider,
    ReliantEvent,
    StreamChunk,
    StreamOptions,
    fallback_scope,
    stream_from_generator,
)
from reliant.otel import instrument

MESSAGES = [ChatMessage.user("hello")]
MODES = ("none", "record", "hook", "otel_noop", "otel_sdk")


class Instant(Provider):
    """Answers at once; streams two chunks and the final one."""

    @property
    def supports_streaming(self) -> bool:
        return True

    async def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> str:
        return "ok"

    @stream_from_generator
    async def stream_chat_with_system(
        self,
        system_prompt: str | None,
        message: str,
        model: str,
        temperature: float,
        options: StreamOptions = StreamOptions(),  # noqa: B008
    ) -> AsyncIterator[StreamChunk]:
        yield StreamChunk("a")
        yield StreamChunk("b")
        yield StreamChunk.final()


def nothing(event: ReliantEvent) -> None:
    pass


def providers() -> dict[str, tuple[ReliableProvider, Callable[[], None]]]:
    """Mode -> (provider, what to run between timed runs)."""

    def fresh() -> ReliableProvider:
        return ReliableProvider([("p", Instant()), ("q", Instant())])

    out: dict[str, tuple[ReliableProvider, Callable[[], None]]] = {}
    out["none"] = (fresh(), lambda: None)
    out["record"] = (fresh(), lambda: None)
    hooked = ReliableProvider([("p", Instant()), ("q", Instant())], on_event=nothing)
    out["hook"] = (hooked, lambda: None)
    noop = fresh()
    instrument(noop, NoOpTracerProvider(), NoOpMeterProvider())
    out["otel_noop"] = (noop, lambda: None)
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    sdk = fresh()
    instrument(sdk, tracer_provider, meter_provider)
    out["otel_sdk"] = (sdk, exporter.clear)
    return out


def call(llm: ReliableProvider, scoped: bool) -> Callable[[], Awaitable[None]]:
    async def go() -> None:
        await llm.chat_with_history(MESSAGES, "m", 0.0)

    async def go_scoped() -> None:
        with fallback_scope():
            await llm.chat_with_history(MESSAGES, "m", 0.0)

    return go_scoped if scoped else go


def stream(llm: ReliableProvider, scoped: bool) -> Callable[[], Awaitable[None]]:
    async def go() -> None:
        async with llm.stream_chat_with_history(MESSAGES, "m", 0.0) as chunks:
            async for _ in chunks:
                pass

    async def go_scoped() -> None:
        with fallback_scope():
            await go()

    return go_scoped if scoped else go


async def events_per_request(kind: str) -> int:
    seen: list[ReliantEvent] = []
    llm = ReliableProvider([("p", Instant())], on_event=seen.append)
    await (call if kind == "call" else stream)(llm, False)()
    return len(seen)


async def main() -> None:
    modes = providers()
    figures: dict[str, dict[str, float]] = {}
    for kind, make, inner in (("call", call, 4000), ("stream", stream, 1000)):
        samples: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(9):
            for mode in MODES:
                llm, reset = modes[mode]
                samples[mode].append(
                    await best_of(make(llm, mode == "record"), repeat=3, inner=inner)
                )
                reset()
        figures[kind] = {m: statistics.median(s) * 1e6 for m, s in samples.items()}
        figures[kind]["events_per_request"] = await events_per_request(kind)

    for kind, label in (("call", "non-streaming call"), ("stream", "2-chunk stream")):
        fig = figures[kind]
        n = int(fig["events_per_request"])
        base = fig["none"] / 1e6
        print(f"{label} ({n} events per request), us per request:")
        for mode in MODES:
            print(row(mode, fig[mode] / 1e6, base))
        per_event = (fig["hook"] - fig["none"]) / n
        fig["hook_per_event_us"] = per_event
        added = fig["hook"] - fig["none"]
        sdk = fig["otel_sdk"] - fig["none"]
        print(f"  a hook costs {per_event:.2f} us per event ({added:.2f} us per request);")
        print(f"  the OpenTelemetry SDK {sdk:.1f} us per request")
    path = write_json("events.json", {"us_per_request": figures})
    print(f"wrote {path}")


if __name__ == "__main__":
    trio.run(main)
