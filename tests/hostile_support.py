"""Helpers shared by the hostile-upstream tests (``test_hostile``, ``test_native_hostile``).

Driving a provider once, gzip bombs, the JSON-path mutations of the
random-field property, the type check every decoded item must pass, and
feeding a provider a body without a network.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

from reliant import (
    ChatMessage,
    ChatRequest,
    Final,
    ReasoningDelta,
    ReliantError,
    StreamChunk,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    UsageEvent,
)
from reliant.providers._http import HTTPProvider
from reliant.testing.fake_server import Behavior, gzip_bomb


def raw_body(body: str | bytes, content_type: str = "text/event-stream") -> Behavior:
    """A 200 with exactly this body."""
    text = body if isinstance(body, str) else body.decode()
    return Behavior(kind="status", status=200, body=text, headers={"content-type": content_type})


async def drain_stream(provider: Any, model: str, events: bool = False) -> list[Any]:
    opened = (
        provider.stream_chat(ChatRequest([ChatMessage.user("q")]), model, 0.0)
        if events
        else provider.stream_chat_with_history([ChatMessage.user("q")], model, 0.0)
    )
    async with opened as items:
        return [item async for item in items]


async def call(provider: Any, model: str, stream: bool) -> Any:
    if stream:
        return await drain_stream(provider, model, events=True)
    return await provider.chat(ChatRequest([ChatMessage.user("q")]), model, 0.0)


@functools.cache
def bomb(size: int, unit: bytes = b"a") -> bytes:
    return gzip_bomb(size, unit=unit)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


def replaced(template: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(template))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


def well_typed(item: Any) -> bool:
    def opt_int(x: Any) -> bool:
        return x is None or (type(x) is int and x >= 0)

    def opt_str(x: Any) -> bool:
        return x is None or type(x) is str

    def end_facts(x: StreamChunk | Final) -> bool:
        return (
            x.finish_reason in (None, "stop", "length", "tool_calls", "content_filter", "other")
            and opt_str(x.raw_finish_reason)
            and opt_str(x.model)
            and (x.usage is None or well_typed(x.usage))
        )

    if isinstance(item, StreamChunk):
        return (
            type(item.delta) is str
            and opt_str(item.reasoning)
            and type(item.token_count) is int
            and end_facts(item)
        )
    if isinstance(item, TextDelta | ReasoningDelta):
        return type(item.text) is str
    if isinstance(item, ToolCallEvent):
        c = item.call
        return type(c.id) is str and type(c.name) is str and type(c.arguments) is str
    if isinstance(item, UsageEvent):
        u = item.usage
        return (
            opt_int(u.input_tokens) and opt_int(u.output_tokens) and opt_int(u.cached_input_tokens)
        )
    if isinstance(item, TokenUsage):
        return well_typed(UsageEvent(item))
    if isinstance(item, ToolCall):
        return well_typed(ToolCallEvent(item))
    return isinstance(item, Final) and end_facts(item)


def fed(provider: HTTPProvider, body: bytes) -> None:
    """Make ``provider`` read ``body`` as its SSE stream, without a network."""

    @asynccontextmanager
    async def open_event_stream(url: str, payload: Any) -> AsyncIterator[AsyncIterator[bytes]]:
        async def chunks() -> AsyncGenerator[bytes, None]:
            for i in range(0, len(body), 7):
                yield body[i : i + 7]

        async with aclosing(chunks()) as pieces:
            yield pieces

    provider._open_event_stream = open_event_stream  # type: ignore[method-assign]


def lied_to(
    provider: HTTPProvider, lie: Any, stream_body: bytes | None, events: bool
) -> Callable[[], Awaitable[Any]]:
    """A call of ``provider`` that reads ``lie``: streamed as ``stream_body``, or as its answer."""
    if stream_body is not None:
        fed(provider, stream_body)
        return lambda: drain_stream(provider, "m", events)

    async def post_json(url: str, payload: Any) -> Any:
        if type(lie) is not dict:
            raise provider._invalid_response("unexpected response")
        return lie

    provider._post_json = post_json  # type: ignore[method-assign]

    async def run() -> Any:
        tools = [ToolSpec("f", "d", {})]
        return await provider.chat(ChatRequest([ChatMessage.user("q")], tools), "m", 0.0)

    return run


async def outcome_of(run: Callable[[], Awaitable[Any]]) -> None:
    """Run ``run``: a reliant error, or a result whose every item is well typed."""
    try:
        result = await run()
    except ReliantError:
        return
    items = result if isinstance(result, list) else [result]
    for item in items:
        if hasattr(item, "tool_calls"):  # ChatResponse
            assert item.text is None or type(item.text) is str
            assert item.reasoning_content is None or type(item.reasoning_content) is str
            assert all(well_typed(c) for c in item.tool_calls)
            assert item.usage is None or well_typed(item.usage)
        else:
            assert well_typed(item), item
