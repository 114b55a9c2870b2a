"""OpenAI Responses API against the fake server over real loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from reliant import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ContentFilterError,
    FailoverError,
    Final,
    ProviderError,
    ReasoningDelta,
    ReliableProvider,
    StreamChunk,
    StreamError,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    UsageEvent,
)
from reliant.classify import classify
from reliant.providers import OpenAIResponses
from reliant.testing.fake_server import Behavior, FakeLLMServer

pytestmark = pytest.mark.anyio

KEY = "responses-custom-key-0001"
TEXT = "tok0 tok1 tok2 tok3 tok4 "
ARGS = Behavior().tool_arguments
HI = [ChatMessage.user("Hi")]
WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city.",
    {"type": "object", "properties": {"location": {"type": "string"}}},
)


@pytest.fixture
async def provider(server: FakeLLMServer) -> AsyncIterator[OpenAIResponses]:
    async with OpenAIResponses(base_url=server.responses_base_url, api_key=KEY) as p:
        yield p


async def collect(stream: Any) -> list[Any]:
    async with stream as items:
        return [item async for item in items]


def raw_sse(*events: dict[str, Any]) -> Behavior:
    """A 200 whose SSE body carries exactly these typed events."""
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    return Behavior(
        kind="status", status=200, body=body, headers={"content-type": "text/event-stream"}
    )


DELTA = {"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "delta": "hi"}


# -- requests on the wire -----------------------------------------------------------------


async def test_payload(server: FakeLLMServer, provider: OpenAIResponses) -> None:
    """POST /v1/responses with input items, instructions, temperature and a bearer key."""
    history = [
        ChatMessage.system("S"),
        ChatMessage.user("u1"),
        ChatMessage.assistant("a1"),
        ChatMessage.tool("t1"),
    ]
    assert await provider.chat_with_history(history, "gpt-5", 0.3) == TEXT
    (request,) = server.requests
    assert request.path == "/v1/responses"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json == {
        "model": "gpt-5",
        "input": [
            {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "t1"},
        ],
        "instructions": "S",
        "temperature": 0.3,
    }


async def test_options(server: FakeLLMServer) -> None:
    """Reasoning options, max_output_tokens and store are sent; temperature can be left out."""
    async with OpenAIResponses(
        base_url=server.responses_base_url,
        api_key=KEY,
        max_output_tokens=100,
        reasoning_effort="low",
        reasoning_summary="auto",
        send_temperature=False,
        store=False,
    ) as p:
        await collect(p.stream_chat_with_system(None, "x", "o4-mini", 0.5))
    assert server.requests[0].json == {
        "model": "o4-mini",
        "input": [{"role": "user", "content": "x"}],
        "stream": True,
        "max_output_tokens": 100,
        "reasoning": {"effort": "low", "summary": "auto"},
        "store": False,
    }


async def test_tools_and_tool_calls(server: FakeLLMServer, provider: OpenAIResponses) -> None:
    """Tools are flat function entries; function_call items become tool calls with their call_id."""
    response = await provider.chat_with_tools(HI, [WEATHER], "tools", 0.0)
    assert server.requests[0].json["tools"] == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city.",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        }
    ]
    assert response == ChatResponse(
        text=None,
        tool_calls=(ToolCall("call_0_0", "get_weather", ARGS),),
        usage=TokenUsage(10, 0, 0),
        finish_reason="tool_calls",
        raw_finish_reason="completed",
        model="tools",
    )


# -- answers ------------------------------------------------------------------------------


async def test_answer_with_reasoning_and_usage(
    server: FakeLLMServer, provider: OpenAIResponses
) -> None:
    """Reasoning summaries, output text, usage with cached tokens and the model are read."""
    server.script("m", [Behavior(chunks=2, reasoning=1, cached_tokens=3)])
    response = await provider.chat(ChatRequest(HI), "m", 0.5)
    assert response == ChatResponse(
        text="tok0 tok1 ",
        usage=TokenUsage(10, 3, 3),
        reasoning_content="think0 ",
        finish_reason="stop",
        raw_finish_reason="completed",
        model="m",
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [("max_output_tokens", "length"), ("content_filter", "content_filter"), ("other", "other")],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_incomplete_details_give_the_finish_reason(
    server: FakeLLMServer, provider: OpenAIResponses, raw: str, reason: str, stream: bool
) -> None:
    """response.incomplete ends the answer; incomplete_details.reason is the finish reason."""
    server.script("m", [Behavior(chunks=2, finish=raw)])
    if stream:
        events = await collect(provider.stream_chat(ChatRequest(HI), "m", 0))
        assert [e.text for e in events if isinstance(e, TextDelta)] == ["tok0 ", "tok1 "]
        end = events[-1]
        assert isinstance(end, Final)
        assert (end.finish_reason, end.raw_finish_reason) == (reason, raw)
    else:
        response = await provider.chat(ChatRequest(HI), "m", 0)
        assert (response.finish_reason, response.raw_finish_reason) == (reason, raw)


@pytest.mark.parametrize("stream", [False, True])
async def test_content_filter_without_text_is_a_content_filter_error(
    provider: OpenAIResponses, stream: bool
) -> None:
    """An answer the filter stopped before any text is a ContentFilterError."""
    with pytest.raises(ContentFilterError):
        if stream:
            await collect(provider.stream_chat_with_history(HI, "content_filter:status=200", 0))
        else:
            await provider.chat(ChatRequest(HI), "content_filter:status=200", 0)
    with pytest.raises(ContentFilterError):
        await provider.chat(ChatRequest(HI), "content_filter", 0)  # OpenAI's moderation 400


# -- streams ------------------------------------------------------------------------------


async def test_stream_chunks(server: FakeLLMServer, provider: OpenAIResponses) -> None:
    """output_text deltas stream as chunks; response.completed gives the final chunk's facts."""
    chunks = await collect(provider.stream_chat_with_system("S", "Hi", "ok:chunks=3", 0.2))
    assert chunks == [
        StreamChunk("tok0 "),
        StreamChunk("tok1 "),
        StreamChunk("tok2 "),
        StreamChunk(
            is_final=True,
            finish_reason="stop",
            raw_finish_reason="completed",
            model="ok:chunks=3",
            usage=TokenUsage(10, 3, 0),
        ),
    ]
    assert server.requests[0].json["stream"] is True


async def test_stream_events(provider: OpenAIResponses) -> None:
    """Reasoning summary deltas, text, tool calls assembled from argument deltas, usage, Final."""
    model = "tools:chunks=1:reasoning=1:calls=2"
    events = await collect(provider.stream_chat(ChatRequest(HI, [WEATHER]), model, 0))
    usage = TokenUsage(10, 2, 0)
    assert events == [
        ReasoningDelta("think0 "),
        TextDelta("tok0 "),
        ToolCallEvent(ToolCall("call_0_0", "get_weather", ARGS)),
        ToolCallEvent(ToolCall("call_0_1", "get_weather", ARGS)),
        UsageEvent(usage),
        Final("tool_calls", "completed", model, usage),
    ]


async def test_stream_without_completed_is_broken(provider: OpenAIResponses) -> None:
    """A body ending without response.completed is a StreamError, never a success."""
    with pytest.raises(StreamError, match=r"stream ended without response\.completed"):
        await collect(provider.stream_chat_with_history(HI, "no_terminator", 0))


async def test_empty_stream_ends_with_a_bare_final(provider: OpenAIResponses) -> None:
    """response.completed with no output ends bare, so failover sees an empty stream."""
    assert await collect(provider.stream_chat_with_history(HI, "empty", 0)) == [StreamChunk.final()]
    assert await collect(provider.stream_chat(ChatRequest(HI), "empty", 0)) == [Final()]


# -- failures after HTTP 200 ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [(429, "rate_limit_exceeded"), (500, "server_error"), (400, "invalid_prompt")],
)
async def test_response_failed_before_the_first_item(
    provider: OpenAIResponses, status: int, code: str
) -> None:
    """response.failed before any item is a ProviderError classified from its error code."""
    with pytest.raises(ProviderError) as info:
        await collect(provider.stream_chat(ChatRequest(HI), f"inband_error:status={status}", 0))
    assert info.value.status_code == status
    assert code in str(info.value)
    assert classify(info.value).retryable is (status != 400)


async def test_response_failed_after_text_is_a_stream_error(provider: OpenAIResponses) -> None:
    """response.failed after text is a StreamError whose cause is the classified ProviderError."""
    with pytest.raises(StreamError) as info:
        await collect(provider.stream_chat_with_history(HI, "inband_error:after=2:status=500", 0))
    cause = info.value.__cause__
    assert isinstance(cause, ProviderError) and cause.status_code == 500


@pytest.mark.parametrize(
    "event",
    [
        {"type": "error", "code": "rate_limit_exceeded", "message": "slow down", "param": None},
        {
            "type": "error",
            "error": {"type": "rate_limit_error", "code": "rate_limit_exceeded", "message": "x"},
        },
    ],
)
@pytest.mark.parametrize("after_text", [False, True])
async def test_error_event(
    server: FakeLLMServer, provider: OpenAIResponses, event: dict[str, Any], after_text: bool
) -> None:
    """An error event (flat or nested) is a 429 ProviderError, or a StreamError after text."""
    server.script("m", [raw_sse(*([DELTA] if after_text else []), event)])
    expected = StreamError if after_text else ProviderError
    with pytest.raises(expected) as info:
        await collect(provider.stream_chat(ChatRequest(HI), "m", 0))
    error = info.value.__cause__ if after_text else info.value
    assert isinstance(error, ProviderError) and error.status_code == 429


async def test_response_failed_without_an_error_object(
    server: FakeLLMServer, provider: OpenAIResponses
) -> None:
    """response.failed with a null error still fails: never an empty success."""
    failed = {"type": "response.failed", "response": {"status": "failed", "error": None}}
    server.script("m", [raw_sse(failed)])
    with pytest.raises(ProviderError, match="failed"):
        await collect(provider.stream_chat(ChatRequest(HI), "m", 0))


async def test_failed_stream_fails_over(server: FakeLLMServer) -> None:
    """A response.failed stream fails over to the next provider, which answers."""
    async with (
        OpenAIResponses(name="a", base_url=server.responses_base_url, api_key=KEY) as a,
        OpenAIResponses(name="b", base_url=server.responses_base_url, api_key=KEY) as b,
    ):
        llm = ReliableProvider(
            [("a", a), ("b", b)],
            max_retries=0,
            model_aliases={"a": {"m": "inband_error:status=500"}, "b": {"m": "ok:chunks=2"}},
        )
        async with llm.stream_chat_with_history(HI, "m", 0) as chunks:
            got = [c async for c in chunks]
        assert "".join(c.delta for c in got) == "tok0 tok1 "
        with pytest.raises(FailoverError):
            bad = ReliableProvider([("a", a)], max_retries=0)
            async with bad.stream_chat_with_history(HI, "inband_error:status=500", 0) as chunks:
                async for _ in chunks:
                    pass


# -- capabilities ---------------------------------------------------------------------------


def test_capabilities() -> None:
    """Native tools and streaming; prefill is not supported, so recovery restarts."""
    p = OpenAIResponses(api_key="k")
    assert p.supports_native_tools and p.supports_streaming and p.supports_streaming_tool_events
    assert not p.supports_prefill
    assert p.base_url == "https://api.openai.com/v1"
