"""Tests of the scripted provider (reliant.testing._scripted)."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest

from reliant._backend import current_time
from reliant._exceptions import ProviderError, StreamError
from reliant._types import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    Final,
    ReasoningDelta,
    StreamChunk,
    StreamOptions,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    UsageEvent,
)
from reliant.testing import _scripted
from reliant.testing._scripted import (
    Empty,
    Fail,
    Hang,
    Outcome,
    Reply,
    ScriptedCall,
    ScriptedProvider,
    Stream,
)

pytestmark = pytest.mark.anyio

T = TypeVar("T")

MSGS = (ChatMessage.system("sys"), ChatMessage.user("hello"))
TOOL = ToolSpec("lookup", "Looks things up.", {"type": "object"})
CALL = ToolCall("call_1", "lookup", '{"q": "x"}')
USAGE = TokenUsage(input_tokens=3, output_tokens=5)
STOP = StreamChunk(is_final=True, finish_reason="stop")


async def collect(it: AsyncIterator[T]) -> list[tuple[float, T]]:
    """Items of a stream with the virtual time each one arrived."""
    return [(current_time(), item) async for item in it]


async def chunks_of(p: ScriptedProvider, **kw: Any) -> list[tuple[float, StreamChunk]]:
    async with p.stream_chat_with_history(MSGS, "m", 0.0, **kw) as chunks:
        return await collect(chunks)


async def plain(p: ScriptedProvider, model: str = "m") -> str:
    return await p.chat_with_history(MSGS, model, 0.0)


# -- Reply ------------------------------------------------------------------


async def test_reply_non_streaming_returns_text_after_delay(
    anyio_backend: object,
) -> None:
    """Reply(delay=2) makes every str-returning call answer its text 2 s later."""
    p = ScriptedProvider([Reply("hi", delay=2.0)])
    assert await p.chat_with_system("s", "q", "m", 0.0) == "hi"
    assert current_time() == 2.0
    assert await p.simple_chat("q", "m", 0.0) == "hi"
    assert current_time() == 4.0
    assert await p.chat_with_history(MSGS, "m", 0.0) == "hi"
    assert current_time() == 6.0


async def test_reply_chat_returns_full_response(anyio_backend: object) -> None:
    """chat and chat_with_tools return the reply's text, tool calls, usage and reasoning."""
    reply = Reply("text", delay=1.0, tool_calls=[CALL], usage=USAGE, reasoning="because")
    p = ScriptedProvider([reply])
    expected = ChatResponse(
        text="text",
        tool_calls=(CALL,),
        usage=USAGE,
        reasoning_content="because",
        finish_reason="tool_calls",
    )
    assert await p.chat(ChatRequest(MSGS, tools=[TOOL]), "m", 0.0) == expected
    assert await p.chat_with_tools(MSGS, [TOOL], "m", 0.0) == expected
    assert current_time() == 2.0


async def test_reply_streams_one_chunk_then_final(anyio_backend: object) -> None:
    """A streamed Reply waits its delay, then yields the text chunk and the final chunk."""
    p = ScriptedProvider([Reply("hi", delay=1.5)])
    assert await chunks_of(p) == [(1.5, StreamChunk("hi")), (1.5, STOP)]
    async with p.stream_chat_with_system("s", "q", "m", 0.0) as chunks:
        assert await collect(chunks) == [(3.0, StreamChunk("hi")), (3.0, STOP)]


async def test_empty_reply_streams_only_final() -> None:
    """A Reply with empty text streams just the final chunk."""
    p = ScriptedProvider([Reply("")])
    assert [c for _, c in await chunks_of(p)] == [STOP]


async def test_reply_stream_chat_event_order(anyio_backend: object) -> None:
    """stream_chat yields TextDelta, one ToolCallEvent per call, UsageEvent, then Final."""
    call2 = ToolCall("call_2", "lookup", "{}")
    p = ScriptedProvider([Reply("hi", delay=1.0, tool_calls=[CALL, call2], usage=USAGE)])
    async with p.stream_chat(ChatRequest(MSGS, tools=[TOOL]), "m", 0.0) as events:
        got = await collect(events)
    assert got == [
        (1.0, TextDelta("hi")),
        (1.0, ToolCallEvent(CALL)),
        (1.0, ToolCallEvent(call2)),
        (1.0, UsageEvent(USAGE)),
        (1.0, Final("tool_calls", usage=USAGE)),
    ]


async def test_reply_stream_chat_without_text_or_extras() -> None:
    """stream_chat of an empty Reply with no tools or usage yields only Final."""
    p = ScriptedProvider([Reply("")])
    async with p.stream_chat(ChatRequest(MSGS), "m", 0.0) as events:
        assert [e async for e in events] == [Final("stop")]


# -- Stream -----------------------------------------------------------------


async def test_stream_timing_first_delay_and_gap(anyio_backend: object) -> None:
    """Stream waits first_delay before the first chunk, gap between chunks, no gap before final."""
    p = ScriptedProvider([Stream(["a", "b", "c"], first_delay=1.0, gap=0.5)])
    assert await chunks_of(p) == [
        (1.0, StreamChunk("a")),
        (1.5, StreamChunk("b")),
        (2.0, StreamChunk("c")),
        (2.0, STOP),
    ]
    assert p.calls[0].finished_at == 2.0
    assert not p.calls[0].cancelled


async def test_stream_mid_stream_error(anyio_backend: object) -> None:
    """Stream with an error yields its chunks, then raises the error instead of the final chunk."""
    err = ProviderError("cut", status_code=502)
    p = ScriptedProvider([Stream(["a", "b"], gap=1.0, error=err)])
    seen: list[str] = []
    async with p.stream_chat_with_history(MSGS, "m", 0.0) as chunks:
        with pytest.raises(ProviderError) as info:
            async for chunk in chunks:
                seen.append(chunk.delta)
    assert info.value is err
    assert seen == ["a", "b"]
    assert current_time() == 1.0
    assert p.calls[0].finished_at == 1.0
    assert not p.calls[0].cancelled
    assert p.open_streams == 0


async def test_stream_error_before_any_chunk(anyio_backend: object) -> None:
    """A Stream with no chunks and an error raises it after first_delay."""
    p = ScriptedProvider([Stream([], first_delay=3.0, error=ValueError("x"))])
    async with p.stream_chat_with_history(MSGS, "m", 0.0) as chunks:
        with pytest.raises(ValueError, match="x"):
            await chunks.__anext__()
    assert current_time() == 3.0


async def test_stream_unterminated_just_ends(anyio_backend: object) -> None:
    """An unterminated Stream ends after its chunks without the final chunk."""
    p = ScriptedProvider([Stream(["a", "b"], first_delay=1.0, terminated=False)])
    assert await chunks_of(p) == [(1.0, StreamChunk("a")), (1.0, StreamChunk("b"))]
    assert not p.calls[0].cancelled


async def test_stream_chat_maps_chunks_to_text_deltas(
    anyio_backend: object,
) -> None:
    """stream_chat of a Stream yields one TextDelta per chunk with the same timing, then Final."""
    p = ScriptedProvider([Stream(["a", "b"], first_delay=1.0, gap=2.0)])
    async with p.stream_chat(ChatRequest(MSGS), "m", 0.0) as events:
        assert await collect(events) == [
            (1.0, TextDelta("a")),
            (3.0, TextDelta("b")),
            (3.0, Final("stop")),
        ]


async def test_stream_non_streaming_sleeps_total_and_joins(
    anyio_backend: object,
) -> None:
    """A non-streaming call of a Stream waits first_delay + gaps and returns the joined chunks."""
    p = ScriptedProvider([Stream(["a", "b", "c"], first_delay=1.0, gap=0.5)])
    assert await plain(p) == "abc"
    assert current_time() == 2.0
    response = await p.chat(ChatRequest(MSGS), "m", 0.0)
    assert response == ChatResponse(text="abc", finish_reason="stop")
    assert current_time() == 4.0


async def test_stream_non_streaming_raises_error(anyio_backend: object) -> None:
    """A non-streaming call of a failing Stream raises its error after the total time."""
    err = ProviderError("cut", status_code=500)
    p = ScriptedProvider([Stream(["a", "b"], first_delay=1.0, gap=1.0, error=err)])
    with pytest.raises(ProviderError) as info:
        await plain(p)
    assert info.value is err
    assert current_time() == 2.0
    assert p.calls[0].finished_at == 2.0
    assert not p.calls[0].cancelled


async def test_count_tokens_estimate() -> None:
    """With count_tokens, chunks carry ceil(len(delta) / 4); without it, 0."""
    p = ScriptedProvider([Stream(["abcde", "abcd"]), Reply("abcdefghi")])
    counted = await chunks_of(p, options=StreamOptions(count_tokens=True))
    assert [c.token_count for _, c in counted] == [2, 1, 0]
    counted = await chunks_of(p, options=StreamOptions(count_tokens=True))
    assert [c.token_count for _, c in counted] == [3, 0]
    assert [c.token_count for _, c in await chunks_of(p)] == [0, 0]


# -- Fail, Hang, Empty --------------------------------------------------------


async def test_fail_non_streaming_raises_after_delay(
    anyio_backend: object,
) -> None:
    """Fail raises its error from a non-streaming call after its delay."""
    err = ProviderError("boom", status_code=500)
    p = ScriptedProvider([Fail(err, delay=0.25)])
    with pytest.raises(ProviderError) as info:
        await p.chat(ChatRequest(MSGS), "m", 0.0)
    assert info.value is err
    assert current_time() == 0.25
    assert p.calls[0].finished_at == 0.25
    assert not p.calls[0].cancelled


async def test_fail_stream_raises_from_first_anext(
    anyio_backend: object,
) -> None:
    """A failing stream enters fine and raises from the first __anext__ after the delay."""
    err = RuntimeError("down")
    p = ScriptedProvider([Fail(err, delay=1.0)])
    async with p.stream_chat_with_system(None, "q", "m", 0.0) as chunks:
        assert current_time() == 0.0
        with pytest.raises(RuntimeError) as info:
            await chunks.__anext__()
    assert info.value is err
    assert current_time() == 1.0
    assert p.calls[0].finished_at == 1.0
    assert not p.calls[0].cancelled
    assert p.open_streams == 0


async def test_repeated_fail_does_not_grow_traceback() -> None:
    """Raising the same Fail instance again does not pile frames onto its traceback."""
    p = ScriptedProvider([Fail(ValueError("again"))])
    depths = []
    for _ in range(3):
        with pytest.raises(ValueError) as info:
            await plain(p)
        depths.append(len(traceback.extract_tb(info.value.__traceback__)))
    assert depths[0] == depths[1] == depths[2]


async def test_hang_non_streaming_cancelled(anyio_backend: object) -> None:
    """A hung non-streaming call is cancelled by a timeout and recorded as cancelled."""
    p = ScriptedProvider([Hang()])
    with anyio.move_on_after(30.0) as scope:
        await plain(p)
    assert scope.cancelled_caught
    assert current_time() == 30.0
    call = p.calls[0]
    assert call.cancelled
    assert (call.started_at, call.finished_at, call.duration) == (0.0, 30.0, 30.0)


async def test_hang_stream_cancelled_closes_stream(
    anyio_backend: object,
) -> None:
    """Cancelling a hung stream marks the call cancelled and leaves no stream open."""
    p = ScriptedProvider([Hang()])
    with anyio.move_on_after(5.0):
        async with p.stream_chat(ChatRequest(MSGS), "m", 0.0) as events:
            assert p.open_streams == 1
            async for _ in events:
                pytest.fail("a hung stream yielded")
    assert p.open_streams == 0
    assert p.calls[0].cancelled
    assert p.calls[0].finished_at == 5.0


async def test_empty_outcome() -> None:
    """Empty returns "" from non-streaming calls and streams nothing at all."""
    p = ScriptedProvider([Empty()])
    assert await plain(p) == ""
    assert await p.chat(ChatRequest(MSGS), "m", 0.0) == ChatResponse(text="")
    assert await chunks_of(p) == []
    async with p.stream_chat(ChatRequest(MSGS), "m", 0.0) as events:
        assert [e async for e in events] == []
    assert not any(c.cancelled for c in p.calls)


async def test_every_outcome_checkpoints() -> None:
    """Even an instant outcome is a checkpoint: a cancelled caller gets Cancelled."""
    p = ScriptedProvider([Reply(), Empty()])
    for _ in range(2):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await plain(p)
        assert scope.cancelled_caught
    assert [c.cancelled for c in p.calls] == [True, True]


# -- script shapes -------------------------------------------------------------


async def test_last_outcome_repeats() -> None:
    """Outcomes are consumed one per call of any kind; the last one repeats."""
    p = ScriptedProvider([Fail(ValueError("1")), Reply("a"), Reply("b")])
    with pytest.raises(ValueError):
        await plain(p)
    assert [c.delta for _, c in await chunks_of(p)] == ["a", ""]
    assert [await plain(p) for _ in range(3)] == ["b", "b", "b"]
    assert p.call_count == 5


async def test_per_model_mapping_has_own_cursors() -> None:
    """A mapping script keeps one cursor per model, each repeating its last outcome."""
    p = ScriptedProvider({"a": [Reply("a1"), Reply("a2")], "b": [Reply("b1")]})
    got = [await plain(p, m) for m in ["a", "b", "a", "b", "a"]]
    assert got == ["a1", "b1", "a2", "b1", "a2"]
    assert p.models == ["a", "b", "a", "b", "a"]


async def test_unknown_model_raises_404() -> None:
    """A model missing from a mapping fails with a 404 ProviderError, streaming or not."""
    p = ScriptedProvider({"a": [Reply()]}, name="prim")
    with pytest.raises(ProviderError) as info:
        await plain(p, "zzz")
    assert str(info.value) == "prim: model zzz not found"
    assert (info.value.provider, info.value.status_code) == ("prim", 404)
    async with p.stream_chat_with_history(MSGS, "zzz", 0.0) as chunks:
        with pytest.raises(ProviderError, match="not found"):
            await chunks.__anext__()
    assert p.models == ["zzz", "zzz"]
    assert all(isinstance(c.outcome, Fail) for c in p.calls)


async def test_callable_script() -> None:
    """A callable script gets the 0-based call index and the model."""
    seen: list[tuple[int, str]] = []

    def script(index: int, model: str) -> Outcome:
        seen.append((index, model))
        return Reply(f"{model}#{index}")

    p = ScriptedProvider(script)
    assert await plain(p, "x") == "x#0"
    assert [c.delta for _, c in await chunks_of(p)] == ["m#1", ""]
    assert await plain(p, "y") == "y#2"
    assert seen == [(0, "x"), (1, "m"), (2, "y")]


def test_invalid_scripts_rejected() -> None:
    """Empty scripts, non-outcomes and negative delays are rejected at construction."""
    with pytest.raises(ValueError):
        ScriptedProvider([])
    with pytest.raises(ValueError):
        ScriptedProvider({"a": []})
    with pytest.raises(TypeError):
        ScriptedProvider(["ok"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        Reply(delay=-1.0)
    with pytest.raises(ValueError):
        Stream(["a"], gap=float("nan"))
    with pytest.raises(TypeError):
        Stream("abc")


async def test_callable_returning_non_outcome_raises() -> None:
    """A callable script returning something else raises TypeError and records nothing."""
    p = ScriptedProvider(lambda i, m: "nope")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError):
        await plain(p)
    assert p.call_count == 0


def test_outcomes_are_frozen_and_slotted() -> None:
    """Outcomes are immutable, slotted, and normalise their sequences to tuples."""
    reply = Reply("x", tool_calls=[CALL])
    assert reply.tool_calls == (CALL,)
    assert Stream(["a"]).chunks == ("a",)
    assert not hasattr(reply, "__dict__")
    with pytest.raises(AttributeError):
        reply.text = "y"  # type: ignore[misc]


# -- records ------------------------------------------------------------------


async def test_each_method_records_one_call_with_its_name() -> None:
    """Every Provider call method records exactly one call under its own name."""
    p = ScriptedProvider([Reply()])
    req = ChatRequest(MSGS, tools=[TOOL])
    await p.chat_with_system("sys", "hello", "m", 0.5)
    await p.simple_chat("hello", "m", 0.0)
    await p.chat_with_history(MSGS, "m", 0.0)
    await p.chat_with_tools(MSGS, [TOOL], "m", 0.0)
    await p.chat(req, "m", 0.0)
    async with p.stream_chat_with_system(None, "hello", "m", 0.0) as s1:
        await collect(s1)
    async with p.stream_chat_with_history(MSGS, "m", 0.0) as s2:
        await collect(s2)
    async with p.stream_chat(req, "m", 0.0) as s3:
        await collect(s3)
    assert [c.method for c in p.calls] == [
        "chat_with_system",
        "simple_chat",
        "chat_with_history",
        "chat_with_tools",
        "chat",
        "stream_chat_with_system",
        "stream_chat_with_history",
        "stream_chat",
    ]
    user_only = (ChatMessage.user("hello"),)
    assert [c.messages for c in p.calls] == [MSGS, user_only, MSGS, MSGS, MSGS, user_only] + [
        MSGS
    ] * 2
    assert [c.tools for c in p.calls] == [(), (), (), (TOOL,), (TOOL,), (), (), (TOOL,)]
    assert p.calls[0].temperature == 0.5
    assert [c.options for c in p.calls] == [None] * 5 + [StreamOptions()] * 3
    assert all(isinstance(c, ScriptedCall) and not c.cancelled for c in p.calls)


async def test_record_times(anyio_backend: object) -> None:
    """Records carry the virtual start and finish times and the drawn outcome."""
    p = ScriptedProvider([Reply("a", delay=1.0), Fail(ValueError("x"), delay=2.0)])
    await anyio.sleep(10.0)
    await plain(p)
    with pytest.raises(ValueError):
        await plain(p)
    first, second = p.calls
    assert (first.started_at, first.finished_at, first.outcome) == (
        10.0,
        11.0,
        Reply("a", delay=1.0),
    )
    assert (second.started_at, second.finished_at) == (11.0, 13.0)
    assert isinstance(second.outcome, Fail)


async def test_stream_recorded_on_enter_not_on_call(
    anyio_backend: object,
) -> None:
    """A stream is recorded, and its outcome drawn, when its context is entered."""
    p = ScriptedProvider([Reply("first"), Reply("second")])
    cm = p.stream_chat_with_history(MSGS, "m", 0.0)
    assert p.call_count == 0
    assert await plain(p) == "first"
    await anyio.sleep(4.0)
    async with cm as chunks:
        assert p.call_count == 2
        assert p.calls[1].started_at == 4.0
        assert p.calls[1].finished_at is None
        assert [c.delta for _, c in await collect(chunks)] == ["second", ""]


async def test_closing_stream_early_marks_cancelled(
    anyio_backend: object,
) -> None:
    """Leaving a stream before its outcome is delivered closes it and marks the call cancelled."""
    p = ScriptedProvider([Stream(["a", "b"], gap=1.0)])
    async with p.stream_chat_with_history(MSGS, "m", 0.0) as chunks:
        assert (await chunks.__anext__()).delta == "a"
    assert p.open_streams == 0
    assert p.calls[0].cancelled
    assert p.calls[0].finished_at == 0.0


async def test_entering_without_iterating_marks_cancelled(
    anyio_backend: object,
) -> None:
    """A stream entered and left without iteration is recorded, closed and cancelled."""
    p = ScriptedProvider([Reply()])
    async with p.stream_chat(ChatRequest(MSGS), "m", 0.0):
        pass
    assert p.open_streams == 0
    assert p.calls[0].cancelled
    assert p.calls[0].finished_at == 0.0


async def test_closing_after_last_item_is_not_cancelled() -> None:
    """Leaving right after the final chunk counts as a full delivery."""
    p = ScriptedProvider([Reply("x")])
    async with p.stream_chat_with_history(MSGS, "m", 0.0) as chunks:
        async for chunk in chunks:
            if chunk.is_final:
                break
    assert not p.calls[0].cancelled


async def test_open_streams_counts_concurrent_streams() -> None:
    """open_streams counts every entered stream until its context exits."""
    p = ScriptedProvider([Reply()])
    async with p.stream_chat_with_history(MSGS, "m", 0.0):
        async with p.stream_chat(ChatRequest(MSGS), "m", 0.0):
            assert p.open_streams == 2
        assert p.open_streams == 1
    assert p.open_streams == 0


async def test_caller_exception_inside_stream_passes_unchanged() -> None:
    """An exception raised by the caller inside the stream's async with comes out unchanged."""
    p = ScriptedProvider([Stream(["a", "b"])])
    err = KeyError("mine")
    with pytest.raises(KeyError) as info:
        async with p.stream_chat_with_history(MSGS, "m", 0.0) as chunks:
            await chunks.__anext__()
            raise err
    assert info.value is err
    assert p.open_streams == 0
    assert p.calls[0].cancelled


async def test_stream_context_single_use() -> None:
    """A stream context manager cannot be entered twice."""
    p = ScriptedProvider([Reply()])
    cm = p.stream_chat_with_history(MSGS, "m", 0.0)
    async with cm:
        pass
    with pytest.raises(RuntimeError):
        async with cm:
            pass


# -- misc -----------------------------------------------------------------------


def test_capability_flags_follow_constructor() -> None:
    """The capability properties return the constructor's flags."""
    default = ScriptedProvider([Reply()])
    assert (
        default.supports_streaming,
        default.supports_native_tools,
        default.supports_streaming_tool_events,
        default.supports_vision,
    ) == (True, False, False, False)
    p = ScriptedProvider(
        [Reply()], streaming=False, native_tools=True, tool_events=True, vision=True
    )
    assert (
        p.supports_streaming,
        p.supports_native_tools,
        p.supports_streaming_tool_events,
        p.supports_vision,
    ) == (False, True, True, True)


def test_supports_prefill_follows_constructor() -> None:
    """supports_prefill is False by default and follows the constructor."""
    assert not ScriptedProvider([Reply()]).supports_prefill
    assert ScriptedProvider([Reply()], supports_prefill=True).supports_prefill


async def test_prefill_request_is_recorded() -> None:
    """A trailing assistant message (a prefill) is recorded as sent."""
    p = ScriptedProvider([Stream(["rest"])], supports_prefill=True)
    history = [*MSGS, ChatMessage.assistant("The answer is")]
    async with p.stream_chat_with_history(history, "m", 0.0) as chunks:
        assert [c.delta async for c in chunks] == ["rest", ""]
    assert p.calls[0].messages[-1] == ChatMessage.assistant("The answer is")


# -- finish reasons and breaks ------------------------------------------------


def test_finish_reason_defaults() -> None:
    """Reply finishes with tool_calls when it has tool calls, else stop; Stream with stop."""
    assert Reply("x").finish_reason == "stop"
    assert Reply("", tool_calls=[CALL]).finish_reason == "tool_calls"
    assert Reply("x", finish_reason="length").finish_reason == "length"
    assert Stream(["a"]).finish_reason == "stop"


async def test_scripted_finish_reason_reaches_every_call_kind() -> None:
    """A scripted finish_reason is on the response, the final chunk and Final."""
    p = ScriptedProvider([Reply("cut short", finish_reason="length", usage=USAGE)])
    response = await p.chat(ChatRequest(MSGS), "m", 0.0)
    assert (response.finish_reason, response.raw_finish_reason) == ("length", None)
    chunks = [c for _, c in await chunks_of(p)]
    assert chunks[-1] == StreamChunk(is_final=True, finish_reason="length", usage=USAGE)
    async with p.stream_chat(ChatRequest(MSGS), "m", 0.0) as events:
        assert [e async for e in events][-1] == Final("length", usage=USAGE)
    q = ScriptedProvider([Stream(["a"], finish_reason="content_filter")])
    assert [c for _, c in await chunks_of(q)][-1].finish_reason == "content_filter"
    assert (await q.chat(ChatRequest(MSGS), "m", 0.0)).finish_reason == "content_filter"


async def test_reply_reasoning_streams_before_text() -> None:
    """A Reply's reasoning streams as a reasoning chunk / ReasoningDelta before the text."""
    p = ScriptedProvider([Reply("hi", reasoning="hmm")])
    chunks = [c for _, c in await chunks_of(p)]
    assert chunks == [StreamChunk(reasoning="hmm"), StreamChunk("hi"), STOP]
    async with p.stream_chat(ChatRequest(MSGS), "m", 0.0) as events:
        assert [e async for e in events] == [ReasoningDelta("hmm"), TextDelta("hi"), Final("stop")]


@pytest.mark.parametrize("tool_call", [False, True])
async def test_stream_broken_after_chunks(anyio_backend: object, tool_call: bool) -> None:
    """Stream.broken delivers its chunks, then raises a StreamError (tool call flag as given)."""
    p = ScriptedProvider([Stream.broken(["a", "b"], tool_call_in_progress=tool_call, gap=1.0)])
    seen: list[str] = []
    async with p.stream_chat(ChatRequest(MSGS), "m", 0.0) as events:
        with pytest.raises(StreamError) as info:
            async for event in events:
                assert isinstance(event, TextDelta)
                seen.append(event.text)
    assert seen == ["a", "b"]
    assert info.value.tool_call_in_progress is tool_call
    assert current_time() == 1.0
    assert not p.calls[0].cancelled


async def test_repr_shows_name_and_calls() -> None:
    """repr shows the provider name and the call count."""
    p = ScriptedProvider([Reply()], name="prim")
    await plain(p)
    assert repr(p) == "ScriptedProvider(name='prim', calls=1)"


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted and every name in it exists."""
    assert _scripted.__all__ == sorted(_scripted.__all__)
    assert all(hasattr(_scripted, n) for n in _scripted.__all__)
