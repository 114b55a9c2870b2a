"""Gemini, Responses API and Azure fixtures replayed byte for byte over loopback.

All but one of these fixtures are synthetic (see tests/recorded/README.md:
written by hand in the shapes the providers' public documentation gives);
``gemini_stream_tool_call_recorded.sse`` is a real Gemini 3 stream, with its
source cited there. Each is replayed through the fake server's raw hook, so
the bytes a client reads are exactly the file's, CRLF line ends included.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from reliant import (
    ChatMessage,
    ChatRequest,
    ContentFilterError,
    Final,
    ProviderError,
    ReasoningDelta,
    ReliableProvider,
    StreamError,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallEvent,
    UsageEvent,
)
from reliant.classify import classify
from reliant.providers import AzureOpenAI, Gemini, OpenAIResponses
from reliant.testing import FakeLLMServer
from reliant.testing.fake_server import RawResponse, http_response

pytestmark = pytest.mark.anyio

RECORDED = Path(__file__).parent / "recorded"
# The fake server closes the connection after each raw answer; saying so keeps
# the client from reusing it for the next request.
SSE = {"content-type": "text/event-stream", "connection": "close"}
JSON = {"content-type": "application/json", "connection": "close"}
HI = [ChatMessage.user("What is the weather in Lyon?")]


def replay(
    server: FakeLLMServer, model: str, name: str, status: int = 200, headers: dict[str, str] = SSE
) -> None:
    """Answer every request for ``model`` with the file ``name``, as it is."""
    body = (RECORDED / name).read_bytes()
    response = http_response(body, status=status, headers=headers)
    server.script_raw(model, [RawResponse([response], then="close")])


async def events_of(provider: object, model: str) -> list[object]:
    async with provider.stream_chat(ChatRequest(HI), model, 0.0) as events:  # type: ignore[attr-defined]
        return [e async for e in events]


async def test_gemini_stream_with_thoughts_and_a_function_call(server: FakeLLMServer) -> None:
    """Thought, text, a whole function call, cumulative usage (cached, thinking) and STOP."""
    replay(server, "gemini-2.5-flash", "gemini_stream_thoughts_tool_call.sse")
    async with Gemini(base_url=server.gemini_base_url, api_key="gemini-key-000001") as p:
        got = await events_of(p, "gemini-2.5-flash")
    usage = TokenUsage(input_tokens=41, output_tokens=24 + 27, cached_input_tokens=32)
    assert got == [
        ReasoningDelta(
            "**Checking the weather**\n\nThe user wants Lyon's weather; I will call the tool."
        ),
        TextDelta("Let me look that up"),
        TextDelta(" for Lyon."),
        ToolCallEvent(ToolCall("call_0", "get_weather", '{"city": "Lyon", "unit": "celsius"}')),
        UsageEvent(usage),
        Final("tool_calls", "STOP", "gemini-2.5-flash", usage),
    ]


async def test_gemini_429_retry_delay_from_the_body(server: FakeLLMServer) -> None:
    """A RESOURCE_EXHAUSTED body's RetryInfo (17s) is the wait: retried 17 s later exactly."""
    body = (RECORDED / "gemini_429_retry_info.json").read_bytes()
    ok = b'{"candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}]}'
    server.script_raw(
        "m",
        [
            RawResponse([http_response(body, status=429, headers=JSON)], then="close"),
            RawResponse([http_response(body, status=429, headers=JSON)], then="close"),
            RawResponse([http_response(ok, headers=JSON)], then="close"),
        ],
    )
    async with Gemini(base_url=server.gemini_base_url, api_key="gemini-key-000001") as p:
        with pytest.raises(ProviderError) as info:
            await p.simple_chat("x", "m", 0)
        assert (info.value.status_code, info.value.retry_after) == (429, 17.0)
        assert classify(info.value).rate_limited
        llm = ReliableProvider([("gemini", p)], max_retries=1)
        start = anyio.current_time()
        assert await llm.simple_chat("x", "m", 0) == "ok"
    assert anyio.current_time() - start == pytest.approx(17.0)


async def test_responses_stream_with_reasoning_and_a_function_call(server: FakeLLMServer) -> None:
    """Summary deltas, text deltas, a function call from argument deltas, usage, completed."""
    replay(server, "o4-mini", "responses_stream_reasoning_tool_call.sse")
    async with OpenAIResponses(base_url=server.responses_base_url, api_key="sk-000001") as p:
        got = await events_of(p, "o4-mini")
    usage = TokenUsage(input_tokens=58, output_tokens=91, cached_input_tokens=0)
    assert got == [
        ReasoningDelta("**Planning a lookup**\n\n"),
        ReasoningDelta("The user asks about Lyon; "),
        ReasoningDelta("a weather call answers it."),
        TextDelta("Checking"),
        TextDelta(" Lyon"),
        TextDelta(" now."),
        ToolCallEvent(
            ToolCall("call_synthetic0001", "get_weather", '{"city":"Lyon","unit":"celsius"}')
        ),
        UsageEvent(usage),
        Final("tool_calls", "completed", "o4-mini-2025-04-16", usage),
    ]


async def test_responses_failed_after_text_is_a_stream_error(server: FakeLLMServer) -> None:
    """response.failed after text breaks the stream with a classified 500 cause."""
    replay(server, "gpt-5", "responses_stream_failed_after_text.sse")
    seen: list[object] = []
    async with OpenAIResponses(base_url=server.responses_base_url, api_key="sk-000001") as p:
        with pytest.raises(StreamError) as info:
            async with p.stream_chat(ChatRequest(HI), "gpt-5", 0.0) as events:
                async for event in events:
                    seen.append(event)
    assert seen == [TextDelta("The answer")]
    cause = info.value.__cause__
    assert isinstance(cause, ProviderError) and cause.status_code == 500
    assert classify(cause).retryable


async def test_azure_prompt_filter_400(server: FakeLLMServer) -> None:
    """Azure's content-filter 400 is a ContentFilterError, final for classification."""
    replay(server, "gpt-4o", "azure_content_filter_400.json", status=400, headers=JSON)
    async with AzureOpenAI(base_url=server.azure_base_url, api_key="azure-key-000001") as p:
        with pytest.raises(ContentFilterError) as info:
            await p.simple_chat("x", "gpt-4o", 0)
    assert info.value.status_code == 400
    assert "ResponsibleAIPolicyViolation" in str(info.value)
    assert classify(info.value).reason == "content_filter"


async def test_azure_stream_filtered_mid_answer(server: FakeLLMServer) -> None:
    """prompt_filter_results first, then text, finish_reason content_filter, usage, [DONE]."""
    replay(server, "gpt-4o", "azure_stream_filtered_completion.sse")
    async with AzureOpenAI(base_url=server.azure_base_url, api_key="azure-key-000001") as p:
        got = await events_of(p, "gpt-4o")
    usage = TokenUsage(input_tokens=12, output_tokens=4, cached_input_tokens=0)
    assert got == [
        TextDelta("Once upon"),
        TextDelta(" a time"),
        UsageEvent(usage),
        Final("content_filter", "content_filter", "gpt-4o-2024-11-20", usage),
    ]


async def test_recorded_gemini_3_stream_with_a_function_call(server: FakeLLMServer) -> None:
    """A real Gemini 3 stream: a whole function call with a thought signature, then STOP."""
    replay(server, "gemini-3-pro-preview", "gemini_stream_tool_call_recorded.sse")
    async with Gemini(base_url=server.gemini_base_url, api_key="gemini-key-000001") as p:
        got = await events_of(p, "gemini-3-pro-preview")
    usage = TokenUsage(input_tokens=29, output_tokens=15 + 45)  # thinking counts as output
    assert got == [
        ToolCallEvent(ToolCall("call_0", "weather", '{"location": "San Francisco"}')),
        UsageEvent(usage),
        Final("tool_calls", "STOP", "gemini-3-pro-preview", usage),
    ]
