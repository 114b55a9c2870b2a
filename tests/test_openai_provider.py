"""OpenAICompatible against the fake server over real loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from reliant import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    Final,
    ProviderError,
    StreamChunk,
    StreamOptions,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    UsageEvent,
)
from reliant.providers import DEFAULT_TIMEOUT, OpenAICompatible, create_client
from reliant.providers._openai import _accumulate, _chunk_from_delta, _finish
from reliant.testing.fake_server import Behavior, FakeLLMServer

pytestmark = pytest.mark.anyio

KEY = "sk-test-0123456789abcdef"
SSE = {"content-type": "text/event-stream"}
TEXT = "tok0 tok1 tok2 tok3 tok4 "
ARGS = Behavior().tool_arguments
WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city.",
    {"type": "object", "properties": {"location": {"type": "string"}}},
)


@pytest.fixture
async def provider(server: FakeLLMServer) -> AsyncIterator[OpenAICompatible]:
    async with OpenAICompatible(base_url=server.openai_base_url, api_key=KEY) as p:
        yield p


async def collect(stream: Any) -> list[Any]:
    async with stream as items:
        return [item async for item in items]


def text_of(chunks: list[StreamChunk]) -> str:
    return "".join(c.delta for c in chunks)


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


async def test_chat_with_system_payload(server: FakeLLMServer, provider: OpenAICompatible) -> None:
    """chat_with_system sends model, system + user messages, temperature, stream false."""
    assert await provider.chat_with_system("Be brief.", "Hi", "ok", 0.3) == TEXT
    (request,) = server.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.json == {
        "model": "ok",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "temperature": 0.3,
        "stream": False,
    }
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"


async def test_no_system_prompt(server: FakeLLMServer, provider: OpenAICompatible) -> None:
    """Without a system prompt only the user message is sent; simple_chat works too."""
    assert await provider.simple_chat("Hi", "ok", 0.0) == TEXT
    assert server.requests[0].json["messages"] == [{"role": "user", "content": "Hi"}]


async def test_history_is_sent_as_is(server: FakeLLMServer, provider: OpenAICompatible) -> None:
    """chat_with_history sends every message with its role, in order."""
    history = [
        ChatMessage.system("S"),
        ChatMessage.user("u1"),
        ChatMessage.assistant("a1"),
        ChatMessage.tool("t1"),
        ChatMessage.user("u2"),
    ]
    assert await provider.chat_with_history(history, "ok", 1.0) == TEXT
    assert server.requests[0].json["messages"] == [
        {"role": m.role, "content": m.content} for m in history
    ]


async def test_tools_payload_and_tool_calls(
    server: FakeLLMServer, provider: OpenAICompatible
) -> None:
    """chat_with_tools sends OpenAI function tools and parses tool calls and usage."""
    response = await provider.chat_with_tools([ChatMessage.user("w?")], [WEATHER], "tools", 0.0)
    assert server.requests[0].json["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city.",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
            },
        }
    ]
    assert response == ChatResponse(
        text=None,
        tool_calls=(ToolCall("call_0_0", "get_weather", ARGS),),
        usage=TokenUsage(10, 0, 0),
        finish_reason="tool_calls",
        raw_finish_reason="tool_calls",
        model="tools",
    )
    assert response.has_tool_calls


async def test_chat_request(server: FakeLLMServer, provider: OpenAICompatible) -> None:
    """chat() returns text, usage and reasoning; tools in the request are sent natively."""
    server.script("m", [Behavior(chunks=2, reasoning=1, cached_tokens=3)])
    response = await provider.chat(ChatRequest([ChatMessage.user("q")]), "m", 0.5)
    assert response == ChatResponse(
        text="tok0 tok1 ",
        usage=TokenUsage(10, 3, 3),
        reasoning_content="think0 ",
        finish_reason="stop",
        raw_finish_reason="stop",
        model="m",
    )
    assert "tools" not in server.requests[0].json
    response = await provider.chat(ChatRequest([ChatMessage.user("q")], [WEATHER]), "tools", 0)
    assert response.tool_calls[0].name == "get_weather"
    assert "tools" in server.requests[1].json


async def test_key_from_environment(server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no api_key, OPENAI_API_KEY is read at construction."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-123456")
    provider = OpenAICompatible(base_url=server.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-changed-later-1")
    async with provider:
        await provider.simple_chat("x", "ok", 0)
    assert server.requests[0].headers["authorization"] == "Bearer sk-from-env-123456"


async def test_no_key_sends_no_authorization(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without any key (a local server) no Authorization header is sent."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with OpenAICompatible(base_url=server.openai_base_url) as provider:
        await provider.simple_chat("x", "ok", 0)
    assert "authorization" not in server.requests[0].headers


async def test_extra_headers(server: FakeLLMServer) -> None:
    """extra_headers go out with every request, streamed or not."""
    headers = {"OpenAI-Organization": "org-1", "X-Title": "reliant"}
    async with OpenAICompatible(
        base_url=server.openai_base_url, api_key=KEY, extra_headers=headers
    ) as provider:
        await provider.simple_chat("x", "ok", 0)
        await collect(provider.stream_chat_with_system(None, "x", "ok", 0))
    for request in server.requests:
        assert request.headers["openai-organization"] == "org-1"
        assert request.headers["x-title"] == "reliant"


# -- streams ------------------------------------------------------------------------------


async def test_stream_chat_with_system(server: FakeLLMServer, provider: OpenAICompatible) -> None:
    """Text streams chunk by chunk and ends with one final chunk; usage is requested."""
    chunks = await collect(provider.stream_chat_with_system("S", "Hi", "ok:chunks=3", 0.2))
    assert chunks == [
        StreamChunk("tok0 "),
        StreamChunk("tok1 "),
        StreamChunk("tok2 "),
        final("stop", "stop", "ok:chunks=3", TokenUsage(10, 3, 0)),
    ]
    assert server.requests[0].json == {
        "model": "ok:chunks=3",
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}],
        "temperature": 0.2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_stream_history_with_token_counts(
    server: FakeLLMServer, provider: OpenAICompatible
) -> None:
    """stream_chat_with_history sends the history and estimates tokens when asked."""
    history = [ChatMessage.user("a"), ChatMessage.assistant("b"), ChatMessage.user("c")]
    server.script(None, [Behavior(text="Hello brave new world")])
    chunks = await collect(
        provider.stream_chat_with_history(history, "m", 0.0, StreamOptions(count_tokens=True))
    )
    assert text_of(chunks) == "Hello brave new world"
    assert [c.token_count for c in chunks] == [2, 2, 1, 2, 0]
    assert chunks[-1].is_final
    assert server.requests[0].json["messages"] == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]


async def test_stream_reasoning(provider: OpenAICompatible) -> None:
    """``reasoning_content`` deltas arrive as chunks with ``reasoning`` set."""
    chunks = await collect(
        provider.stream_chat_with_system(None, "q", "ok:chunks=1:reasoning=2", 0)
    )
    assert chunks == [
        StreamChunk("", "think0 "),
        StreamChunk("", "think1 "),
        StreamChunk("tok0 "),
        final("stop", "stop", "ok:chunks=1:reasoning=2", TokenUsage(10, 3, 0)),
    ]


def test_stream_reasoning_field_variants() -> None:
    """The ``reasoning`` delta field of some servers is read like ``reasoning_content``."""
    assert _chunk_from_delta({"reasoning": "r"}, False) == StreamChunk("", "r")
    assert _chunk_from_delta({"content": "t", "reasoning_content": None}, True) == StreamChunk(
        "t", None, False, 1
    )
    assert _chunk_from_delta({"role": "assistant", "content": ""}, False) is None


async def test_stream_chat_events(server: FakeLLMServer, provider: OpenAICompatible) -> None:
    """stream_chat yields text deltas, then usage, then Final."""
    events = await collect(
        provider.stream_chat(ChatRequest([ChatMessage.user("q")]), "ok:chunks=2", 0)
    )
    assert events == [
        TextDelta("tok0 "),
        TextDelta("tok1 "),
        UsageEvent(TokenUsage(10, 2, 0)),
        Final("stop", "stop", "ok:chunks=2", TokenUsage(10, 2, 0)),
    ]
    assert "tools" not in server.requests[0].json


async def test_stream_chat_tool_calls(server: FakeLLMServer, provider: OpenAICompatible) -> None:
    """Tool-call deltas are accumulated by index into whole calls at finish_reason."""
    lookup = ToolSpec("lookup", "Look up.", {"type": "object"})
    request = ChatRequest([ChatMessage.user("q")], [WEATHER, lookup])
    server.script(None, [Behavior(kind="tools", calls=2, text="Let me check.")])
    events = await collect(provider.stream_chat(request, "m", 0))
    assert events == [
        TextDelta("Let "),
        TextDelta("me "),
        TextDelta("check."),
        ToolCallEvent(ToolCall("call_0_0", "get_weather", ARGS)),
        ToolCallEvent(ToolCall("call_0_1", "lookup", ARGS)),
        UsageEvent(TokenUsage(10, 3, 0)),
        Final("tool_calls", "tool_calls", "m", TokenUsage(10, 3, 0)),
    ]
    assert [t["function"]["name"] for t in server.requests[0].json["tools"]] == [
        "get_weather",
        "lookup",
    ]


def test_tool_call_accumulation_edge_cases() -> None:
    """Deltas without index start a new call on a new id; empty arguments become ``{}``."""
    calls: dict[int, list[Any]] = {}
    _accumulate(calls, [{"id": "a", "function": {"name": "f", "arguments": '{"x"'}}])
    _accumulate(calls, [{"function": {"arguments": ": 1}"}}])
    _accumulate(calls, [{"id": "b", "function": {"name": "g"}}])
    assert _finish(calls) == [ToolCall("a", "f", '{"x": 1}'), ToolCall("b", "g", "{}")]
    assert calls == {}


async def test_stream_empty(provider: OpenAICompatible) -> None:
    """A stream with only ``[DONE]`` is a valid empty answer: just the final chunk."""
    assert await collect(provider.stream_chat_with_system(None, "q", "empty", 0)) == [
        StreamChunk.final()
    ]
    assert await collect(provider.stream_chat(ChatRequest([]), "empty", 0)) == [Final()]


async def test_capabilities(server: FakeLLMServer) -> None:
    """Capability flags follow the constructor arguments."""
    default = OpenAICompatible(base_url=server.openai_base_url, api_key=KEY)
    assert default.supports_streaming
    assert default.supports_native_tools
    assert default.supports_streaming_tool_events
    assert not default.supports_vision
    plain = OpenAICompatible(
        base_url=server.openai_base_url, native_tools=False, streaming=False, vision=True
    )
    assert not plain.supports_streaming
    assert not plain.supports_native_tools
    assert not plain.supports_streaming_tool_events
    assert plain.supports_vision


async def test_prompt_guided_tools(server: FakeLLMServer) -> None:
    """With native_tools=False, tools go into the system prompt and ``<tool_call>`` is parsed."""
    server.script(
        None,
        [
            Behavior(
                text='<tool_call>{"name": "get_weather", '
                '"arguments": {"location": "Oslo"}}</tool_call>'
            )
        ],
    )
    async with OpenAICompatible(
        base_url=server.openai_base_url, api_key=KEY, native_tools=False
    ) as provider:
        request = ChatRequest([ChatMessage.system("S"), ChatMessage.user("q")], [WEATHER])
        response = await provider.chat(request, "m", 0)
        assert response.tool_calls == (ToolCall("call_1", "get_weather", '{"location": "Oslo"}'),)
        events = await collect(provider.stream_chat(request, "m", 0))
        assert events == [
            ToolCallEvent(ToolCall("call_1", "get_weather", '{"location": "Oslo"}')),
            Final(),
        ]
        response = await provider.chat_with_tools(request.messages, [WEATHER], "m", 0)
        assert response.tool_calls
    for sent in server.requests:
        assert "tools" not in sent.json
        assert sent.json["stream"] is False
        system = sent.json["messages"][0]
        assert system["role"] == "system"
        assert "Tool Use Protocol" in system["content"]
        assert "get_weather" in system["content"]


async def test_streaming_disabled(server: FakeLLMServer) -> None:
    """With streaming=False, every stream kind serves the non-streaming answer as one chunk."""
    async with OpenAICompatible(
        base_url=server.openai_base_url, api_key=KEY, streaming=False
    ) as provider:
        assert await collect(provider.stream_chat_with_system(None, "q", "ok", 0)) == [
            StreamChunk(TEXT),
            final("stop", "stop", "ok", TokenUsage(10, 5, 0)),
        ]
        history = [ChatMessage.user("q"), ChatMessage.assistant("a"), ChatMessage.user("r")]
        chunks = await collect(provider.stream_chat_with_history(history, "ok", 0))
        assert text_of(chunks) == TEXT
        events = await collect(provider.stream_chat(ChatRequest([ChatMessage.user("q")]), "ok", 0))
        assert events == [
            TextDelta(TEXT),
            UsageEvent(TokenUsage(10, 5, 0)),
            Final("stop", "stop", "ok", TokenUsage(10, 5, 0)),
        ]
    assert all(r.json["stream"] is False for r in server.requests)
    # The whole history goes out, not just the last user message.
    assert len(server.requests[1].json["messages"]) == 3


# -- client ownership, warm-up, repr ---------------------------------------------------------


async def test_owned_client_is_created_lazily_and_closed(server: FakeLLMServer) -> None:
    """An owned client appears on first use and is closed by aclose()."""
    provider = OpenAICompatible(base_url=server.openai_base_url, api_key=KEY)
    assert provider._client is None
    await provider.simple_chat("x", "ok", 0)
    client = provider._client
    assert client is not None
    await provider.aclose()
    assert client.is_closed
    await provider.aclose()


async def test_shared_client_is_not_closed(server: FakeLLMServer) -> None:
    """A client passed in is used as-is and left open when the provider closes."""
    async with create_client() as client:
        async with OpenAICompatible(
            base_url=server.openai_base_url, api_key=KEY, client=client
        ) as provider:
            assert await provider.simple_chat("x", "ok", 0) == TEXT
        assert not client.is_closed
        two = OpenAICompatible(base_url=server.openai_base_url, api_key=KEY, client=client)
        assert await two.simple_chat("x", "ok", 0) == TEXT
    assert {r.connection for r in server.requests} == {0}


async def test_timeouts(server: FakeLLMServer) -> None:
    """A float timeout applies to every phase; a hung server becomes a transport error."""
    async with OpenAICompatible(
        base_url=server.openai_base_url, api_key=KEY, timeout=5.0
    ) as provider:
        assert provider._timeout == httpx2.Timeout(5.0)
        start = anyio.current_time()
        with pytest.raises(ProviderError) as info:
            await provider.simple_chat("x", "hang_headers", 0)
        assert anyio.current_time() - start == pytest.approx(5.0)
        assert info.value.status_code is None
        assert "ReadTimeout" in str(info.value)
    assert OpenAICompatible(api_key=KEY)._timeout == DEFAULT_TIMEOUT
    expected = httpx2.Timeout(connect=10.0, read=300.0, write=30.0, pool=30.0)
    assert expected == DEFAULT_TIMEOUT


async def test_shared_client_timeout(server: FakeLLMServer) -> None:
    """The leaf timeout overrides a shared client's short default; None defers to the client."""
    async with httpx2.AsyncClient(timeout=1.0) as client:
        patient = OpenAICompatible(base_url=server.openai_base_url, api_key=KEY, client=client)
        chunks = await collect(patient.stream_chat_with_system(None, "q", "ok:ttft=3", 0))
        assert text_of(chunks) == TEXT
        strict = OpenAICompatible(
            base_url=server.openai_base_url, api_key=KEY, client=client, timeout=None
        )
        start = anyio.current_time()
        with pytest.raises(ProviderError, match="ReadTimeout: timed out"):
            await collect(strict.stream_chat_with_system(None, "q", "ok:ttft=3", 0))
        assert anyio.current_time() - start == pytest.approx(1.0)


async def test_warmup(server: FakeLLMServer, provider: OpenAICompatible) -> None:
    """warmup opens a connection with a cheap GET and never raises, even with no server."""
    await provider.warmup()
    assert server.requests[0].method == "GET"
    assert server.requests[0].path == "/v1/models"
    async with OpenAICompatible(base_url="http://127.0.0.1:9/v1", api_key=KEY) as dead:
        await dead.warmup()


async def test_repr_hides_the_key(provider: OpenAICompatible, server: FakeLLMServer) -> None:
    """repr shows the name and base URL only."""
    assert repr(provider) == (
        f"OpenAICompatible(name='openai', base_url='{server.openai_base_url}')"
    )
    assert KEY not in repr(provider)
    assert provider.name == "openai"
    assert provider.base_url == server.openai_base_url


# -- early exit and cancellation ---------------------------------------------------------------


async def test_leaving_a_stream_early_closes_the_connection(
    server: FakeLLMServer, provider: OpenAICompatible
) -> None:
    """Leaving the ``async with`` after one chunk closes the upstream connection at once."""
    async with provider.stream_chat_with_system(None, "q", "ok:chunks=100:gap=1", 0) as chunks:
        async for chunk in chunks:
            assert chunk == StreamChunk("tok0 ")
            break
        left_at = anyio.current_time()
    assert await server.wait_for_disconnect(0) == left_at
    assert server.aborted == [0]


async def test_cancelling_a_stream_closes_the_connection(
    server: FakeLLMServer, provider: OpenAICompatible
) -> None:
    """Cancelling the caller mid-stream closes the upstream connection at that moment."""
    received = []
    with anyio.move_on_after(3.5):
        async with provider.stream_chat(ChatRequest([]), "ok:chunks=100:gap=1", 0) as events:
            async for event in events:
                received.append(event)
    assert await server.wait_for_disconnect(0) == pytest.approx(anyio.current_time())
    assert received == [TextDelta(f"tok{i} ") for i in range(4)]
    assert server.aborted == [0]


async def test_cancelling_while_waiting_for_headers(
    server: FakeLLMServer, provider: OpenAICompatible
) -> None:
    """Cancelling before the response headers closes the connection too."""
    with anyio.move_on_after(2):
        await collect(provider.stream_chat_with_system(None, "q", "hang_headers", 0))
    assert await server.wait_for_disconnect(0) == pytest.approx(
        2.0 + server.requests[0].received_at, abs=0.01
    )


async def test_finished_stream_keeps_the_connection(
    server: FakeLLMServer, provider: OpenAICompatible
) -> None:
    """A stream read to its end leaves its connection in the pool for the next request."""
    for _ in range(3):
        assert text_of(await collect(provider.stream_chat_with_system(None, "q", "ok", 0))) == TEXT
    assert await provider.simple_chat("q", "ok", 0) == TEXT
    assert {r.connection for r in server.requests} == {0}
    assert server.disconnects == []


async def test_usage_repeated_on_every_chunk_is_one_usage_event(
    provider: OpenAICompatible, server: FakeLLMServer
) -> None:
    """vLLM's continuous usage stats (usage on every chunk) give one UsageEvent: the last."""

    def chunk(delta: dict[str, Any], finish: str | None, out: int) -> str:
        usage = {"prompt_tokens": 7, "completion_tokens": out, "total_tokens": 7 + out}
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return f"data: {json.dumps({'choices': [choice], 'usage': usage})}\n\n"

    body = chunk({"content": "a"}, None, 1) + chunk({"content": "b"}, None, 2)
    body += chunk({}, "stop", 2) + "data: [DONE]\n\n"
    server.script(None, [Behavior(kind="status", status=200, body=body, headers=SSE)])
    events = await collect(provider.stream_chat(ChatRequest([ChatMessage.user("q")]), "m", 0.0))
    usage = TokenUsage(input_tokens=7, output_tokens=2)
    assert [e for e in events if isinstance(e, UsageEvent)] == [UsageEvent(usage)]
    assert events[-1].usage == usage
