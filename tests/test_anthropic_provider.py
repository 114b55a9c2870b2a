"""Anthropic (Messages API) against the fake server over real loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from reliant import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    Final,
    ProviderError,
    StreamChunk,
    StreamError,
    StreamOptions,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    UsageEvent,
)
from reliant.providers import Anthropic
from reliant.providers._anthropic import _tool_call
from reliant.testing.fake_server import Behavior, FakeLLMServer

pytestmark = pytest.mark.anyio

KEY = "anthropic-custom-key-0001"
TEXT = "tok0 tok1 tok2 tok3 tok4 "
ARGS = Behavior().tool_arguments
WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city.",
    {"type": "object", "properties": {"location": {"type": "string"}}},
)


@pytest.fixture
async def provider(server: FakeLLMServer) -> AsyncIterator[Anthropic]:
    async with Anthropic(base_url=server.anthropic_base_url, api_key=KEY) as p:
        yield p


async def collect(stream: Any) -> list[Any]:
    async with stream as items:
        return [item async for item in items]


def final(reason: str, raw: str, model: str, usage: TokenUsage | None) -> StreamChunk:
    """The final chunk carrying what the end of a stream told."""
    return StreamChunk(
        is_final=True,
        finish_reason=reason,  # type: ignore[arg-type]
        raw_finish_reason=raw,
        model=model,
        usage=usage,
    )


# -- requests on the wire -----------------------------------------------------------------


async def test_chat_with_system_payload(server: FakeLLMServer, provider: Anthropic) -> None:
    """The system prompt goes in ``system``; model, max_tokens, temperature and headers are sent."""
    assert await provider.chat_with_system("Be brief.", "Hi", "ok", 0.7) == TEXT
    (request,) = server.requests
    assert request.method == "POST"
    assert request.path == "/v1/messages"
    assert request.json == {
        "model": "ok",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.7,
        "system": "Be brief.",
    }
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers


async def test_no_system_field_without_prompt(server: FakeLLMServer, provider: Anthropic) -> None:
    """Without a system prompt the ``system`` field is left out."""
    await provider.simple_chat("Hi", "ok", 0)
    assert "system" not in server.requests[0].json


async def test_history(server: FakeLLMServer, provider: Anthropic) -> None:
    """System messages join into ``system``; tool results travel as user turns."""
    history = [
        ChatMessage.system("S1"),
        ChatMessage.user("u1"),
        ChatMessage.assistant("a1"),
        ChatMessage.tool("t1"),
        ChatMessage.system("S2"),
        ChatMessage.user("u2"),
    ]
    assert await provider.chat_with_history(history, "ok", 0) == TEXT
    sent = server.requests[0].json
    assert sent["system"] == "S1\n\nS2"
    assert sent["messages"] == [
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "t1"},
        {"role": "user", "content": "u2"},
    ]


async def test_constructor_options(server: FakeLLMServer) -> None:
    """max_tokens, anthropic_version and extra_headers are applied to every request."""
    async with Anthropic(
        base_url=server.anthropic_base_url,
        api_key=KEY,
        max_tokens=128,
        anthropic_version="2099-01-01",
        extra_headers={"anthropic-beta": "tools-2024"},
    ) as provider:
        await provider.simple_chat("x", "ok", 0)
        await collect(provider.stream_chat_with_system(None, "x", "ok", 0))
    for request in server.requests:
        assert request.json["max_tokens"] == 128
        assert request.headers["anthropic-version"] == "2099-01-01"
        assert request.headers["anthropic-beta"] == "tools-2024"


async def test_key_from_environment(server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no api_key, ANTHROPIC_API_KEY is read at construction."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key-abcdef")
    async with Anthropic(base_url=server.anthropic_base_url) as provider:
        await provider.simple_chat("x", "ok", 0)
    assert server.requests[0].headers["x-api-key"] == "env-key-abcdef"


async def test_tools_and_tool_use(server: FakeLLMServer, provider: Anthropic) -> None:
    """Tools go out with ``input_schema``; ``tool_use`` blocks come back as tool calls."""
    response = await provider.chat_with_tools([ChatMessage.user("w?")], [WEATHER], "tools", 0)
    assert server.requests[0].json["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city.",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
        }
    ]
    assert response == ChatResponse(
        text=None,
        tool_calls=(ToolCall("call_0_0", "get_weather", ARGS),),
        usage=TokenUsage(10, 0, 0),
        finish_reason="tool_calls",
        raw_finish_reason="tool_use",
        model="tools",
    )


async def test_chat_usage_and_thinking(server: FakeLLMServer, provider: Anthropic) -> None:
    """chat() returns text, thinking as reasoning, and usage with cached input tokens."""
    server.script(None, [Behavior(chunks=2, reasoning=1, input_tokens=50, cached_tokens=40)])
    response = await provider.chat(ChatRequest([ChatMessage.user("q")]), "m", 0)
    assert response == ChatResponse(
        text="tok0 tok1 ",
        usage=TokenUsage(input_tokens=50, output_tokens=3, cached_input_tokens=40),
        reasoning_content="think0 ",
        finish_reason="stop",
        raw_finish_reason="end_turn",
        model="m",
    )


async def test_capabilities(provider: Anthropic) -> None:
    """Anthropic streams, has native tools and streams tool events."""
    assert provider.supports_streaming
    assert provider.supports_native_tools
    assert provider.supports_streaming_tool_events


# -- streams ------------------------------------------------------------------------------


async def test_stream_chat_with_system(server: FakeLLMServer, provider: Anthropic) -> None:
    """Text deltas stream as chunks ending with the final chunk; ``stream`` is true."""
    chunks = await collect(provider.stream_chat_with_system("S", "Hi", "ok:chunks=3", 0.1))
    assert chunks == [
        StreamChunk("tok0 "),
        StreamChunk("tok1 "),
        StreamChunk("tok2 "),
        final("stop", "end_turn", "ok:chunks=3", TokenUsage(10, 3, 0)),
    ]
    assert server.requests[0].json == {
        "model": "ok:chunks=3",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.1,
        "system": "S",
        "stream": True,
    }


async def test_stream_history_tokens_and_thinking(
    server: FakeLLMServer, provider: Anthropic
) -> None:
    """Thinking deltas arrive as reasoning chunks; token estimates when asked."""
    history = [ChatMessage.system("S"), ChatMessage.user("q")]
    chunks = await collect(
        provider.stream_chat_with_history(
            history, "ok:chunks=2:reasoning=1", 0, StreamOptions(count_tokens=True)
        )
    )
    assert chunks == [
        StreamChunk("", "think0 "),
        StreamChunk("tok0 ", None, False, 2),
        StreamChunk("tok1 ", None, False, 2),
        final("stop", "end_turn", "ok:chunks=2:reasoning=1", TokenUsage(10, 3, 0)),
    ]
    assert server.requests[0].json["system"] == "S"


async def test_stream_chat_events(server: FakeLLMServer, provider: Anthropic) -> None:
    """stream_chat yields text deltas, usage (input from message_start, output after), Final."""
    server.script(None, [Behavior(chunks=2, cached_tokens=7)])
    events = await collect(provider.stream_chat(ChatRequest([ChatMessage.user("q")]), "m", 0))
    assert events == [
        TextDelta("tok0 "),
        TextDelta("tok1 "),
        UsageEvent(TokenUsage(input_tokens=10, output_tokens=2, cached_input_tokens=7)),
        Final("stop", "end_turn", "m", TokenUsage(10, 2, 7)),
    ]


async def test_stream_chat_tool_use(server: FakeLLMServer, provider: Anthropic) -> None:
    """``input_json_delta`` pieces are joined into whole tool calls when each block stops."""
    lookup = ToolSpec("lookup", "Look up.", {"type": "object"})
    server.script(None, [Behavior(kind="tools", calls=2, text="Checking.")])
    request = ChatRequest([ChatMessage.user("q")], [WEATHER, lookup])
    events = await collect(provider.stream_chat(request, "m", 0))
    assert events == [
        TextDelta("Checking."),
        ToolCallEvent(ToolCall("call_0_0", "get_weather", ARGS)),
        ToolCallEvent(ToolCall("call_0_1", "lookup", ARGS)),
        UsageEvent(TokenUsage(10, 1, 0)),
        Final("tool_calls", "tool_use", "m", TokenUsage(10, 1, 0)),
    ]
    assert [t["name"] for t in server.requests[0].json["tools"]] == ["get_weather", "lookup"]


async def test_stream_empty(provider: Anthropic) -> None:
    """A stream of only ``message_stop`` is a valid empty answer."""
    assert await collect(provider.stream_chat_with_system(None, "q", "empty", 0)) == [
        StreamChunk.final()
    ]
    assert await collect(provider.stream_chat(ChatRequest([]), "empty", 0)) == [Final()]


async def test_overloaded_inband_before_commit(provider: Anthropic) -> None:
    """An ``overloaded_error`` event before any text is a ProviderError with status 529."""
    with pytest.raises(ProviderError) as info:
        await collect(provider.stream_chat_with_system(None, "q", "inband_error:status=529", 0))
    assert info.value.status_code == 529
    assert str(info.value).startswith("anthropic API error (529 Overloaded): ")
    assert "overloaded_error" in str(info.value)


async def test_rate_limit_inband_after_commit(provider: Anthropic) -> None:
    """A ``rate_limit_error`` event after text is a StreamError caused by a 429 ProviderError."""
    seen = []
    with pytest.raises(StreamError) as info:
        async with provider.stream_chat(
            ChatRequest([]), "inband_error:after=2:status=429", 0
        ) as events:
            async for event in events:
                seen.append(event)
    assert seen == [TextDelta("tok0 "), TextDelta("tok1 ")]
    cause = info.value.__cause__
    assert isinstance(cause, ProviderError)
    assert cause.status_code == 429


async def test_tool_input_fallback_and_pings(provider: Anthropic) -> None:
    """A tool block without deltas uses its start ``input``; pings are skipped."""
    assert _tool_call(["id", "f", [], {"a": 1}]) == ToolCall("id", "f", '{"a": 1}')
    assert _tool_call(["id", "f", [], None]) == ToolCall("id", "f", "{}")
    chunks = await collect(provider.stream_chat_with_system(None, "q", "ok:chunks=1", 0))
    assert chunks == [
        StreamChunk("tok0 "),
        final("stop", "end_turn", "ok:chunks=1", TokenUsage(10, 1, 0)),
    ]


async def test_leaving_a_stream_early_closes_the_connection(
    server: FakeLLMServer, provider: Anthropic
) -> None:
    """Leaving the ``async with`` early closes the upstream connection at once."""
    async with provider.stream_chat(ChatRequest([]), "ok:chunks=50:gap=2", 0) as events:
        async for _ in events:
            break
        left_at = anyio.current_time()
    assert await server.wait_for_disconnect(0) == left_at
    assert server.aborted == [0]


async def test_warmup_and_repr(server: FakeLLMServer, provider: Anthropic) -> None:
    """warmup GETs the model list and never raises; repr hides the key."""
    await provider.warmup()
    assert server.requests[0].path == "/v1/models"
    assert repr(provider) == f"Anthropic(name='anthropic', base_url='{server.anthropic_base_url}')"
    async with Anthropic(base_url="http://127.0.0.1:9", api_key=KEY) as dead:
        await dead.warmup()
