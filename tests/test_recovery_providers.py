"""What the leaf providers tell stream recovery: finish reasons, reasoning, end states,
content-filter refusals, prefill and tool calls cut mid-way; over real loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from reliant import (
    ChatMessage,
    ChatRequest,
    Final,
    ProviderError,
    StreamChunk,
    StreamError,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    UsageEvent,
)
from reliant._exceptions import ContentFilterError
from reliant._types import ReasoningDelta
from reliant.classify import classify, is_context_window_exceeded
from reliant.providers import Anthropic, OpenAICompatible
from reliant.providers._finish import ANTHROPIC_STOP_REASONS, OPENAI_FINISH_REASONS
from reliant.providers._http import HTTPProvider
from reliant.testing.fake_server import Behavior, FakeLLMServer

pytestmark = pytest.mark.anyio

KEY = "sk-test-0123456789abcdef"
NAMES = ["openai", "anthropic"]
STREAM_KINDS = ["system", "history", "events"]
ARGS = Behavior().tool_arguments
WEATHER = ToolSpec("get_weather", "Weather.", {"type": "object"})
Q = [ChatMessage.user("q")]


def build(name: str, server: FakeLLMServer, **kwargs: Any) -> HTTPProvider:
    if name == "openai":
        return OpenAICompatible(base_url=server.openai_base_url, api_key=KEY, **kwargs)
    return Anthropic(base_url=server.anthropic_base_url, api_key=KEY, **kwargs)


@pytest.fixture(params=NAMES)
async def provider(request: pytest.FixtureRequest, server: FakeLLMServer) -> AsyncIterator[Any]:
    async with build(request.param, server) as p:
        yield p


async def collect(stream: Any) -> list[Any]:
    async with stream as items:
        return [item async for item in items]


def open_stream(provider: Any, kind: str, model: str, messages: Any = None) -> Any:
    messages = messages or Q
    if kind == "system":
        return provider.stream_chat_with_system(None, "q", model, 0.0)
    if kind == "history":
        return provider.stream_chat_with_history(messages, model, 0.0)
    return provider.stream_chat(ChatRequest(messages), model, 0.0)


def text_of(items: list[Any]) -> str:
    return "".join(
        i.text if isinstance(i, TextDelta) else getattr(i, "delta", "") or "" for i in items
    )


def end_of(items: list[Any]) -> Final | StreamChunk:
    last = items[-1]
    assert isinstance(last, Final) or (isinstance(last, StreamChunk) and last.is_final)
    return last


# -- finish reasons -----------------------------------------------------------------------

# (provider, the word the server sends, the normalised reason)
FINISH_CASES = [
    ("openai", "stop", "stop"),
    ("openai", "length", "length"),
    ("openai", "tool_calls", "tool_calls"),
    ("openai", "function_call", "tool_calls"),
    ("openai", "content_filter", "content_filter"),
    ("openai", "eos_token", "other"),
    ("anthropic", "end_turn", "stop"),
    ("anthropic", "stop_sequence", "stop"),
    ("anthropic", "max_tokens", "length"),
    ("anthropic", "tool_use", "tool_calls"),
    ("anthropic", "refusal", "content_filter"),
    ("anthropic", "pause_turn", "other"),
]


@pytest.mark.parametrize(("name", "word", "reason"), FINISH_CASES)
async def test_finish_reason_non_streaming(
    server: FakeLLMServer, name: str, word: str, reason: str
) -> None:
    """chat() carries the normalised finish reason, the raw word and the served model."""
    server.script(None, [Behavior(chunks=2, finish=word, served_model="served-1")])
    async with build(name, server) as provider:
        response = await provider.chat(ChatRequest(Q), "asked", 0.0)
    assert (response.finish_reason, response.raw_finish_reason) == (reason, word)
    assert response.model == "served-1"
    assert response.text == "tok0 tok1 "


@pytest.mark.parametrize("kind", STREAM_KINDS)
@pytest.mark.parametrize(("name", "word", "reason"), FINISH_CASES)
async def test_finish_reason_streaming(
    server: FakeLLMServer, name: str, word: str, reason: str, kind: str
) -> None:
    """The final chunk and Final carry the normalised reason, raw word, served model, usage."""
    server.script(None, [Behavior(chunks=2, finish=word, served_model="served-1")])
    async with build(name, server) as provider:
        items = await collect(open_stream(provider, kind, "asked"))
    end = end_of(items)
    assert (end.finish_reason, end.raw_finish_reason, end.model) == (reason, word, "served-1")
    assert end.usage == TokenUsage(10, 2, 0)
    assert text_of(items) == "tok0 tok1 "


def test_finish_maps_are_complete() -> None:
    """Every documented provider word has a normalised reason."""
    assert set(OPENAI_FINISH_REASONS) == {
        "stop",
        "length",
        "tool_calls",
        "function_call",
        "content_filter",
    }
    assert set(ANTHROPIC_STOP_REASONS) == {
        "end_turn",
        "stop_sequence",
        "max_tokens",
        "tool_use",
        "refusal",
    }


async def test_tool_calls_finish_reason(provider: Any) -> None:
    """A streamed tool-call answer ends with finish_reason tool_calls."""
    events = await collect(provider.stream_chat(ChatRequest(Q, [WEATHER]), "tools", 0.0))
    assert events[-2:-1] == [UsageEvent(TokenUsage(10, 0, 0))]
    assert events[-1].finish_reason == "tool_calls"
    assert ToolCallEvent(ToolCall("call_0_0", "get_weather", ARGS)) in events


# -- reasoning ----------------------------------------------------------------------------


async def test_reasoning_events(provider: Any) -> None:
    """stream_chat delivers reasoning (reasoning_content / thinking) as ReasoningDelta first."""
    events = await collect(provider.stream_chat(ChatRequest(Q), "ok:chunks=1:reasoning=2", 0.0))
    assert events[:3] == [ReasoningDelta("think0 "), ReasoningDelta("think1 "), TextDelta("tok0 ")]
    assert isinstance(events[-1], Final)


async def test_reasoning_events_with_tool_calls(provider: Any) -> None:
    """Reasoning streamed before a tool call is not lost."""
    request = ChatRequest(Q, [WEATHER])
    events = await collect(provider.stream_chat(request, "tools:reasoning=2", 0.0))
    assert events[:2] == [ReasoningDelta("think0 "), ReasoningDelta("think1 ")]
    assert ToolCallEvent(ToolCall("call_0_0", "get_weather", ARGS)) in events
    assert events[-1].finish_reason == "tool_calls"


def raw_sse(body: str) -> Behavior:
    """A 200 ``text/event-stream`` with exactly this body."""
    return Behavior(
        kind="status", status=200, body=body, headers={"content-type": "text/event-stream"}
    )


def openai_chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return "data: " + json.dumps({"model": "ds", "choices": [choice]}) + "\n\n"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_in_the_same_delta_as_a_tool_call(
    server: FakeLLMServer, field: str
) -> None:
    """A DeepSeek/Groq delta carrying reasoning and a tool-call fragment keeps both."""
    head = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    body = (
        openai_chunk({field: "plan ", "content": None})
        + openai_chunk({field: "then call", "tool_calls": [head]})
        + openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})
        + openai_chunk({}, "tool_calls")
        + "data: [DONE]\n\n"
    )
    server.script(None, [raw_sse(body)])
    async with build("openai", server) as provider:
        events = await collect(provider.stream_chat(ChatRequest(Q, [WEATHER]), "m", 0.0))
    assert events == [
        ReasoningDelta("plan "),
        ReasoningDelta("then call"),
        ToolCallEvent(ToolCall("c1", "f", "{}")),
        Final("tool_calls", "tool_calls", "ds"),
    ]


# -- end states ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_clean_end_after_finish_reason_is_complete(provider: Any, kind: str) -> None:
    """A body ending cleanly after the finish reason but without the terminator is complete."""
    items = await collect(open_stream(provider, kind, "no_done:chunks=3"))
    assert text_of(items) == "tok0 tok1 tok2 "
    assert end_of(items).finish_reason == "stop"


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_clean_end_without_finish_reason_is_an_error(provider: Any, kind: str) -> None:
    """A body that ends cleanly without any finish reason or terminator is a StreamError."""
    seen: list[Any] = []
    with pytest.raises(StreamError, match="stream ended without"):
        async with open_stream(provider, kind, "no_terminator:chunks=3") as items:
            async for item in items:
                seen.append(item)
    assert text_of(seen) == "tok0 tok1 tok2 "


async def test_no_done_with_tool_calls_completes(provider: Any) -> None:
    """Tool calls of a stream without terminator are still delivered when it finished."""
    events = await collect(provider.stream_chat(ChatRequest(Q, [WEATHER]), "no_done:calls=1", 0))
    assert ToolCallEvent(ToolCall("call_0_0", "get_weather", ARGS)) in events
    assert events[-1].finish_reason == "tool_calls"


# -- content filter -----------------------------------------------------------------------


async def test_openai_content_policy_400_is_content_filter_error(server: FakeLLMServer) -> None:
    """OpenAI's 400 content_policy_violation is a ContentFilterError, streamed or not."""
    async with build("openai", server) as provider:
        with pytest.raises(ContentFilterError) as info:
            await provider.chat(ChatRequest(Q), "content_filter", 0.0)
        error = info.value
        assert (error.provider, error.status_code, error.kind) == ("openai", 400, "content_filter")
        assert error.body is not None and "content_policy_violation" in error.body
        assert str(error).startswith("openai API error (400 Bad Request): ")
        assert classify(error).content_filter
        for kind in STREAM_KINDS:
            with pytest.raises(ContentFilterError):
                await collect(open_stream(provider, kind, "content_filter"))


@pytest.mark.parametrize(
    "inner",
    [
        {"innererror": {"code": "ResponsibleAIPolicyViolation"}},
        {"inner_error": {"code": "ResponsibleAIPolicyViolation"}},
        {},
    ],
)
async def test_azure_content_filter_400(server: FakeLLMServer, inner: dict[str, Any]) -> None:
    """Azure OpenAI's content_filter 400 shapes are ContentFilterErrors."""
    body = {
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure "
            "OpenAI's content management policy.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            **inner,
        }
    }
    server.script(None, [Behavior(kind="status", status=400, body=json.dumps(body))])
    async with build("openai", server) as provider:
        with pytest.raises(ContentFilterError) as info:
            await provider.simple_chat("q", "m", 0.0)
    assert info.value.status_code == 400


async def test_inband_content_filter_error_before_text(server: FakeLLMServer) -> None:
    """An in-band error whose code is content_filter, before any text, is a ContentFilterError."""
    error = {"error": {"message": "filtered", "type": None, "code": "content_filter"}}
    server.script(None, [raw_sse(f"data: {json.dumps(error)}\n\n")])
    async with build("openai", server) as provider:
        with pytest.raises(ContentFilterError):
            await collect(provider.stream_chat_with_system(None, "q", "m", 0.0))


async def test_other_400_is_not_content_filter(server: FakeLLMServer) -> None:
    """An ordinary 400 stays a plain ProviderError."""
    async with build("openai", server) as provider:
        with pytest.raises(ProviderError) as info:
            await provider.simple_chat("q", "status:400", 0.0)
    assert type(info.value) is ProviderError


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_refusal_before_text_is_content_filter_error(
    server: FakeLLMServer, kind: str
) -> None:
    """A stream whose first meaningful event is the refusal raises ContentFilterError."""
    for name, model in (("openai", "content_filter:status=200"), ("anthropic", "content_filter")):
        async with build(name, server) as provider:
            with pytest.raises(ContentFilterError) as info:
                await collect(open_stream(provider, kind, model))
        assert info.value.provider == name
        assert info.value.status_code is None
        assert info.value.body is not None
        assert classify(info.value).reason == "content_filter"


async def test_refusal_without_text_non_streaming(provider: Any) -> None:
    """A non-streaming answer refused without text raises ContentFilterError."""
    model = "content_filter:status=200" if provider.name == "openai" else "content_filter"
    with pytest.raises(ContentFilterError):
        await provider.chat(ChatRequest(Q), model, 0.0)


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_refusal_after_text_ends_the_stream_honestly(provider: Any, kind: str) -> None:
    """After text, a refusal ends the stream normally with finish_reason content_filter."""
    items = await collect(open_stream(provider, kind, "content_filter:after=2"))
    assert text_of(items) == "tok0 tok1 "
    end = end_of(items)
    assert end.finish_reason == "content_filter"
    assert end.raw_finish_reason == ("content_filter" if provider.name == "openai" else "refusal")


async def test_refusal_after_text_non_streaming(provider: Any) -> None:
    """A non-streaming answer with text and a refusal keeps the text and the honest reason."""
    response = await provider.chat(ChatRequest(Q), "content_filter:after=2", 0.0)
    assert (response.text, response.finish_reason) == ("tok0 tok1 ", "content_filter")


# -- prefill ------------------------------------------------------------------------------


PREFILL = [ChatMessage.user("q"), ChatMessage.assistant("tok0 tok1 ")]


async def test_anthropic_prefill_payload(server: FakeLLMServer) -> None:
    """Anthropic sends the trailing assistant message without trailing whitespace."""
    async with build("anthropic", server) as provider:
        assert provider.supports_prefill
        await provider.chat_with_history(PREFILL, "ok", 0.0)
        await collect(provider.stream_chat(ChatRequest(PREFILL), "ok", 0.0))
        await provider.chat_with_history([*Q, ChatMessage.assistant(" \n")], "ok", 0.0)
    for request in server.requests[:2]:
        assert request.json["messages"][-1] == {"role": "assistant", "content": "tok0 tok1"}
    # An all-whitespace prefill says nothing and is left out.
    assert server.requests[2].json["messages"] == [{"role": "user", "content": "q"}]


async def test_anthropic_only_the_last_assistant_message_is_stripped(
    server: FakeLLMServer,
) -> None:
    """Earlier assistant turns are sent unchanged."""
    history = [ChatMessage.user("a"), ChatMessage.assistant("b "), ChatMessage.user("c")]
    async with build("anthropic", server) as provider:
        await provider.chat_with_history(history, "ok", 0.0)
    assert server.requests[0].json["messages"][1] == {"role": "assistant", "content": "b "}


async def test_openai_prefill_payload(server: FakeLLMServer) -> None:
    """OpenAICompatible(supports_prefill=True) adds vLLM's continuation fields after an
    assistant message only; by default nothing is added."""
    async with build("openai", server) as plain:
        assert not plain.supports_prefill
        await plain.chat_with_history(PREFILL, "ok", 0.0)
    async with build("openai", server, supports_prefill=True) as vllm:
        assert vllm.supports_prefill
        await vllm.chat_with_history(PREFILL, "ok", 0.0)
        await collect(vllm.stream_chat_with_history(PREFILL, "ok", 0.0))
        await vllm.chat_with_history(Q, "ok", 0.0)
    first, second, third, fourth = (r.json for r in server.requests)
    assert "continue_final_message" not in first and "add_generation_prompt" not in first
    assert first["messages"][-1] == {"role": "assistant", "content": "tok0 tok1 "}
    for body in (second, third):
        assert body["continue_final_message"] is True
        assert body["add_generation_prompt"] is False
        assert body["messages"][-1] == {"role": "assistant", "content": "tok0 tok1 "}
    assert "continue_final_message" not in fourth


async def test_anthropic_continues_from_the_stripped_prefill(server: FakeLLMServer) -> None:
    """The fake Anthropic endpoint streams exactly the rest after the (stripped) prefill."""
    async with build("anthropic", server) as provider:
        chunks = await collect(provider.stream_chat_with_history(PREFILL, "ok", 0.0))
    # The prefill arrived as "tok0 tok1", so the continuation starts with the space.
    assert [c.delta for c in chunks[:-1]] == [" ", "tok2 ", "tok3 ", "tok4 "]
    assert chunks[-1].finish_reason == "stop"


async def test_vllm_style_continuation(server: FakeLLMServer) -> None:
    """With ``prefill`` in the spec the OpenAI endpoint continues; without it, it answers anew."""
    async with build("openai", server, supports_prefill=True) as provider:
        continued = await collect(provider.stream_chat_with_history(PREFILL, "ok:prefill", 0.0))
        anew = await collect(provider.stream_chat_with_history(PREFILL, "ok", 0.0))
        text = await provider.chat_with_history(PREFILL, "ok:prefill", 0.0)
    assert text_of(continued) == "tok2 tok3 tok4 "
    assert text_of(anew) == "tok0 tok1 tok2 tok3 tok4 "
    assert text == "tok2 tok3 tok4 "


async def test_continuation_with_overlap_and_mid_piece(server: FakeLLMServer) -> None:
    """``overlap=N`` repeats the prefill's last N characters first; a prefill may end mid-piece."""
    async with build("anthropic", server) as provider:
        overlap = await collect(provider.stream_chat_with_history(PREFILL, "ok:overlap=4", 0.0))
        mid = [ChatMessage.user("q"), ChatMessage.assistant("tok0 to")]
        middle = await collect(provider.stream_chat_with_history(mid, "ok", 0.0))
        other = [ChatMessage.user("q"), ChatMessage.assistant("Something else")]
        anew = await collect(provider.stream_chat_with_history(other, "ok:chunks=2", 0.0))
    assert [c.delta for c in overlap[:-1]] == ["tok1", " ", "tok2 ", "tok3 ", "tok4 "]
    assert [c.delta for c in middle[:-1]] == ["k1 ", "tok2 ", "tok3 ", "tok4 "]
    assert text_of(anew) == "tok0 tok1 "


async def test_continuation_then_cut(server: FakeLLMServer) -> None:
    """Faults count the continuation's pieces: a cut after one piece of the rest."""
    async with build("openai", server, supports_prefill=True) as provider:
        seen: list[str] = []
        with pytest.raises(StreamError):
            async with provider.stream_chat_with_history(PREFILL, "cut:after=1:prefill", 0) as s:
                async for chunk in s:
                    seen.append(chunk.delta)
    assert seen == ["tok2 "]


async def test_reject_prefill_only_with_a_trailing_assistant_message(provider: Any) -> None:
    """``reject_prefill`` answers 400 after an assistant message and normally otherwise."""
    with pytest.raises(ProviderError) as info:
        await provider.chat_with_history(PREFILL, "reject_prefill", 0.0)
    assert info.value.status_code == 400
    assert not classify(info.value).retryable
    expected = "prefill" if provider.name == "anthropic" else "Expected last role User or Tool"
    assert expected in str(info.value)
    with pytest.raises(ProviderError):
        await collect(provider.stream_chat_with_history(PREFILL, "reject_prefill", 0.0))
    assert await provider.chat_with_history(Q, "reject_prefill:chunks=2", 0.0) == "tok0 tok1 "


# -- context window -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_context_overflow_classifies_as_context_window(provider: Any, stream: bool) -> None:
    """``context:N`` refuses more than N characters with a body classify reads as context window."""
    long = [ChatMessage.system("s" * 30), ChatMessage.user("u" * 30)]
    with pytest.raises(ProviderError) as info:
        if stream:
            await collect(provider.stream_chat_with_history(long, "context:50", 0.0))
        else:
            await provider.chat_with_history(long, "context:50", 0.0)
    error = info.value
    assert error.status_code == 400
    assert is_context_window_exceeded(error)
    verdict = classify(error)
    assert verdict.context_window and verdict.retryable
    if provider.name == "openai":
        assert "context_length_exceeded" in str(error)
        assert "maximum context length is 50 tokens" in str(error)
    else:
        assert "prompt is too long: 60 tokens > 50 maximum" in str(error)
    short = [ChatMessage.system("s" * 10), ChatMessage.user("u" * 10)]
    assert await provider.chat_with_history(short, "context:50:chunks=1", 0.0) == "tok0 "


# -- tool call in progress ----------------------------------------------------------------


TOOL_FAULTS = [
    Behavior(kind="cut", text="Checking.", calls=1, after=2),
    Behavior(kind="reset", text="Checking.", calls=1, after=2),
    Behavior(kind="malformed", text="Checking.", calls=1, after=2),
    Behavior(kind="inband_error", text="Checking.", calls=1, after=2),
]


@pytest.mark.parametrize("fault", TOOL_FAULTS, ids=lambda b: b.kind)
async def test_break_during_tool_arguments_sets_tool_call_in_progress(
    server: FakeLLMServer, provider: Any, fault: Behavior
) -> None:
    """A break while a tool call's arguments are arriving raises tool_call_in_progress=True."""
    server.script(None, [fault])
    seen: list[Any] = []
    with pytest.raises(StreamError) as info:
        async with provider.stream_chat(ChatRequest(Q, [WEATHER]), "m", 0.0) as events:
            async for event in events:
                seen.append(event)
    assert seen == [TextDelta("Checking.")]
    assert info.value.tool_call_in_progress


async def test_break_during_text_is_not_a_tool_call(provider: Any) -> None:
    """A break while text is arriving leaves tool_call_in_progress False."""
    with pytest.raises(StreamError) as info:
        await collect(provider.stream_chat(ChatRequest(Q, [WEATHER]), "cut:after=2", 0.0))
    assert not info.value.tool_call_in_progress
    with pytest.raises(StreamError) as info:
        await collect(provider.stream_chat_with_history(Q, "cut:after=2", 0.0))
    assert not info.value.tool_call_in_progress


async def test_stall_inside_the_second_tool_call(server: FakeLLMServer) -> None:
    """A read timeout while a second tool call arrives (the first delivered) is in progress."""
    server.script(None, [Behavior(kind="hang_body", calls=2, chunks=0, after=3)])
    async with build("anthropic", server, timeout=5.0) as provider:
        seen: list[Any] = []
        with pytest.raises(StreamError) as info:
            async with provider.stream_chat(ChatRequest(Q, [WEATHER]), "m", 0.0) as events:
                async for event in events:
                    seen.append(event)
    assert seen == [ToolCallEvent(ToolCall("call_0_0", "get_weather", ARGS))]
    assert isinstance(info.value.__cause__, httpx2.ReadTimeout)
    assert info.value.tool_call_in_progress
