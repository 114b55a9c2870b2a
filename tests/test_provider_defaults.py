"""Tests for the Provider base-class defaults and the frozen, slotted types."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from reliant import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    Final,
    Provider,
    StreamChunk,
    StreamOptions,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    UsageEvent,
    stream_from_generator,
)
from reliant._backend import current_time
from reliant._types import ReasoningDelta

pytestmark = pytest.mark.anyio

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


class Recorder(Provider):
    """Implements only chat_with_system; records its arguments and answers a fixed text."""

    def __init__(self, answer: str = "answer") -> None:
        self.answer = answer
        self.calls: list[tuple[str | None, str, str, float]] = []

    async def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> str:
        await anyio.lowlevel.checkpoint()
        self.calls.append((system_prompt, message, model, temperature))
        return self.answer


class NativeTools(Recorder):
    """A recorder that claims native tool calling."""

    @property
    def supports_native_tools(self) -> bool:
        return True


async def collect(stream: Any) -> list[Any]:
    async with stream as items:
        return [item async for item in items]


# -- non-streaming defaults ------------------------------------------------------


async def test_simple_chat_passes_no_system_prompt() -> None:
    """simple_chat calls chat_with_system with system None and the same model/temperature."""
    p = Recorder()
    assert await p.simple_chat("hi", "m1", 0.3) == "answer"
    assert p.calls == [(None, "hi", "m1", 0.3)]


async def test_chat_with_history_first_system_last_user() -> None:
    """chat_with_history sends the FIRST system message and the LAST user message."""
    p = Recorder()
    history = [
        ChatMessage.system("sys1"),
        ChatMessage.user("u1"),
        ChatMessage.assistant("a1"),
        ChatMessage.system("sys2"),
        ChatMessage.user("u2"),
        ChatMessage.assistant("a2"),
        ChatMessage.tool("t1"),
    ]
    assert await p.chat_with_history(history, "m", 0.0) == "answer"
    assert p.calls == [("sys1", "u2", "m", 0.0)]


async def test_chat_with_history_without_user_or_system() -> None:
    """No user message gives "" as the message; no system message gives None."""
    p = Recorder()
    await p.chat_with_history([ChatMessage.system("s"), ChatMessage.assistant("a")], "m", 0.0)
    await p.chat_with_history([ChatMessage.user("u")], "m", 0.0)
    await p.chat_with_history([], "m", 0.0)
    assert p.calls == [("s", "", "m", 0.0), (None, "u", "m", 0.0), (None, "", "m", 0.0)]


async def test_chat_with_tools_ignores_tools() -> None:
    """chat_with_tools drops the tools and wraps the history answer in a ChatResponse."""
    p = Recorder('<tool_call>{"name": "get_weather"}</tool_call>')
    response = await p.chat_with_tools([ChatMessage.user("u")], [WEATHER], "m", 0.5)
    assert response == ChatResponse(text='<tool_call>{"name": "get_weather"}</tool_call>')
    assert not response.has_tool_calls
    assert p.calls == [(None, "u", "m", 0.5)]


async def test_chat_without_tools_is_chat_with_history() -> None:
    """chat with no tools answers via chat_with_history, unchanged."""
    p = Recorder()
    request = ChatRequest([ChatMessage.system("s"), ChatMessage.user("u")])
    assert await p.chat(request, "m", 0.0) == ChatResponse(text="answer")
    assert p.calls == [("s", "u", "m", 0.0)]


async def test_chat_appends_tool_protocol_to_system_prompt() -> None:
    """Without native tools, chat appends the Tool Use Protocol to the first system prompt."""
    p = Recorder()
    request = ChatRequest(
        [ChatMessage.system("be nice"), ChatMessage.user("weather?")], tools=[WEATHER]
    )
    await p.chat(request, "m", 0.0)
    [(system, message, _, _)] = p.calls
    assert message == "weather?"
    assert system is not None
    assert system.startswith("be nice\n\n## Tool Use Protocol")
    assert "<tool_call>" in system
    assert "get_weather: Current weather for a city." in system
    assert json.dumps(dict(WEATHER.parameters), sort_keys=True) in system
    assert request.messages[0] == ChatMessage.system("be nice")  # request not mutated


async def test_chat_inserts_tool_protocol_when_no_system_prompt() -> None:
    """Without a system message, chat sends the protocol as the system prompt."""
    p = Recorder()
    await p.chat(ChatRequest([ChatMessage.user("weather?")], tools=[WEATHER]), "m", 0.0)
    [(system, message, _, _)] = p.calls
    assert message == "weather?"
    assert system is not None
    assert system.startswith("## Tool Use Protocol")


async def test_chat_parses_tool_call_blocks() -> None:
    """<tool_call> blocks become ToolCalls with JSON-string arguments; the rest stays text."""
    p = Recorder(
        "Let me check.\n"
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
        '<tool_call>\n{"name": "get_time"}\n</tool_call>'
    )
    response = await p.chat(ChatRequest([ChatMessage.user("u")], tools=[WEATHER]), "m", 0.0)
    assert response.text == "Let me check."
    assert [(c.id, c.name) for c in response.tool_calls] == [
        ("call_1", "get_weather"),
        ("call_2", "get_time"),
    ]
    assert all(isinstance(c.arguments, str) for c in response.tool_calls)
    assert json.loads(response.tool_calls[0].arguments) == {"city": "Paris"}
    assert json.loads(response.tool_calls[1].arguments) == {}


async def test_chat_only_tool_calls_gives_no_text() -> None:
    """An answer that is only tool-call blocks has text None."""
    p = Recorder('<tool_call>{"name": "a", "arguments": {"x": {"y": [1]}}}</tool_call>')
    response = await p.chat(ChatRequest([ChatMessage.user("u")], tools=[WEATHER]), "m", 0.0)
    assert response.text is None
    assert response.tool_calls == (ToolCall("call_1", "a", '{"x": {"y": [1]}}'),)


async def test_chat_invalid_tool_call_block_stays_in_text() -> None:
    """A block that is not valid JSON stays in the text and does not hide a later valid one."""
    bad = '<tool_call>{"name": "a",}</tool_call>'
    unclosed = '<tool_call>{"name": "b"</tool_call>'
    good = '<tool_call>{"name": "c", "arguments": {}}</tool_call>'
    p = Recorder(f"{bad} {unclosed} {good}")
    response = await p.chat(ChatRequest([ChatMessage.user("u")], tools=[WEATHER]), "m", 0.0)
    assert response.text == f"{bad} {unclosed}"
    assert response.tool_calls == (ToolCall("call_1", "c", "{}"),)


async def test_chat_native_tools_skips_protocol() -> None:
    """A provider with native tools gets no protocol text and its answer is not parsed."""
    text = '<tool_call>{"name": "get_weather"}</tool_call>'
    p = NativeTools(text)
    request = ChatRequest([ChatMessage.system("s"), ChatMessage.user("u")], tools=[WEATHER])
    assert await p.chat(request, "m", 0.0) == ChatResponse(text=text)
    assert p.calls == [("s", "u", "m", 0.0)]


@pytest.mark.parametrize(
    "flag",
    [
        "supports_native_tools",
        "supports_vision",
        "supports_streaming",
        "supports_streaming_tool_events",
    ],
)
def test_capability_flags_default_false_properties(flag: str) -> None:
    """Every capability flag is a read-only property that defaults to False."""
    p = Recorder()
    assert isinstance(inspect.getattr_static(Provider, flag), property)
    assert getattr(p, flag) is False
    with pytest.raises(AttributeError):
        setattr(p, flag, True)


async def test_warmup_does_nothing() -> None:
    """warmup completes without calling the provider."""
    p = Recorder()
    await p.warmup()
    assert p.calls == []


def test_only_chat_with_system_is_abstract() -> None:
    """chat_with_system is the one abstract method; the base cannot be instantiated."""
    assert Provider.__abstractmethods__ == frozenset({"chat_with_system"})
    with pytest.raises(TypeError):
        Provider()  # type: ignore[abstract]


# -- stream defaults ---------------------------------------------------------------


async def test_stream_with_system_one_chunk_then_final() -> None:
    """A non-streaming provider streams its whole answer as one chunk, then the final chunk."""
    p = Recorder("hello world")
    chunks = await collect(p.stream_chat_with_system("s", "u", "m", 0.2))
    assert chunks == [StreamChunk(delta="hello world"), StreamChunk.final()]
    assert p.calls == [("s", "u", "m", 0.2)]


async def test_stream_with_system_empty_answer_only_final() -> None:
    """An empty answer streams just the final chunk."""
    chunks = await collect(Recorder("").stream_chat_with_system(None, "u", "m", 0.0))
    assert chunks == [StreamChunk.final()]


async def test_stream_count_tokens_estimates() -> None:
    """count_tokens sets token_count to ceil(len(delta) / 4); without it the count stays 0."""
    p = Recorder("hello")  # 5 characters -> 2 tokens
    options = StreamOptions(count_tokens=True)
    chunks = await collect(p.stream_chat_with_system(None, "u", "m", 0.0, options))
    assert chunks == [StreamChunk(delta="hello", token_count=2), StreamChunk.final()]
    chunks = await collect(p.stream_chat_with_system(None, "u", "m", 0.0))
    assert chunks[0].token_count == 0
    assert StreamChunk("12345678").with_token_estimate().token_count == 2
    assert StreamChunk("123456789").with_token_estimate().token_count == 3


async def test_stream_call_happens_inside_async_with() -> None:
    """Calling a stream method does no work until the stream is iterated."""
    p = Recorder()
    stream = p.stream_chat_with_system("s", "u", "m", 0.0)
    assert p.calls == []
    assert await collect(stream) == [StreamChunk("answer"), StreamChunk.final()]
    assert len(p.calls) == 1


async def test_stream_with_history_reduces_history() -> None:
    """stream_chat_with_history uses the first system and last user message, like chat."""
    p = Recorder("hi")
    history = [
        ChatMessage.system("s1"),
        ChatMessage.user("u1"),
        ChatMessage.system("s2"),
        ChatMessage.user("u2"),
        ChatMessage.assistant("a"),
    ]
    chunks = await collect(p.stream_chat_with_history(history, "m", 0.1))
    assert chunks == [StreamChunk("hi"), StreamChunk.final()]
    assert p.calls == [("s1", "u2", "m", 0.1)]


async def test_stream_chat_maps_chunks_to_events() -> None:
    """stream_chat without tools maps chunks to TextDelta then Final."""
    p = Recorder("hi")
    request = ChatRequest([ChatMessage.system("s"), ChatMessage.user("u")])
    assert await collect(p.stream_chat(request, "m", 0.0)) == [TextDelta("hi"), Final()]
    assert p.calls == [("s", "u", "m", 0.0)]
    assert await collect(Recorder("").stream_chat(request, "m", 0.0)) == [Final()]


class ChunkSource(Recorder):
    """Streams fixed chunks, so the default stream_chat can be checked against them."""

    def __init__(self, chunks: list[StreamChunk]) -> None:
        super().__init__()
        self.chunks = chunks

    @stream_from_generator
    async def stream_chat_with_system(
        self,
        system_prompt: str | None,
        message: str,
        model: str,
        temperature: float,
        options: StreamOptions = StreamOptions(),  # noqa: B008
    ) -> AsyncGenerator[StreamChunk, None]:
        for chunk in self.chunks:
            await anyio.lowlevel.checkpoint()
            yield chunk


async def test_stream_chat_maps_reasoning_and_final_info() -> None:
    """The default stream_chat maps reasoning to ReasoningDelta and final-chunk facts to Final."""
    usage = TokenUsage(4, 2)
    p = ChunkSource(
        [
            StreamChunk("", "think"),
            StreamChunk("a"),
            StreamChunk(is_final=True, finish_reason="length", raw_finish_reason="max_tokens",
                        model="m-1", usage=usage),
        ]
    )  # fmt: skip
    events = await collect(p.stream_chat(ChatRequest([ChatMessage.user("u")]), "m", 0.0))
    assert events == [
        ReasoningDelta("think"),
        TextDelta("a"),
        UsageEvent(usage),
        Final("length", "max_tokens", "m-1", usage),
    ]


async def test_stream_chat_non_streaming_with_tools_uses_chat() -> None:
    """A non-streaming provider with tools serves stream_chat via chat: text, tool calls, Final."""
    p = Recorder(
        'Checking. <tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    )
    request = ChatRequest([ChatMessage.user("weather?")], tools=[WEATHER])
    events = await collect(p.stream_chat(request, "m", 0.0))
    assert events == [
        TextDelta("Checking."),
        ToolCallEvent(ToolCall("call_1", "get_weather", '{"city": "Oslo"}')),
        Final(),
    ]
    [(system, _, _, _)] = p.calls
    assert system is not None
    assert "## Tool Use Protocol" in system  # served through chat's prompt-guided tools


async def test_stream_chat_non_streaming_with_tools_emits_usage() -> None:
    """Usage from chat is emitted as a UsageEvent just before Final, which carries it too."""
    usage = TokenUsage(input_tokens=3, output_tokens=4)

    class WithUsage(Recorder):
        async def chat(self, request: ChatRequest, model: str, temperature: float) -> ChatResponse:
            await anyio.lowlevel.checkpoint()
            return ChatResponse(
                text=None, tool_calls=(ToolCall("id1", "get_weather", "{}"),), usage=usage
            )

    request = ChatRequest([ChatMessage.user("u")], tools=[WEATHER])
    events = await collect(WithUsage().stream_chat(request, "m", 0.0))
    assert events == [
        ToolCallEvent(ToolCall("id1", "get_weather", "{}")),
        UsageEvent(usage),
        Final(usage=usage),
    ]


async def test_stream_from_generator_closes_on_early_exit(
    anyio_backend: object,
) -> None:
    """Leaving the async with early runs the generator's finally before the block exits."""
    log: list[str] = []

    class Streamer(Recorder):
        @stream_from_generator
        async def numbers(self, n: int) -> AsyncGenerator[int, None]:
            """Yield 0..n-1, a second apart."""
            try:
                for i in range(n):
                    await anyio.sleep(1)
                    yield i
            finally:
                log.append(f"closed at {current_time()}")

    p = Streamer()
    assert Streamer.numbers.__name__ == "numbers"
    assert Streamer.numbers.__doc__ == "Yield 0..n-1, a second apart."
    async with p.numbers(10) as it:
        assert isinstance(it, AsyncIterator)
        async for i in it:
            if i == 1:
                break
        assert log == []  # suspended, not yet closed
    assert log == ["closed at 2.0"]


async def test_stream_from_generator_closes_on_error() -> None:
    """An exception raised inside the async with closes the generator and comes out unchanged."""
    closed: list[bool] = []

    class Streamer(Recorder):
        @stream_from_generator
        async def items(self) -> AsyncGenerator[str, None]:
            try:
                yield "a"
                yield "b"
            finally:
                closed.append(True)

    with pytest.raises(KeyError, match="mine"):
        async with Streamer().items() as it:
            async for _ in it:
                raise KeyError("mine")
    assert closed == [True]


# -- types -------------------------------------------------------------------------

_INSTANCES: list[Any] = [
    ChatMessage.user("u"),
    ToolCall("id", "n", "{}"),
    WEATHER,
    TokenUsage(1, 2, 3),
    ChatRequest([ChatMessage.user("u")]),
    ChatResponse(text="t"),
    StreamChunk("d"),
    TextDelta("t"),
    ToolCallEvent(ToolCall("id", "n", "{}")),
    UsageEvent(TokenUsage()),
    Final(),
    StreamOptions(),
]


@pytest.mark.parametrize("obj", _INSTANCES, ids=lambda o: type(o).__name__)
def test_types_frozen_and_slotted(obj: Any) -> None:
    """Every record type is a frozen, slotted dataclass: no assignment, no __dict__."""
    assert dataclasses.is_dataclass(type(obj))
    assert "__slots__" in type(obj).__dict__
    assert not hasattr(obj, "__dict__")
    for field in dataclasses.fields(obj):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, field.name, None)
    # CPython's frozen+slots __setattr__ raises TypeError instead of
    # FrozenInstanceError for unknown names (slots=True builds a new class that
    # the generated super() call does not know); either way the write fails.
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
        obj.not_a_field = 1


def test_chat_message_constructors_set_roles() -> None:
    """ChatMessage.system/user/assistant/tool set the matching role."""
    assert ChatMessage.system("a") == ChatMessage("system", "a")
    assert ChatMessage.user("b") == ChatMessage("user", "b")
    assert ChatMessage.assistant("c") == ChatMessage("assistant", "c")
    assert ChatMessage.tool("d") == ChatMessage("tool", "d")


def test_stream_chunk_final() -> None:
    """StreamChunk.final() is final with an empty delta and no tokens."""
    final = StreamChunk.final()
    assert final.is_final
    assert final.delta == ""
    assert final.reasoning is None
    assert final.token_count == 0
    assert final == StreamChunk(is_final=True)
    assert not StreamChunk("x").is_final


def test_type_defaults() -> None:
    """Defaults match the contract: empty tool calls, no usage, streaming enabled."""
    assert ChatResponse() == ChatResponse(None, (), None, None)
    assert not ChatResponse().has_tool_calls
    assert ChatRequest([]).tools is None
    assert StreamOptions() == StreamOptions(enabled=True, count_tokens=False)
    assert TokenUsage() == TokenUsage(None, None, None)
    assert StreamChunk() == StreamChunk("", None, False, 0)


def test_request_and_response_freeze_their_sequences() -> None:
    """ChatRequest/ChatResponse copy lists to tuples, so later mutation cannot leak in."""
    messages = [ChatMessage.user("a")]
    request = ChatRequest(messages, tools=[])
    messages.append(ChatMessage.user("b"))
    assert request.messages == (ChatMessage.user("a"),) and request.tools == ()
    calls = [ToolCall("1", "f", "{}")]
    response = ChatResponse(tool_calls=calls)
    calls.clear()
    assert response.tool_calls == (ToolCall("1", "f", "{}"),)
