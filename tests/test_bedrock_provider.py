"""Bedrock (Converse, ConverseStream) against the fake server over real loopback HTTP."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from hostile_support import paths, replaced
from reliant import (
    ChatMessage,
    ChatRequest,
    ContentFilterError,
    FailoverError,
    FakeServerSpecError,
    Final,
    ProviderError,
    ReasoningDelta,
    ReliableProvider,
    ReliantError,
    StreamChunk,
    StreamError,
    StreamOptions,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    UsageEvent,
    fallback_scope,
    take_last_provider_fallback,
)
from reliant.classify import (
    classify,
    is_context_window_exceeded,
    is_non_retryable,
    is_rate_limited,
)
from reliant.providers import Anthropic, Bedrock
from reliant.providers._eventstream import encode_message
from reliant.testing import FakeLLMServer, NoJitter
from reliant.testing.fake_server import Behavior, RawResponse, http_response
from test_chain_secrets import everything_about

pytestmark = pytest.mark.anyio

KEY = "bedrock-api-key-0001-abcdef"
AKID = "AKIAFAKEEXAMPLE00001"
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLE-session-token-0001"
TEXT = "tok0 tok1 tok2 tok3 tok4 "
ARGS = Behavior().tool_arguments
HI = [ChatMessage.user("hi")]
WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city.",
    {"type": "object", "properties": {"location": {"type": "string"}}},
)
RECORDED = Path(__file__).parent / "recorded"
EVENT_STREAM = {"content-type": "application/vnd.amazon.eventstream"}
CLOSE = {"content-type": "application/json", "connection": "close"}
AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_BEARER_TOKEN_BEDROCK",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


@pytest.fixture(autouse=True)
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS credentials or config of the machine, and no instance-metadata calls."""
    for name in AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        empty = tmp_path / name.lower()
        empty.write_text("")
        monkeypatch.setenv(name, str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
async def provider(server: FakeLLMServer) -> AsyncIterator[Bedrock]:
    async with Bedrock(base_url=server.bedrock_base_url, api_key=KEY) as p:
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


async def failure_of(stream: Any) -> BaseException:
    """The exception a stream raises while it is read."""
    with pytest.raises(ReliantError) as info:
        await collect(stream)
    return info.value


# -- requests on the wire -----------------------------------------------------------------


async def test_chat_with_system_payload(server: FakeLLMServer, provider: Bedrock) -> None:
    """The system prompt goes in ``system``; model in the path; bearer key; inferenceConfig."""
    assert await provider.chat_with_system("Be brief.", "Hi", "ok", 0.7) == TEXT
    (request,) = server.requests
    assert (request.method, request.path, request.model) == ("POST", "/model/ok/converse", "ok")
    assert not request.stream
    assert request.json == {
        "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
        "inferenceConfig": {"maxTokens": 4096, "temperature": 0.7},
        "system": [{"text": "Be brief."}],
    }
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"


async def test_model_id_is_url_encoded_in_the_path(
    server: FakeLLMServer, provider: Bedrock
) -> None:
    """An inference-profile ARN (``:`` and ``/``) travels encoded; the server reads it back."""
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude"
    server.script(arn, ["ok:chunks=1"])
    assert await provider.simple_chat("Hi", arn, 0) == "tok0 "
    (request,) = server.requests
    assert request.path == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile"
        "%2Fus.anthropic.claude/converse"
    )
    assert request.model == arn


async def test_history_and_tool_results(server: FakeLLMServer, provider: Bedrock) -> None:
    """System messages become blocks; tool results travel as user text; one role per turn."""
    history = [
        ChatMessage.system("S1"),
        ChatMessage.user("u1"),
        ChatMessage.assistant("a1"),
        ChatMessage.tool('{"temp": 21}'),
        ChatMessage.system("S2"),
        ChatMessage.user("u2"),
        ChatMessage.user("   "),
    ]
    assert await provider.chat_with_history(history, "ok", 0) == TEXT
    sent = server.requests[0].json
    assert sent["system"] == [{"text": "S1"}, {"text": "S2"}]
    assert sent["messages"] == [
        {"role": "user", "content": [{"text": "u1"}]},
        {"role": "assistant", "content": [{"text": "a1"}]},
        {"role": "user", "content": [{"text": '{"temp": 21}'}, {"text": "u2"}]},
    ]


async def test_prefill_is_stripped_and_continued(server: FakeLLMServer, provider: Bedrock) -> None:
    """A trailing assistant turn loses its trailing whitespace; the answer continues it."""
    history = [ChatMessage.user("u"), ChatMessage.assistant("tok0 tok1 ")]
    assert await provider.chat_with_history(history, "ok", 0) == " tok2 tok3 tok4 "
    assert server.requests[0].json["messages"][-1] == {
        "role": "assistant",
        "content": [{"text": "tok0 tok1"}],
    }


async def test_tools_are_sent_as_tool_config(server: FakeLLMServer, provider: Bedrock) -> None:
    """Tools travel in ``toolConfig``; the answer's toolUse blocks become tool calls."""
    response = await provider.chat(ChatRequest(HI, [WEATHER]), "tools:chunks=1", 0)
    assert server.requests[0].json["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather for a city.",
                    "inputSchema": {"json": dict(WEATHER.parameters)},
                }
            }
        ]
    }
    assert response.text == "tok0 "
    assert response.tool_calls == (ToolCall("call_0_0", "get_weather", ARGS),)
    assert (response.finish_reason, response.raw_finish_reason) == ("tool_calls", "tool_use")
    assert response.usage == TokenUsage(10, 1, None)


async def test_reasoning_usage_and_cached_tokens(provider: Bedrock) -> None:
    """reasoningContent becomes reasoning_content; cacheReadInputTokens the cached tokens."""
    response = await provider.chat(ChatRequest(HI), "ok:chunks=2:reasoning=2:cached_tokens=4", 0)
    assert response.text == "tok0 tok1 "
    assert response.reasoning_content == "think0 think1 "
    assert response.usage == TokenUsage(10, 4, 4)
    assert (response.finish_reason, response.raw_finish_reason) == ("stop", "end_turn")


@pytest.mark.parametrize(
    ("word", "reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("content_filtered", "content_filter"),
        ("model_context_window_exceeded", "other"),
    ],
)
async def test_stop_reasons(provider: Bedrock, word: str, reason: str) -> None:
    """Every stopReason maps to reliant's finish reason, in calls and in both stream kinds."""
    model = f"ok:chunks=1:finish={word}"
    response = await provider.chat(ChatRequest(HI), model, 0)
    assert (response.finish_reason, response.raw_finish_reason) == (reason, word)
    chunks = await collect(provider.stream_chat_with_history(HI, model, 0))
    assert (chunks[-1].finish_reason, chunks[-1].raw_finish_reason) == (reason, word)
    events = await collect(provider.stream_chat(ChatRequest(HI), model, 0))
    assert (events[-1].finish_reason, events[-1].raw_finish_reason) == (reason, word)


async def test_guardrail_with_text_ends_normally(provider: Bedrock) -> None:
    """guardrail_intervened after text is content_filter, in a call and in a stream."""
    response = await provider.chat(ChatRequest(HI), "content_filter:after=2", 0)
    assert (response.text, response.finish_reason) == ("tok0 tok1 ", "content_filter")
    chunks = await collect(provider.stream_chat_with_history(HI, "content_filter:after=2", 0))
    assert [c.delta for c in chunks] == ["tok0 ", "tok1 ", ""]
    assert (chunks[-1].finish_reason, chunks[-1].raw_finish_reason) == (
        "content_filter",
        "guardrail_intervened",
    )


@pytest.mark.parametrize("kind", ["call", "chunks", "events"])
async def test_guardrail_without_text_is_a_content_filter_error(
    provider: Bedrock, kind: str
) -> None:
    """guardrail_intervened before any text is a ContentFilterError (final, not retried)."""
    with pytest.raises(ContentFilterError) as info:
        if kind == "call":
            await provider.chat(ChatRequest(HI), "content_filter", 0)
        elif kind == "chunks":
            await collect(provider.stream_chat_with_history(HI, "content_filter", 0))
        else:
            await collect(provider.stream_chat(ChatRequest(HI), "content_filter", 0))
    assert "guardrail_intervened" in str(info.value)
    assert not classify(info.value).retryable


# -- streams --------------------------------------------------------------------------------


async def test_stream_chunks(server: FakeLLMServer, provider: Bedrock) -> None:
    """ConverseStream text arrives as chunks, then a final chunk with reason, model and usage."""
    chunks = await collect(provider.stream_chat_with_system("S", "Hi", "ok:chunks=3", 0))
    assert chunks == [
        StreamChunk("tok0 "),
        StreamChunk("tok1 "),
        StreamChunk("tok2 "),
        final("stop", "end_turn", "ok:chunks=3", TokenUsage(10, 3, None)),
    ]
    (request,) = server.requests
    assert (request.path, request.stream) == ("/model/ok%3Achunks%3D3/converse-stream", True)
    assert request.json["system"] == [{"text": "S"}]


async def test_stream_chunks_reasoning_and_token_counts(provider: Bedrock) -> None:
    """Reasoning pieces come as reasoning chunks; count_tokens estimates each text chunk."""
    options = StreamOptions(count_tokens=True)
    chunks = await collect(
        provider.stream_chat_with_history(HI, "ok:chunks=1:reasoning=2", 0, options)
    )
    assert [(c.delta, c.reasoning) for c in chunks[:3]] == [
        ("", "think0 "),
        ("", "think1 "),
        ("tok0 ", None),
    ]
    assert chunks[2].token_count > 0
    assert chunks[-1].is_final


async def test_stream_events_with_tools(provider: Bedrock) -> None:
    """Events: reasoning, text, tool calls reassembled from fragments, usage, then Final."""
    request = ChatRequest(HI, [WEATHER, ToolSpec("lookup", "", {})])
    events = await collect(provider.stream_chat(request, "tools:calls=2:chunks=1:reasoning=1", 0))
    assert events == [
        ReasoningDelta("think0 "),
        TextDelta("tok0 "),
        ToolCallEvent(ToolCall("call_0_0", "get_weather", ARGS)),
        ToolCallEvent(ToolCall("call_0_1", "lookup", ARGS)),
        UsageEvent(TokenUsage(10, 2, None)),
        Final(
            "tool_calls", "tool_use", "tools:calls=2:chunks=1:reasoning=1", TokenUsage(10, 2, None)
        ),
    ]


async def test_no_done_is_complete_without_usage(provider: Bedrock) -> None:
    """A stream with messageStop but no metadata is complete (no usage to report)."""
    chunks = await collect(provider.stream_chat_with_history(HI, "no_done:chunks=1", 0))
    assert chunks == [StreamChunk("tok0 "), final("stop", "end_turn", "no_done:chunks=1", None)]


# -- recorded streams -------------------------------------------------------------------------

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def replay(server: FakeLLMServer, name: str) -> None:
    """Answer every request for CLAUDE with the recorded event stream ``name``, as sent."""
    body = (RECORDED / name).read_bytes()
    response = http_response(body, headers=EVENT_STREAM, chunked=True)
    server.script_raw(CLAUDE, [RawResponse([response], then="close")])


async def test_recorded_text_stream(server: FakeLLMServer, provider: Bedrock) -> None:
    """A real ConverseStream answer (with its ``p`` padding fields) reads as text and usage."""
    replay(server, "bedrock_converse_stream_text.eventstream")
    chunks = await collect(provider.stream_chat_with_history(HI, CLAUDE, 0))
    text = "".join(c.delta for c in chunks)
    assert text == (
        "Hello! As an AI language model, I don't have feelings, but I'm functioning well "
        "and ready to assist you. How can I help you today?"
    )
    assert chunks[-1] == final("stop", "end_turn", CLAUDE, TokenUsage(13, 35, None))
    assert server.requests[0].path == (
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
    )


async def test_recorded_tool_use_stream(server: FakeLLMServer, provider: Bedrock) -> None:
    """A real stream with text then a toolUse block reassembles the call from 13 fragments."""
    replay(server, "bedrock_converse_stream_tool_use.eventstream")
    events = await collect(provider.stream_chat(ChatRequest(HI, [WEATHER]), CLAUDE, 0))
    calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
    assert calls == [
        ToolCall(
            "tooluse_wnjikhCUTruJciycmmm5Kg",
            "get_weather",
            '{"location": "San Francisco, CA", "unit": "fahrenheit"}',
        )
    ]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text.startswith("I can certainly help") and text.endswith("for you.")
    usage = TokenUsage(414, 114, None)
    assert events[-2:] == [UsageEvent(usage), Final("tool_calls", "tool_use", CLAUDE, usage)]


async def test_recorded_validation_error(server: FakeLLMServer, provider: Bedrock) -> None:
    """A real 400 (x-amzn-ErrorType ValidationException) is a final ProviderError naming it."""
    headers = {
        "Content-Type": "application/json",
        "x-amzn-RequestId": "2cc171c3-b38a-4a63-bb2f-0cf19cd8e9d5",
        "x-amzn-ErrorType": "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/",
    }
    body = b'{"message":"The provided model identifier is invalid."}'
    server.script_raw(
        "bad-model", [RawResponse([http_response(body, status=400, headers=headers)])]
    )
    error = await failure_of(provider.stream_chat_with_history(HI, "bad-model", 0))
    assert isinstance(error, ProviderError) and error.status_code == 400
    assert str(error) == (
        "bedrock API error (400 ValidationException): "
        '{"message":"The provided model identifier is invalid."}'
    )
    assert is_non_retryable(error)


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "name", "code", "retryable"),
    [
        (429, "throttlingException", 429, True),
        (503, "serviceUnavailableException", 503, True),
        (500, "internalServerException", 500, True),
        (424, "modelStreamErrorException", 500, True),
        (408, "modelTimeoutException", 408, True),
        (400, "validationException", 400, False),
    ],
)
async def test_exception_frame_before_the_first_item(
    provider: Bedrock, status: int, name: str, code: int, retryable: bool
) -> None:
    """An exception frame before any item is a classified ProviderError named after it."""
    error = await failure_of(
        provider.stream_chat_with_history(HI, f"inband_error:status={status}", 0)
    )
    assert type(error) is ProviderError
    assert error.status_code == code
    assert str(error) == f"bedrock API error ({code} {name}): fake error {status}"
    assert classify(error).retryable is retryable
    assert is_rate_limited(error) is (code == 429)
    assert (error.kind == "timeout") is (name == "modelTimeoutException")


async def test_validation_frame_about_length_is_the_context_window(provider: Bedrock) -> None:
    """A validationException saying the input is too long is a context-window error."""
    model = "inband_error:status=400:message=Input is too long for requested model."
    error = await failure_of(provider.stream_chat(ChatRequest(HI), model, 0))
    assert isinstance(error, ProviderError) and is_context_window_exceeded(error)


async def test_exception_frame_after_the_first_item(provider: Bedrock) -> None:
    """After an item, a throttlingException is a StreamError caused by the 429 ProviderError."""
    error = await failure_of(
        provider.stream_chat_with_history(HI, "inband_error:after=2:status=429", 0)
    )
    assert isinstance(error, StreamError)
    cause = error.__cause__
    assert type(cause) is ProviderError and cause.status_code == 429
    assert str(cause) == "bedrock API error (429 throttlingException): fake error 429"


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (429, "ThrottlingException"),
        (503, "ServiceUnavailableException"),
        (403, "AccessDeniedException"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_http_errors_name_their_error_type(
    provider: Bedrock, status: int, name: str, stream: bool
) -> None:
    """A failed call reads x-amzn-ErrorType and the JSON body; Retry-After is kept."""
    model = f"status:{status}:retry_after=2"
    with pytest.raises(ProviderError) as info:
        if stream:
            await collect(provider.stream_chat_with_history(HI, model, 0))
        else:
            await provider.chat_with_history(HI, model, 0)
    error = info.value
    assert str(error) == f'bedrock API error ({status} {name}): {{"message":"fake error {status}"}}'
    assert (error.status_code, error.retry_after) == (status, 2.0)


async def test_model_timeout_status_is_a_timeout(provider: Bedrock) -> None:
    """A 408 ModelTimeoutException answer is kind timeout, retryable."""
    with pytest.raises(ProviderError) as info:
        await provider.chat_with_history(HI, "status:408", 0)
    assert info.value.kind == "timeout" and not is_non_retryable(info.value)


async def test_context_window_status(provider: Bedrock) -> None:
    """context:N answers a 400 ValidationException the classifier reads as the context window."""
    with pytest.raises(ProviderError) as info:
        await provider.chat_with_history([ChatMessage.user("x" * 50)], "context:10", 0)
    assert str(info.value) == (
        'bedrock API error (400 ValidationException): {"message":"Input is too long for '
        'requested model."}'
    )
    assert is_context_window_exceeded(info.value)


@pytest.mark.parametrize("after", [0, 2])
async def test_bad_crc_is_malformed(provider: Bedrock, after: int) -> None:
    """A frame with a wrong CRC is malformed_response (under a StreamError once committed)."""
    error = await failure_of(provider.stream_chat_with_history(HI, f"malformed:after={after}", 0))
    if after:
        assert isinstance(error, StreamError)
        error = error.__cause__  # type: ignore[assignment]
    assert isinstance(error, ProviderError) and error.kind == "malformed_response"
    assert "message CRC mismatch" in str(error)


@pytest.mark.parametrize("after", [0, 2])
async def test_cut_mid_frame_is_broken(provider: Bedrock, after: int) -> None:
    """A connection cut inside a frame is a failure, never a silent success."""
    error = await failure_of(provider.stream_chat(ChatRequest(HI), f"cut:after={after}", 0))
    assert isinstance(error, StreamError if after else ProviderError)


async def test_a_cut_inside_a_tool_call_says_so(provider: Bedrock) -> None:
    """A stream cut while a toolUse block's input arrives is a StreamError marked as such."""
    request = ChatRequest(HI, [WEATHER])
    error = await failure_of(provider.stream_chat(request, "cut:after=2:chunks=1:calls=1", 0))
    assert isinstance(error, StreamError) and error.tool_call_in_progress


async def test_clean_end_inside_a_frame_is_broken(server: FakeLLMServer, provider: Bedrock) -> None:
    """A body that ends cleanly in the middle of a frame is broken, even after messageStop."""
    stop = encode_message(
        {":event-type": "messageStop", ":message-type": "event"}, b'{"stopReason":"end_turn"}'
    )
    text = encode_message(
        {":event-type": "contentBlockDelta", ":message-type": "event"},
        b'{"contentBlockIndex":0,"delta":{"text":"hi"}}',
    )
    body = text + stop + text[:10]
    server.script_raw("half", [RawResponse([http_response(body, headers=EVENT_STREAM)])])
    error = await failure_of(provider.stream_chat_with_history(HI, "half", 0))
    assert isinstance(error, StreamError)
    assert "stream cut inside an event-stream frame" in str(error)


@pytest.mark.parametrize("kind", ["empty", "no_terminator:chunks=0"])
async def test_no_message_stop_before_any_item_is_a_retryable_failure(
    provider: Bedrock, kind: str
) -> None:
    """A stream without content or messageStop is a retryable ProviderError, not an answer."""
    error = await failure_of(provider.stream_chat_with_history(HI, kind, 0))
    assert type(error) is ProviderError and classify(error).retryable
    assert "stream ended without messageStop" in str(error)


async def test_no_terminator_after_text_is_a_stream_error(provider: Bedrock) -> None:
    """Text then a clean end with no messageStop is a broken committed stream."""
    error = await failure_of(provider.stream_chat(ChatRequest(HI), "no_terminator", 0))
    assert isinstance(error, StreamError)


async def test_oversized_frame_is_refused(server: FakeLLMServer) -> None:
    """A frame larger than max_event_bytes is response_too_large, refused from its prelude."""
    big = encode_message(
        {":event-type": "contentBlockDelta", ":message-type": "event"},
        json.dumps({"contentBlockIndex": 0, "delta": {"text": "x" * 5000}}).encode(),
    )
    server.script_raw(
        "big", [RawResponse([http_response(big[:100], headers=EVENT_STREAM)], then="hang")]
    )
    async with Bedrock(base_url=server.bedrock_base_url, api_key=KEY, max_event_bytes=1024) as p:
        with anyio.fail_after(5):
            error = await failure_of(p.stream_chat_with_history(HI, "big", 0))
    assert isinstance(error, ProviderError) and error.kind == "response_too_large"


# -- the fake server's wire ------------------------------------------------------------------


async def test_fake_server_speaks_bedrock_wire(server: FakeLLMServer) -> None:
    """The fake's errors carry x-amzn-ErrorType; its exception frames decode with their headers."""
    from reliant.providers._eventstream import EventStreamDecoder

    async with httpx2.AsyncClient(base_url=server.bedrock_base_url) as client:
        failed = await client.post("/model/status%3A429/converse", json={"messages": []})
        stream = await client.post(
            "/model/inband_error%3Aafter%3D1%3Astatus%3D429/converse-stream",
            json={"messages": []},
        )
    assert failed.status_code == 429
    assert failed.headers["x-amzn-errortype"] == (
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
    )
    assert failed.json() == {"message": "fake error 429"}
    assert stream.headers["content-type"] == "application/vnd.amazon.eventstream"
    decoder = EventStreamDecoder(1 << 20)
    frames = decoder.feed(stream.content)
    assert decoder.finish()
    assert [f.text(":event-type") or f.text(":exception-type") for f in frames] == [
        "messageStart",
        "contentBlockDelta",
        "throttlingException",
    ]
    assert frames[-1].message_type == "exception"
    assert json.loads(frames[-1].payload) == {"message": "fake error 429"}
    assert [r.stream for r in server.requests] == [False, True]


# -- failover through ReliableProvider ------------------------------------------------------------

FAULTS = [
    "status:503",
    "status:429",
    "inband_error:status=429",
    "inband_error:status=503",
    "cut",
    "reset",
    "malformed",
    "empty",
    "no_terminator:chunks=0",
    "hang_headers",
    "hang_body",
]


@pytest.fixture
async def pair(server: FakeLLMServer) -> AsyncIterator[tuple[Bedrock, Anthropic]]:
    async with (
        Bedrock(name="bedrock", base_url=server.bedrock_base_url, api_key=KEY) as b,
        Anthropic(name="anthropic", base_url=server.anthropic_base_url, api_key="sk-ant-x-1") as a,
    ):
        yield b, a


def reliable(
    first: tuple[str, Any], second: tuple[str, Any], bad: str, good: str
) -> ReliableProvider:
    return ReliableProvider(
        [first, second],
        max_retries=0,
        model_aliases={first[0]: {"m": bad}, second[0]: {"m": good}},
        first_chunk_timeout=2.0,
    )


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("api", ["chunks", "events"])
@pytest.mark.parametrize("order", ["bedrock-first", "anthropic-first"])
async def test_every_fault_fails_over_in_a_stream(
    server: FakeLLMServer,
    pair: tuple[Bedrock, Anthropic],
    fault: str,
    api: str,
    order: str,
) -> None:
    """Each fault before the first item moves the stream to the other provider."""
    b, a = pair
    first, second = (("bedrock", b), ("anthropic", a))
    if order == "anthropic-first":
        first, second = second, first
    llm = reliable(first, second, fault, "ok:chunks=2")
    with fallback_scope():
        if api == "chunks":
            async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
                text = "".join([c.delta async for c in chunks])
        else:
            async with llm.stream_chat(ChatRequest(HI), "m", 0.0) as events:
                items = [e async for e in events]
            text = "".join(e.text for e in items if isinstance(e, TextDelta))
        info = take_last_provider_fallback()
    assert text == "tok0 tok1 "
    assert info is not None and info.actual_provider == second[0]
    assert [r.model for r in server.requests] == [fault, "ok:chunks=2"]
    hangs = fault.startswith("hang")
    assert anyio.current_time() == (2.0 if hangs else 0.0)


@pytest.mark.parametrize(
    "fault", [f for f in FAULTS if not f.startswith(("hang", "no_terminator", "empty"))]
)
@pytest.mark.parametrize("order", ["bedrock-first", "anthropic-first"])
async def test_every_fault_fails_over_in_a_call(
    server: FakeLLMServer,
    pair: tuple[Bedrock, Anthropic],
    fault: str,
    order: str,
) -> None:
    """Each fault of a non-streaming call moves it to the other provider."""
    b, a = pair
    first, second = (("bedrock", b), ("anthropic", a))
    if order == "anthropic-first":
        first, second = second, first
    llm = reliable(first, second, fault, "ok:chunks=2")
    assert await llm.chat_with_history(HI, "m", 0.0) == "tok0 tok1 "
    assert [r.model for r in server.requests] == [fault, "ok:chunks=2"]
    assert anyio.current_time() == 0.0


async def test_a_complete_stream_with_no_content_is_an_empty_answer(
    server: FakeLLMServer, pair: tuple[Bedrock, Anthropic]
) -> None:
    """A stream that says why it stopped but has no content is an answer (as on Anthropic)."""
    b, a = pair
    body = frames(
        [
            ("messageStart", {"role": "assistant"}),
            ("messageStop", {"stopReason": "end_turn"}),
            ("metadata", {"usage": {"inputTokens": 3, "outputTokens": 0}}),
        ]
    )
    response = http_response(body, headers={**EVENT_STREAM, "connection": "close"})
    server.script_raw("nothing", [RawResponse([response])])
    llm = reliable(("bedrock", b), ("anthropic", a), "nothing", "ok:chunks=1")
    async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
        got = [c async for c in chunks]
    assert got == [final("stop", "end_turn", "nothing", TokenUsage(3, 0, None))]
    assert [r.model for r in server.requests] == ["nothing"]
    assert anyio.current_time() == 0.0


@pytest.mark.parametrize("stream", [False, True])
async def test_a_guardrail_refusal_is_final(
    server: FakeLLMServer, pair: tuple[Bedrock, Anthropic], stream: bool
) -> None:
    """guardrail_intervened with no text is a ContentFilterError: final, no failover, no retry."""
    b, a = pair
    llm = reliable(("bedrock", b), ("anthropic", a), "content_filter", "ok")
    with pytest.raises(ContentFilterError):
        if stream:
            async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
                async for _ in chunks:
                    pass
        else:
            await llm.chat_with_history(HI, "m", 0.0)
    assert [r.model for r in server.requests] == ["content_filter"]


async def test_hung_call_fails_over_at_its_request_timeout(server: FakeLLMServer) -> None:
    """A Bedrock call that never answers is dropped at request_timeout; Anthropic serves."""
    async with (
        Bedrock(base_url=server.bedrock_base_url, api_key=KEY, request_timeout=5.0) as b,
        Anthropic(base_url=server.anthropic_base_url, api_key="sk-ant-x-1") as a,
    ):
        llm = reliable(("bedrock", b), ("anthropic", a), "hang_headers", "ok:chunks=1")
        assert await llm.chat_with_history(HI, "m", 0.0) == "tok0 "
    assert anyio.current_time() == 5.0


async def test_throttling_is_retried_after_backoff_then_serves(
    server: FakeLLMServer, pair: tuple[Bedrock, Anthropic]
) -> None:
    """A throttlingException frame is retried on Bedrock after its backoff, then serves."""
    b, a = pair
    server.script("busy", ["inband_error:status=429", "ok:chunks=1"])
    llm = ReliableProvider(
        [("bedrock", b), ("anthropic", a)],
        max_retries=1,
        base_backoff=0.5,
        model_aliases={"bedrock": {"m": "busy"}, "anthropic": {"m": "ok"}},
        rng=NoJitter(),
    )
    async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
        text = "".join([c.delta async for c in chunks])
    assert text == "tok0 "
    assert [(r.model, r.received_at) for r in server.requests] == [("busy", 0.0), ("busy", 0.5)]


@pytest.mark.parametrize(
    "fault",
    ["inband_error:after=2:status=429", "cut:after=2", "malformed:after=2", "reset:after=2"],
)
async def test_a_fault_after_the_first_item_is_a_stream_error(
    server: FakeLLMServer, pair: tuple[Bedrock, Anthropic], fault: str
) -> None:
    """After the first item no failover happens: the caller gets a StreamError."""
    b, a = pair
    llm = reliable(("bedrock", b), ("anthropic", a), fault, "ok")
    seen: list[str] = []
    with pytest.raises(StreamError) as info:
        async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
            async for c in chunks:
                seen.append(c.delta)
    assert seen == ["tok0 ", "tok1 "]
    assert len(server.requests) == 1
    if fault.startswith("inband"):
        cause = info.value.__cause__
        assert isinstance(cause, ProviderError) and cause.status_code == 429


async def test_context_window_on_every_route_is_reported(
    server: FakeLLMServer, pair: tuple[Bedrock, Anthropic]
) -> None:
    """Bedrock's "Input is too long" counts as a context-window failure in the trail."""
    b, a = pair
    llm = reliable(("bedrock", b), ("anthropic", a), "context:5", "context:5")
    with pytest.raises(FailoverError) as info:
        await llm.chat_with_history([ChatMessage.user("x" * 50)], "m", 0.0)
    assert "Input is too long for requested model." in str(info.value)


# -- authentication -----------------------------------------------------------------------------

# botocore's credential chain (environment, files) is read in a worker thread; a
# virtual clock would jump past the call's timeouts while the loop waits on that
# thread, so the tests that go through the chain run on both loops in real time.
REAL_CLOCKS = pytest.mark.parametrize("anyio_backend", ["trio", "asyncio"])

SIGV4_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<akid>[A-Z0-9]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)"
    r"/bedrock/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<sig>[0-9a-f]{64})"
)


def sigv4(request: Any) -> re.Match[str]:
    match = SIGV4_RE.fullmatch(request.headers["authorization"])
    assert match is not None, request.headers["authorization"]
    assert re.fullmatch(r"\d{8}T\d{6}Z", request.headers["x-amz-date"])
    assert match["date"] == request.headers["x-amz-date"][:8]
    assert "host" in match["signed"].split(";") and "x-amz-date" in match["signed"].split(";")
    return match


@pytest.mark.parametrize("stream", [False, True])
async def test_sigv4_with_explicit_credentials(server: FakeLLMServer, stream: bool) -> None:
    """Explicit keys sign every request (AWS4-HMAC-SHA256, region, service bedrock)."""
    async with Bedrock(
        base_url=server.bedrock_base_url,
        region="eu-west-3",
        aws_access_key_id=AKID,
        aws_secret_access_key=SECRET,
    ) as p:
        if stream:
            await collect(p.stream_chat_with_history(HI, "ok:chunks=1", 0))
        else:
            await p.chat_with_history(HI, "ok:chunks=1", 0)
    (request,) = server.requests
    match = sigv4(request)
    assert (match["akid"], match["region"]) == (AKID, "eu-west-3")
    assert "x-amz-security-token" not in request.headers


async def test_signature_verifies(server: FakeLLMServer) -> None:
    """The signature is the one botocore computes for the request the server received."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    async with Bedrock(
        base_url=server.bedrock_base_url, aws_access_key_id=AKID, aws_secret_access_key=SECRET
    ) as p:
        await p.simple_chat("Hi", "ok", 0)
    (request,) = server.requests
    match = sigv4(request)
    body = json.dumps(request.json, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(body) == int(request.headers["content-length"])
    signed = AWSRequest(
        method="POST",
        url=server.bedrock_base_url + request.path,
        data=body,
        headers={"content-type": request.headers["content-type"]},
    )
    signed.context["timestamp"] = request.headers["x-amz-date"]
    signed.headers["X-Amz-Date"] = request.headers["x-amz-date"]
    signer = SigV4Auth(Credentials(AKID, SECRET), "bedrock", "us-east-1")
    canonical = signer.canonical_request(signed)
    assert match["sig"] == signer.signature(signer.string_to_sign(signed, canonical), signed)


async def test_sigv4_with_a_session_token(server: FakeLLMServer) -> None:
    """Temporary credentials add X-Amz-Security-Token."""
    async with Bedrock(
        base_url=server.bedrock_base_url,
        aws_access_key_id=AKID,
        aws_secret_access_key=SECRET,
        aws_session_token=TOKEN,
    ) as p:
        await p.simple_chat("Hi", "ok", 0)
    (request,) = server.requests
    sigv4(request)
    assert request.headers["x-amz-security-token"] == TOKEN


@REAL_CLOCKS
async def test_sigv4_from_the_environment(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without explicit keys, botocore's chain reads AWS_ACCESS_KEY_ID and friends."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENVIRONMENT1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    async with Bedrock(base_url=server.bedrock_base_url) as p:
        await p.simple_chat("Hi", "ok", 0)
        await p.simple_chat("Hi", "ok", 0)
    match = sigv4(server.requests[1])
    assert (match["akid"], match["region"]) == ("AKIAFROMENVIRONMENT1", "ap-southeast-2")
    assert server.requests[1].headers["x-amz-security-token"] == TOKEN


async def test_bearer_key_from_the_environment(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_BEARER_TOKEN_BEDROCK is sent as a bearer token, with no SigV4."""
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", KEY)
    async with Bedrock(base_url=server.bedrock_base_url) as p:
        await p.simple_chat("Hi", "ok", 0)
    (request,) = server.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "x-amz-date" not in request.headers


@REAL_CLOCKS
@pytest.mark.parametrize("stream", [False, True])
async def test_no_credentials_is_a_final_error_without_a_request(
    server: FakeLLMServer, stream: bool
) -> None:
    """No key and no AWS credentials anywhere: a clear non-retryable error, nothing sent."""
    async with Bedrock(base_url=server.bedrock_base_url) as p:
        with pytest.raises(ProviderError) as info:
            if stream:
                await collect(p.stream_chat_with_history(HI, "ok", 0))
            else:
                await p.simple_chat("Hi", "ok", 0)
    assert "no AWS credentials found" in str(info.value)
    assert info.value.status_code == 401 and is_non_retryable(info.value)
    assert server.requests == []


@REAL_CLOCKS
async def test_a_failing_credential_chain_is_a_final_error(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chain that raises (an AWS_PROFILE no file defines) is a final error; nothing is sent."""
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    async with Bedrock(base_url=server.bedrock_base_url) as p:
        with pytest.raises(ProviderError) as info:
            await p.simple_chat("Hi", "ok", 0)
    assert "resolving AWS credentials failed: ProfileNotFound" in str(info.value)
    assert is_non_retryable(info.value) and server.requests == []


@pytest.mark.parametrize("explicit", [False, True])
async def test_sigv4_without_botocore_says_how_to_get_it(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch, explicit: bool
) -> None:
    """Without the bedrock extra, SigV4 fails with the pip command to run; nothing is sent."""
    monkeypatch.setitem(sys.modules, "botocore.session", None)
    keys = {"aws_access_key_id": AKID, "aws_secret_access_key": SECRET} if explicit else {}
    async with Bedrock(base_url=server.bedrock_base_url, **keys) as p:
        with pytest.raises(ProviderError, match=r"pip install 'reliant\[bedrock\]'") as info:
            await p.simple_chat("Hi", "ok", 0)
    assert is_non_retryable(info.value) and server.requests == []


async def test_a_mistyped_behaviour_is_a_fake_server_spec_error(provider: Bedrock) -> None:
    """A model name that looks like a behaviour but is none is refused plainly, on Bedrock too."""
    with pytest.raises(FakeServerSpecError, match="did you mean 'hang_headers'"):
        await provider.simple_chat("Hi", "hang", 0)


async def test_half_explicit_credentials_are_refused() -> None:
    """A key id without its secret (or the reverse) is a ValueError at construction."""
    with pytest.raises(ValueError, match="both aws_access_key_id and aws_secret_access_key"):
        Bedrock(aws_access_key_id=AKID)
    with pytest.raises(ValueError, match="aws_session_token only with them"):
        Bedrock(aws_session_token=TOKEN)


async def test_region_and_default_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """The region comes from the argument, else AWS_REGION, and names the default endpoint."""
    assert Bedrock(region="eu-central-1", api_key=KEY).base_url == (
        "https://bedrock-runtime.eu-central-1.amazonaws.com"
    )
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    assert Bedrock(api_key=KEY).base_url == "https://bedrock-runtime.us-west-2.amazonaws.com"


# -- secrets ------------------------------------------------------------------------------------


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


@REAL_CLOCKS
@pytest.mark.parametrize("auth", ["sigv4", "env", "bearer"])
@pytest.mark.parametrize(
    "fault", ["reset:after=0", "status:403", "inband_error:after=1:status=400"]
)
async def test_secrets_never_leak(
    server: FakeLLMServer,
    logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    auth: str,
    fault: str,
) -> None:
    """The secret key, session token, bearer key and signature appear nowhere we show."""
    secrets = (SECRET, TOKEN) if auth != "bearer" else (KEY,)
    behavior = Behavior.parse(fault)
    if not fault.startswith("reset"):
        behavior = dataclasses.replace(behavior, message="echo " + " ".join(secrets))
    server.script("m", [behavior])
    kwargs: dict[str, Any] = {}
    if auth == "sigv4":
        kwargs = {"aws_access_key_id": AKID, "aws_secret_access_key": SECRET}
        kwargs["aws_session_token"] = TOKEN
    elif auth == "env":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", AKID)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    else:
        kwargs = {"api_key": KEY}
    async with Bedrock(base_url=server.bedrock_base_url, **kwargs) as p:
        llm = ReliableProvider([("bedrock", p)], max_retries=0)
        with pytest.raises(ReliantError) as info:
            async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
                async for _ in chunks:
                    pass
        text = everything_about(info.value) + logs.text + repr(p)
        logging.getLogger("test").exception("failed", exc_info=info.value)
        text += logs.text
    assert server.requests, "the request was sent"
    if auth != "bearer":
        signature = sigv4(server.requests[0])["sig"]
        secrets = (*secrets, signature)
    for secret in secrets:
        assert secret not in text


# -- hostile wire fields ------------------------------------------------------------------------

STREAM_TEMPLATE: list[tuple[str, dict[str, Any]]] = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "r"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "hi"}}),
    (
        "contentBlockStart",
        {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t", "name": "f"}}},
    ),
    ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{}"}}}),
    ("contentBlockStop", {"contentBlockIndex": 2}),
    ("messageStop", {"stopReason": "tool_use"}),
    ("metadata", {"usage": {"inputTokens": 1, "outputTokens": 2, "cacheReadInputTokens": 0}}),
]
JSON_TEMPLATE: dict[str, Any] = {
    "output": {
        "message": {
            "role": "assistant",
            "content": [
                {"text": "hi"},
                {"reasoningContent": {"reasoningText": {"text": "r", "signature": "s"}}},
                {"toolUse": {"toolUseId": "t", "name": "f", "input": {"a": 1}}},
            ],
        }
    },
    "stopReason": "tool_use",
    "usage": {"inputTokens": 1, "outputTokens": 2, "cacheReadInputTokens": 0},
}
LIES: list[Any] = [None, 7, -1, 1.5, "s", [], {}, [1], {"x": []}, True]


def frames(events: list[tuple[str, Any]]) -> bytes:
    return b"".join(
        encode_message({":event-type": kind, ":message-type": "event"}, json.dumps(data).encode())
        for kind, data in events
    )


async def test_wrong_types_in_every_stream_field(server: FakeLLMServer, provider: Bedrock) -> None:
    """Any wrong type in any event field gives a typed result or a reliant error only."""
    cases: list[bytes] = []
    for i, (kind, data) in enumerate(STREAM_TEMPLATE):
        for path in paths(data):
            for lie in LIES:
                events = list(STREAM_TEMPLATE)
                events[i] = (kind, replaced(data, path, lie))
                cases.append(frames(events))
    server.script_raw(
        "lie",
        [
            RawResponse([http_response(body, headers={**EVENT_STREAM, "connection": "close"})])
            for body in cases
        ],
    )
    outcomes: set[str] = set()
    for i in range(len(cases)):
        try:
            if i % 2:
                got = await collect(provider.stream_chat(ChatRequest(HI, [WEATHER]), "lie", 0))
            else:
                got = await collect(provider.stream_chat_with_history(HI, "lie", 0))
        except ProviderError as exc:
            outcomes.add(exc.kind or "provider")
        except StreamError as exc:
            assert isinstance(exc.__cause__, ProviderError), repr(exc.__cause__)
            outcomes.add("stream")
        else:
            assert got and isinstance(got[-1], Final | StreamChunk)
            outcomes.add("ok")
    assert {"ok", "malformed_response"} <= outcomes


async def test_wrong_types_in_every_answer_field(server: FakeLLMServer, provider: Bedrock) -> None:
    """Any wrong type in any Converse answer field is a malformed_response, never a raw error."""
    for path in paths(JSON_TEMPLATE):
        for lie in LIES:
            body = json.dumps(replaced(JSON_TEMPLATE, path, lie)).encode()
            server.script_raw("lie", [RawResponse([http_response(body, headers=CLOSE)])])
            try:
                response = await provider.chat(ChatRequest(HI, [WEATHER]), "lie", 0)
            except ProviderError as exc:
                assert exc.kind in ("malformed_response", "content_filter"), (path, lie, exc)
            else:
                assert response.text is None or type(response.text) is str
                assert all(type(c.arguments) is str for c in response.tool_calls)
