"""Gemini (Gemini API and Vertex AI) against the fake server over real loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from reliant import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ContentFilterError,
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
from reliant.providers import Gemini
from reliant.testing.fake_server import Behavior, FakeLLMServer

pytestmark = pytest.mark.anyio

KEY = "gemini-custom-key-0001"
TEXT = "tok0 tok1 tok2 tok3 tok4 "
ARGS = json.dumps(json.loads(Behavior().tool_arguments))
HI = [ChatMessage.user("Hi")]
WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city.",
    {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "additionalProperties": False,
    },
)


@pytest.fixture
async def provider(server: FakeLLMServer) -> AsyncIterator[Gemini]:
    async with Gemini(base_url=server.gemini_base_url, api_key=KEY) as p:
        yield p


async def collect(stream: Any) -> list[Any]:
    async with stream as items:
        return [item async for item in items]


def raw_sse(*events: dict[str, Any]) -> Behavior:
    """A 200 whose SSE body carries exactly these events (CRLF, as Google sends them)."""
    body = "".join(f"data: {json.dumps(e)}\r\n\r\n" for e in events)
    return Behavior(
        kind="status", status=200, body=body, headers={"content-type": "text/event-stream"}
    )


def raw_json(data: dict[str, Any]) -> Behavior:
    return Behavior(
        kind="status",
        status=200,
        body=json.dumps(data),
        headers={"content-type": "application/json"},
    )


def candidate(parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        c["finishReason"] = finish
    return {"candidates": [c]}


# -- requests on the wire -----------------------------------------------------------------


async def test_payload_url_and_key_header(server: FakeLLMServer, provider: Gemini) -> None:
    """Contents, system instruction and config are sent; the key is a header, not in the URL."""
    assert await provider.chat_with_system("Be brief.", "Hi", "gemini-2.5-flash", 0.7) == TEXT
    (request,) = server.requests
    assert request.method == "POST"
    assert request.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert KEY not in request.path
    assert request.headers["x-goog-api-key"] == KEY
    assert "authorization" not in request.headers
    assert request.json == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "generationConfig": {"temperature": 0.7},
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
    }


async def test_history_roles_merged_and_tool_results_as_user_text(
    server: FakeLLMServer, provider: Gemini
) -> None:
    """Assistant turns are role model; same-role turns merge; tool results go as user text."""
    history = [
        ChatMessage.system("S1"),
        ChatMessage.user("u1"),
        ChatMessage.assistant("a1"),
        ChatMessage.tool("t1"),
        ChatMessage.user("u2"),
        ChatMessage.system("S2"),
    ]
    await provider.chat_with_history(history, "ok", 0.0)
    body = server.requests[0].json
    assert body["systemInstruction"] == {"parts": [{"text": "S1\n\nS2"}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "u1"}]},
        {"role": "model", "parts": [{"text": "a1"}]},
        {"role": "user", "parts": [{"text": "t1"}, {"text": "u2"}]},
    ]


async def test_tools_payload_schema_cleaned(server: FakeLLMServer, provider: Gemini) -> None:
    """Tools go as one functionDeclarations entry, without the schema keys Gemini rejects."""
    response = await provider.chat_with_tools(HI, [WEATHER], "tools", 0.0)
    assert server.requests[0].json["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city.",
                    "parameters": {
                        "type": "object",
                        "properties": {"location": {"type": "string"}},
                    },
                }
            ]
        }
    ]
    assert response == ChatResponse(
        text=None,
        tool_calls=(ToolCall("call_0", "get_weather", ARGS),),
        usage=TokenUsage(10, 0, None),
        finish_reason="tool_calls",
        raw_finish_reason="STOP",
        model="tools",
    )


async def test_generation_options(server: FakeLLMServer) -> None:
    """max_output_tokens and include_thoughts map onto generationConfig."""
    async with Gemini(
        base_url=server.gemini_base_url, api_key=KEY, max_output_tokens=64, include_thoughts=True
    ) as p:
        await p.simple_chat("x", "ok", 0.1)
    assert server.requests[0].json["generationConfig"] == {
        "temperature": 0.1,
        "maxOutputTokens": 64,
        "thinkingConfig": {"includeThoughts": True},
    }


async def test_vertex_ai_path_and_bearer(server: FakeLLMServer) -> None:
    """With project, the Vertex AI path and a bearer token are used."""
    token = "ya29.vertex-access-token"
    async with Gemini(
        base_url=server.gemini_base_url, api_key=token, project="my-proj", location="europe-west4"
    ) as p:
        assert await p.simple_chat("x", "gemini-2.5-pro", 0.0) == TEXT
        await collect(p.stream_chat_with_history(HI, "gemini-2.5-pro", 0.0))
    first, second = server.requests
    assert first.path == (
        "/v1/projects/my-proj/locations/europe-west4/publishers/google/models/"
        "gemini-2.5-pro:generateContent"
    )
    assert second.path.endswith("gemini-2.5-pro:streamGenerateContent?alt=sse")
    assert first.headers["authorization"] == f"Bearer {token}"
    assert "x-goog-api-key" not in first.headers


def test_default_urls() -> None:
    """The defaults are Google's hosts: AI Studio, a Vertex region, or Vertex's global endpoint."""
    assert Gemini(api_key="k").base_url == "https://generativelanguage.googleapis.com"
    vertex = Gemini(api_key="k", project="p", location="us-east5")
    assert vertex.base_url == "https://us-east5-aiplatform.googleapis.com"
    assert Gemini(api_key="k", project="p", location="global").base_url == (
        "https://aiplatform.googleapis.com"
    )


async def test_key_from_environment(server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no api_key, GEMINI_API_KEY (then GOOGLE_API_KEY) is read at construction."""
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", "google-env-key-1")
    async with Gemini(base_url=server.gemini_base_url) as p:
        await p.simple_chat("x", "ok", 0)
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-env-key-2")
    async with Gemini(base_url=server.gemini_base_url) as p:
        await p.simple_chat("x", "ok", 0)
    assert [r.headers["x-goog-api-key"] for r in server.requests] == [
        "google-env-key-1",
        "gemini-env-key-2",
    ]


async def test_model_with_slash_cannot_change_the_route(
    server: FakeLLMServer, provider: Gemini
) -> None:
    """A model id is quoted into one path segment (the server sees the same model back)."""
    server.script("../../evil?x=1", ["ok"])  # not a model-id-looking name: scripted
    assert await provider.simple_chat("x", "../../evil?x=1", 0) == TEXT
    (request,) = server.requests
    assert request.path == "/v1beta/models/..%2F..%2Fevil%3Fx=1:generateContent"
    assert request.model == "../../evil?x=1"


# -- answers ------------------------------------------------------------------------------


async def test_answer_with_reasoning_usage_and_cache(
    server: FakeLLMServer, provider: Gemini
) -> None:
    """Thought parts are reasoning; output counts thoughts; cached tokens are read."""
    server.script("m", [Behavior(chunks=2, reasoning=1, cached_tokens=4)])
    response = await provider.chat(ChatRequest(HI), "m", 0.5)
    assert response == ChatResponse(
        text="tok0 tok1 ",
        usage=TokenUsage(10, 3, 4),
        reasoning_content="think0 ",
        finish_reason="stop",
        raw_finish_reason="STOP",
        model="m",
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("LANGUAGE", "other"),
        ("OTHER", "other"),
        ("SOMETHING_NEW", "other"),
    ],
)
async def test_finish_reasons(
    server: FakeLLMServer, provider: Gemini, raw: str, reason: str
) -> None:
    """Each finishReason maps to its normalised reason, streamed and not, keeping the raw word."""
    server.script("m", [Behavior(chunks=1, finish=raw)])
    response = await provider.chat(ChatRequest(HI), "m", 0)
    assert (response.finish_reason, response.raw_finish_reason) == (reason, raw)
    events = await collect(provider.stream_chat(ChatRequest(HI), "m", 0))
    assert isinstance(events[-1], Final)
    assert (events[-1].finish_reason, events[-1].raw_finish_reason) == (reason, raw)


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_function_call_is_an_error(
    server: FakeLLMServer, provider: Gemini, stream: bool
) -> None:
    """MALFORMED_FUNCTION_CALL is a malformed_response ProviderError, never an answer."""
    server.script("m", [Behavior(chunks=0, finish="MALFORMED_FUNCTION_CALL")])
    with pytest.raises(ProviderError) as info:
        if stream:
            await collect(provider.stream_chat(ChatRequest(HI), "m", 0))
        else:
            await provider.chat(ChatRequest(HI), "m", 0)
    assert info.value.kind == "malformed_response"
    assert "MALFORMED_FUNCTION_CALL" in str(info.value)


@pytest.mark.parametrize("stream", [False, True])
async def test_blocked_prompt_is_a_content_filter_error(
    server: FakeLLMServer, provider: Gemini, stream: bool
) -> None:
    """promptFeedback.blockReason is a ContentFilterError, final for classification."""
    with pytest.raises(ContentFilterError) as info:
        if stream:
            await collect(provider.stream_chat_with_history(HI, "content_filter", 0))
        else:
            await provider.chat(ChatRequest(HI), "content_filter", 0)
    assert "SAFETY" in str(info.value)
    assert classify(info.value).reason == "content_filter"


async def test_safety_stop_after_text_ends_normally(provider: Gemini) -> None:
    """finishReason SAFETY after text ends the stream with finish_reason content_filter."""
    events = await collect(provider.stream_chat(ChatRequest(HI), "content_filter:after=2", 0))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["tok0 ", "tok1 "]
    assert isinstance(events[-1], Final) and events[-1].finish_reason == "content_filter"


# -- streams ------------------------------------------------------------------------------


async def test_stream_chunks(server: FakeLLMServer, provider: Gemini) -> None:
    """Text streams chunk by chunk from :streamGenerateContent?alt=sse, then one final chunk."""
    chunks = await collect(provider.stream_chat_with_system("S", "Hi", "ok:chunks=3", 0.2))
    assert chunks == [
        StreamChunk("tok0 "),
        StreamChunk("tok1 "),
        StreamChunk("tok2 "),
        StreamChunk(
            is_final=True,
            finish_reason="stop",
            raw_finish_reason="STOP",
            model="ok:chunks=3",
            usage=TokenUsage(10, 3, None),
        ),
    ]
    assert server.requests[0].path == "/v1beta/models/ok:chunks=3:streamGenerateContent?alt=sse"
    assert server.requests[0].stream


async def test_stream_events_with_reasoning_tools_and_usage(provider: Gemini) -> None:
    """Events: reasoning, text, whole tool calls, one usage (the last cumulative), Final."""
    request = ChatRequest(HI, [WEATHER])
    events = await collect(provider.stream_chat(request, "tools:chunks=1:reasoning=1:calls=2", 0))
    usage = TokenUsage(10, 2, None)
    assert events == [
        ReasoningDelta("think0 "),
        TextDelta("tok0 "),
        ToolCallEvent(ToolCall("call_0", "get_weather", ARGS)),
        ToolCallEvent(ToolCall("call_1", "get_weather", ARGS)),
        UsageEvent(usage),
        Final("tool_calls", "STOP", "tools:chunks=1:reasoning=1:calls=2", usage),
    ]


async def test_function_call_ids_kept_when_sent(server: FakeLLMServer, provider: Gemini) -> None:
    """A functionCall id (newer models) is the ToolCall id; args arrive as a whole object."""
    call = {"functionCall": {"id": "fc-7", "name": "f", "args": {"a": [1, 2]}}}
    server.script("m", [raw_sse(candidate([call], "STOP"))])
    events = await collect(provider.stream_chat(ChatRequest(HI), "m", 0))
    assert events[0] == ToolCallEvent(ToolCall("fc-7", "f", '{"a": [1, 2]}'))


async def test_stream_reasoning_chunks(provider: Gemini) -> None:
    """Thought parts arrive as chunks carrying reasoning and no text."""
    chunks = await collect(provider.stream_chat_with_history(HI, "ok:chunks=1:reasoning=2", 0))
    assert chunks[:3] == [
        StreamChunk("", "think0 "),
        StreamChunk("", "think1 "),
        StreamChunk("tok0 "),
    ]


async def test_stream_without_finish_reason_is_broken(provider: Gemini) -> None:
    """Gemini has no terminator: a body ending without a finishReason is a StreamError."""
    with pytest.raises(StreamError, match="stream ended without a finishReason"):
        await collect(provider.stream_chat_with_history(HI, "no_terminator", 0))


async def test_empty_stream_ends_with_a_bare_final(provider: Gemini) -> None:
    """STOP without any part (Gemini's empty response) ends bare, so failover sees it empty."""
    assert await collect(provider.stream_chat_with_history(HI, "empty", 0)) == [StreamChunk.final()]
    assert await collect(provider.stream_chat(ChatRequest(HI), "empty", 0)) == [Final()]


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_resource_exhausted_takes_retry_delay_from_the_body(
    server: FakeLLMServer, provider: Gemini, stream: bool
) -> None:
    """A 429 RESOURCE_EXHAUSTED carries no header: retry_after comes from RetryInfo.retryDelay."""
    with pytest.raises(ProviderError) as info:
        if stream:
            await collect(provider.stream_chat_with_history(HI, "status:429:retry_after=7", 0))
        else:
            await provider.simple_chat("x", "status:429:retry_after=7", 0)
    assert "retry-after" not in str(server.requests[0].headers)
    assert (info.value.status_code, info.value.retry_after) == (429, 7.0)
    assert "RESOURCE_EXHAUSTED" in str(info.value)
    assert classify(info.value).rate_limited


async def test_retry_delay_honoured_by_reliable_provider(server: FakeLLMServer) -> None:
    """ReliableProvider waits the body's retryDelay exactly (7 s), then succeeds."""
    server.script("m", ["status:429:retry_after=7", "ok"])
    async with Gemini(base_url=server.gemini_base_url, api_key=KEY) as p:
        llm = ReliableProvider([("gemini", p)], max_retries=1, base_backoff=0.5)
        start = anyio.current_time()
        assert await llm.simple_chat("x", "m", 0) == TEXT
    assert anyio.current_time() - start == pytest.approx(7.0)
    assert server.requests[1].received_at - server.requests[0].received_at == pytest.approx(7.0)


async def test_unavailable_is_retried(server: FakeLLMServer) -> None:
    """A 503 UNAVAILABLE is retryable: the next attempt answers."""
    server.script("m", ["status:503", "ok"])
    async with Gemini(base_url=server.gemini_base_url, api_key=KEY) as p:
        llm = ReliableProvider([("gemini", p)], max_retries=1, base_backoff=1.0)
        assert await llm.simple_chat("x", "m", 0) == TEXT
    assert len(server.requests) == 2
    assert 0.5 <= server.requests[1].received_at - server.requests[0].received_at <= 1.0


@pytest.mark.parametrize(("after", "expected"), [(0, ProviderError), (2, StreamError)])
async def test_inband_error_event(provider: Gemini, after: int, expected: type[Exception]) -> None:
    """An {"error": ...} event is a ProviderError before the first item, a StreamError after."""
    with pytest.raises(expected) as info:
        await collect(
            provider.stream_chat_with_history(HI, f"inband_error:after={after}:status=503", 0)
        )
    error = info.value if expected is ProviderError else info.value.__cause__
    assert isinstance(error, ProviderError) and error.status_code == 503
    assert "UNAVAILABLE" in str(error)


async def test_context_window_message_is_classified(provider: Gemini) -> None:
    """Gemini's input-token-count 400 is a context-window error."""
    with pytest.raises(ProviderError) as info:
        await provider.simple_chat("x" * 50, "context:10", 0)
    assert classify(info.value).context_window


async def test_non_streaming_error_in_a_200(server: FakeLLMServer, provider: Gemini) -> None:
    """An error object inside a 200 JSON answer is a ProviderError with its code as status."""
    server.script(
        "m", [raw_json({"error": {"code": 500, "message": "boom", "status": "INTERNAL"}})]
    )
    with pytest.raises(ProviderError) as info:
        await provider.simple_chat("x", "m", 0)
    assert info.value.status_code == 500


async def test_answer_without_candidates_is_malformed(
    server: FakeLLMServer, provider: Gemini
) -> None:
    """A 200 with neither candidates nor a block reason is malformed, never an empty success."""
    server.script("m", [raw_json({"usageMetadata": {"promptTokenCount": 3}})])
    with pytest.raises(ProviderError) as info:
        await provider.simple_chat("x", "m", 0)
    assert info.value.kind == "malformed_response"


# -- capabilities and lifecycle -------------------------------------------------------------


async def test_capabilities() -> None:
    """Native tools, streaming and streaming tool events; prefill not (recovery restarts)."""
    p = Gemini(api_key="k")
    assert p.supports_native_tools and p.supports_streaming and p.supports_streaming_tool_events
    assert not p.supports_prefill and not p.supports_vision
    assert Gemini(api_key="k", vision=True).supports_vision


async def test_warmup(server: FakeLLMServer, provider: Gemini) -> None:
    """warmup GETs the model list and never raises."""
    await provider.warmup()
    assert server.requests[0].method == "GET"
    assert server.requests[0].path == "/v1beta/models"
