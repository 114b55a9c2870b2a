"""Mid-stream recovery (mid_stream="error" | "restart" | "continue"), in process, exact times."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing

import anyio
import anyio.lowlevel
import pytest

from reliant import (
    ChatMessage,
    ChatRequest,
    ContentFilterError,
    FailoverError,
    Final,
    Provider,
    ProviderError,
    ReliableProvider,
    StreamChunk,
    StreamError,
    StreamEvent,
    StreamOptions,
    StreamRestart,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    fallback_scope,
    stream_from_generator,
    take_last_provider_fallback,
)
from reliant._backend import current_time
from reliant._recovery import overlap
from reliant.testing import Fail, Reply, ScriptedProvider, Stream

pytestmark = pytest.mark.anyio

CANON = "The sky is blue because air scatters short wavelengths more than long ones."
PIECES = [
    "The sky ",
    "is blue ",
    "because air ",
    "scatters short ",
    "wavelengths more ",
    "than long ones.",
]
USER = [ChatMessage.user("Why is the sky blue?")]


def broken(n: int, error: Exception | None = None, *, name: str = "primary") -> ScriptedProvider:
    """Streams the first n pieces of the canonical answer, then breaks."""
    return ScriptedProvider(
        [Stream(PIECES[:n], error=error or StreamError("connection reset"))], name=name
    )


class Continuer(Provider):
    """Streams the canonical answer, continuing a trailing assistant message when it can."""

    def __init__(
        self, *, prefill: bool = True, overlap: int = 0, reject: bool = False, gap: float = 0.0
    ) -> None:
        self.prefill = prefill
        self.overlap = overlap
        self.reject = reject
        self.gap = gap
        self.requests: list[list[ChatMessage]] = []

    @property
    def supports_streaming(self) -> bool:
        return True

    @property
    def supports_streaming_tool_events(self) -> bool:
        return True

    @property
    def supports_prefill(self) -> bool:
        return self.prefill

    async def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> str:
        return CANON

    def _pieces(self, messages: Sequence[ChatMessage]) -> list[str]:
        self.requests.append(list(messages))
        last = messages[-1]
        if last.role == "assistant":
            if self.reject:
                raise ProviderError(
                    "backup API error (400 Bad Request): final assistant content is not supported",
                    provider="backup",
                    status_code=400,
                )
            assert CANON.startswith(last.content), last.content
            start = len(last.content) - self.overlap
            rest = CANON[start:]
            return [rest[i : i + 10] for i in range(0, len(rest), 10)]
        return list(PIECES)

    @stream_from_generator
    async def stream_chat_with_history(
        self,
        messages: Sequence[ChatMessage],
        model: str,
        temperature: float,
        options: StreamOptions = StreamOptions(),  # noqa: B008
    ) -> AsyncGenerator[StreamChunk, None]:
        pieces = self._pieces(messages)
        for piece in pieces:
            await anyio.sleep(self.gap)
            yield StreamChunk(piece)
        yield StreamChunk(is_final=True, finish_reason="stop")

    @stream_from_generator
    async def stream_chat(
        self,
        request: ChatRequest,
        model: str,
        temperature: float,
        options: StreamOptions = StreamOptions(),  # noqa: B008
    ) -> AsyncGenerator[StreamEvent, None]:
        for piece in self._pieces(request.messages):
            await anyio.sleep(self.gap)
            yield TextDelta(piece)
        yield Final(finish_reason="stop")


class Streams(Provider):
    """A streaming provider whose chunk stream (or event stream) is the given generator."""

    def __init__(
        self,
        chunks: Callable[[], AsyncGenerator[StreamChunk, None]] | None = None,
        events: Callable[[], AsyncGenerator[StreamEvent, None]] | None = None,
    ) -> None:
        self._chunks = chunks
        self._events = events

    @property
    def supports_streaming(self) -> bool:
        return True

    @property
    def supports_streaming_tool_events(self) -> bool:
        return self._events is not None

    async def chat_with_system(self, s: str | None, m: str, model: str, t: float) -> str:
        return ""

    @stream_from_generator
    async def stream_chat_with_system(
        self,
        s: str | None,
        m: str,
        model: str,
        t: float,
        options: StreamOptions = StreamOptions(),  # noqa: B008
    ) -> AsyncGenerator[StreamChunk, None]:
        assert self._chunks is not None
        async with aclosing(self._chunks()) as chunks:
            async for chunk in chunks:
                yield chunk

    @stream_from_generator
    async def stream_chat(
        self,
        request: ChatRequest,
        model: str,
        temperature: float,
        options: StreamOptions = StreamOptions(),  # noqa: B008
    ) -> AsyncGenerator[StreamEvent, None]:
        assert self._events is not None
        async with aclosing(self._events()) as events:
            async for event in events:
                yield event


def honour(chunks: list[StreamChunk]) -> str:
    """What a consumer that honours the restart signal ends up with."""
    text = ""
    for c in chunks:
        if c.restarted:
            text = ""
        text += c.delta
    return text


async def collect(llm: ReliableProvider, messages: list[ChatMessage] = USER) -> list[StreamChunk]:
    async with llm.stream_chat_with_history(messages, "m", 0.0) as chunks:
        return [c async for c in chunks]


# -- error (the default) -----------------------------------------------------------


async def test_error_mode_is_the_default() -> None:
    """A break after the first chunk is a StreamError; the backup is never asked."""
    backup = Continuer()
    llm = ReliableProvider([("primary", broken(2)), ("backup", backup)])
    got: list[str] = []
    with pytest.raises(StreamError, match="connection reset"):
        async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
            async for c in chunks:
                got.append(c.delta)
    assert got == PIECES[:2] and backup.requests == []


# -- restart -------------------------------------------------------------------------


async def test_restart_signals_then_streams_a_whole_new_answer() -> None:
    """restart: the backup's first chunk carries restarted=True and the honoured text is whole."""
    backup = Continuer()
    llm = ReliableProvider([("primary", broken(2)), ("backup", backup)], mid_stream="restart")
    with fallback_scope():
        chunks = await collect(llm)
        info = take_last_provider_fallback()
    assert [c.restarted for c in chunks].count(True) == 1
    assert chunks[2].restarted and chunks[2].delta == PIECES[0]
    assert honour(chunks) == CANON
    assert chunks[-1].is_final and chunks[-1].finish_reason == "stop"
    assert backup.requests == [USER]  # the original request, no prefill
    assert info is not None and info.actual_provider == "backup"
    (rec,) = info.recoveries
    assert (rec.provider, rec.after_chars, rec.mode, rec.to_provider) == (
        "primary",
        len("".join(PIECES[:2])),
        "restart",
        "backup",
    )
    assert "connection reset" in rec.reason


async def test_restart_in_the_event_api_sends_a_stream_restart_event() -> None:
    """stream_chat: a StreamRestart event comes before the new answer's first event."""
    primary = ScriptedProvider([Stream(PIECES[:3], error=StreamError("reset"))], name="primary")
    llm = ReliableProvider([("primary", primary), ("backup", Continuer())], mid_stream="restart")
    async with llm.stream_chat(ChatRequest(USER), "m", 0.0) as events:
        got = [e async for e in events]
    i = got.index(StreamRestart())
    assert [e.text for e in got[:i] if isinstance(e, TextDelta)] == PIECES[:3]
    assert "".join(e.text for e in got[i:] if isinstance(e, TextDelta)) == CANON
    assert got[-1] == Final(finish_reason="stop")


async def test_stall_is_recovered_at_the_exact_idle_deadline(
    anyio_backend: object,
) -> None:
    """A stream silent for idle_timeout after 2 chunks restarts on the backup at that instant."""

    async def stalls() -> AsyncGenerator[StreamChunk, None]:
        yield StreamChunk(PIECES[0])
        await anyio.sleep(1.0)
        yield StreamChunk(PIECES[1])
        await anyio.sleep_forever()

    llm = ReliableProvider(
        [("primary", Streams(stalls)), ("backup", Continuer())],
        mid_stream="restart",
        idle_timeout=5.0,
    )
    times: list[float] = []
    chunks: list[StreamChunk] = []
    async with llm.stream_chat_with_history(USER, "m", 0.0) as stream:
        async for c in stream:
            chunks.append(c)
            times.append(current_time())
    assert times[:2] == [0.0, 1.0]
    assert chunks[2].restarted and times[2] == 6.0
    assert honour(chunks) == CANON


async def test_one_provider_restarts_on_the_same_route() -> None:
    """With no other candidate the same route is asked again (no backoff sleep)."""
    p = ScriptedProvider([Stream(PIECES[:2], error=StreamError("reset")), Stream(PIECES)])
    llm = ReliableProvider([("only", p)], mid_stream="restart")
    chunks = await collect(llm)
    assert honour(chunks) == CANON
    assert len(p.calls) == 2


async def test_recovery_limit_is_honoured() -> None:
    """max_stream_recoveries=1: a second break is a StreamError naming both."""
    first = broken(2, name="a")
    second = ScriptedProvider([Stream(PIECES[:1], error=StreamError("cut again"))], name="b")
    third = Continuer()
    llm = ReliableProvider(
        [("a", first), ("b", second), ("c", third)], mid_stream="restart", max_stream_recoveries=1
    )
    with pytest.raises(StreamError, match="cut again"):
        await collect(llm)
    assert third.requests == []
    llm2 = ReliableProvider(
        [("a", broken(2, name="a")), ("b", second), ("c", third)],
        mid_stream="restart",
        max_stream_recoveries=2,
    )
    assert honour(await collect(llm2)) == CANON


async def test_unrecoverable_break_never_passes_off_a_partial_answer() -> None:
    """When every other candidate fails before its first chunk the caller gets a StreamError."""
    dead = ScriptedProvider([Fail(ProviderError("down", status_code=503))], name="b")
    llm = ReliableProvider([("a", broken(2, name="a")), ("b", dead)], mid_stream="restart")
    with pytest.raises(StreamError, match="could not be recovered") as info:
        await collect(llm)
    assert isinstance(info.value.__cause__, FailoverError)
    reasons = [a.reason for a in info.value.__cause__.attempts]
    assert reasons[0] == "stream_broken" and reasons[1:] == ["retryable"] * 3


# -- continue ------------------------------------------------------------------------


async def test_continue_sends_the_delivered_text_as_prefill_and_forwards_one_answer() -> None:
    """continue: the backup gets the text as the last assistant message; no restart, no gap."""
    backup = Continuer()
    llm = ReliableProvider([("primary", broken(3)), ("backup", backup)], mid_stream="continue")
    with fallback_scope():
        chunks = await collect(llm)
        info = take_last_provider_fallback()
    assert not any(c.restarted for c in chunks)
    assert "".join(c.delta for c in chunks) == CANON
    delivered = "".join(PIECES[:3])
    assert backup.requests == [[*USER, ChatMessage.assistant(delivered)]]
    assert info is not None
    assert [(r.mode, r.after_chars) for r in info.recoveries] == [("continue", len(delivered))]


async def test_continue_in_the_event_api() -> None:
    """stream_chat continue: TextDelta events add up to one answer."""
    primary = ScriptedProvider([Stream(PIECES[:2], error=StreamError("reset"))], name="primary")
    llm = ReliableProvider([("primary", primary), ("backup", Continuer())], mid_stream="continue")
    async with llm.stream_chat(ChatRequest(USER), "m", 0.0) as events:
        got = [e async for e in events]
    assert StreamRestart() not in got
    assert "".join(e.text for e in got if isinstance(e, TextDelta)) == CANON


async def test_continuation_that_repeats_the_last_words_is_trimmed() -> None:
    """A continuation repeating the last 12 characters is trimmed: no duplicated text."""
    llm = ReliableProvider(
        [("primary", broken(3)), ("backup", Continuer(overlap=12))], mid_stream="continue"
    )
    assert "".join(c.delta for c in await collect(llm)) == CANON


async def test_continue_skips_candidates_that_cannot_continue() -> None:
    """The next candidate that supports prefill continues; one that cannot is passed over."""
    plain = Continuer(prefill=False)
    able = Continuer()
    llm = ReliableProvider(
        [("primary", broken(2)), ("plain", plain), ("able", able)], mid_stream="continue"
    )
    chunks = await collect(llm)
    assert "".join(c.delta for c in chunks) == CANON
    assert plain.requests == [] and len(able.requests) == 1


async def test_continue_without_a_prefill_candidate_restarts() -> None:
    """No remaining candidate can continue: restart semantics, with the signal."""
    plain = Continuer(prefill=False)
    llm = ReliableProvider([("primary", broken(2)), ("plain", plain)], mid_stream="continue")
    with fallback_scope():
        chunks = await collect(llm)
        info = take_last_provider_fallback()
    assert chunks[2].restarted and honour(chunks) == CANON
    assert plain.requests == [USER]
    assert info is not None and info.recoveries[0].mode == "restart"


async def test_rejected_prefill_becomes_a_restart_and_the_rejection_is_kept() -> None:
    """A 400 on the continuation: the next candidate restarts the answer, with the signal."""
    rejecting = Continuer(reject=True)
    plain = Continuer(prefill=False)
    llm = ReliableProvider(
        [("primary", broken(2)), ("backup", rejecting), ("third", plain)], mid_stream="continue"
    )
    with fallback_scope():
        chunks = await collect(llm)
        info = take_last_provider_fallback()
    assert honour(chunks) == CANON
    assert sum(c.restarted for c in chunks) == 1
    assert len(rejecting.requests) == 1 and plain.requests == [USER]
    assert info is not None and info.actual_provider == "third"
    assert info.recoveries[0].mode == "restart"


async def test_tool_call_in_progress_is_restarted_not_continued() -> None:
    """A break flagged tool_call_in_progress restarts even in continue mode."""
    error = StreamError("cut during tool arguments", tool_call_in_progress=True)
    primary = ScriptedProvider([Stream(PIECES[:2], error=error)], name="primary")
    able = Continuer()
    llm = ReliableProvider([("primary", primary), ("backup", able)], mid_stream="continue")
    chunks = await collect(llm)
    assert chunks[2].restarted and able.requests == [USER]


async def test_delivered_tool_call_is_restarted_not_continued() -> None:
    """In the event API an answer that already delivered a ToolCallEvent restarts."""

    async def tool_then_cut() -> AsyncGenerator[StreamEvent, None]:
        yield TextDelta("Let me look. ")
        yield ToolCallEvent(ToolCall("c1", "lookup", "{}"))
        raise StreamError("reset")

    able = Continuer()
    llm = ReliableProvider(
        [("primary", Streams(events=tool_then_cut)), ("backup", able)], mid_stream="continue"
    )
    async with llm.stream_chat(ChatRequest(USER), "m", 0.0) as events:
        got = [e async for e in events]
    assert StreamRestart() in got and able.requests == [USER]


def test_overlap_rules() -> None:
    """Overlaps count when whitespace-only or at least 8 characters; coincidences do not."""
    assert overlap("the sky is blue ", " because") == 1
    assert overlap("the sky is blue", "sky is blue because") == len("sky is blue")
    assert overlap("in a", "a cat") == 0
    assert overlap("", "anything") == 0


def test_mid_stream_arguments_are_validated() -> None:
    """Unknown modes and out-of-range limits are refused with the argument named."""
    with pytest.raises(ValueError, match="mid_stream"):
        ReliableProvider([("p", Continuer())], mid_stream="retry")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_stream_recoveries"):
        ReliableProvider([("p", Continuer())], max_stream_recoveries=-1)


# -- end states ----------------------------------------------------------------------


async def test_content_filter_is_final_by_default() -> None:
    """A content-filter refusal is raised as is: one call in total, no fallback."""
    refusal = ContentFilterError("refused", provider="primary", status_code=400)
    primary = ScriptedProvider([Fail(refusal)], name="primary")
    backup = ScriptedProvider([Reply("other")], name="backup")
    llm = ReliableProvider([("primary", primary), ("backup", backup)], max_retries=2)
    with pytest.raises(ContentFilterError):
        await llm.simple_chat("x", "m", 0.0)
    assert (len(primary.calls), len(backup.calls)) == (1, 0)
    with pytest.raises(ContentFilterError):
        await collect(llm)
    assert (len(primary.calls), len(backup.calls)) == (2, 0)


async def test_content_filter_fallback_is_opt_in() -> None:
    """fallback_on_content_filter=True moves on to the next candidate, trail says content_filter."""
    refusal = ContentFilterError("refused", provider="primary", status_code=400)
    primary = ScriptedProvider([Fail(refusal)], name="primary")
    backup = ScriptedProvider([Fail(ProviderError("down", status_code=500))], name="backup")
    llm = ReliableProvider(
        [("primary", primary), ("backup", backup)], max_retries=0, fallback_on_content_filter=True
    )
    with pytest.raises(FailoverError) as info:
        await llm.simple_chat("x", "m", 0.0)
    assert [a.reason for a in info.value.attempts] == ["content_filter", "retryable"]


async def test_unfixable_overflow_moves_to_a_larger_candidate() -> None:
    """One huge message overflows the primary; the backup (larger window) serves it."""
    overflow = ProviderError(
        "primary API error (400 Bad Request): maximum context length is 8192 tokens",
        status_code=400,
    )
    small = ScriptedProvider([Fail(overflow)], name="small")
    large = ScriptedProvider([Reply("fits")], name="large")
    llm = ReliableProvider([("small", small), ("large", large)], max_retries=3)
    assert await llm.chat_with_history([ChatMessage.user("x" * 50_000)], "m", 0.0) == "fits"
    assert len(small.calls) == 1  # never retried blindly
    both = ReliableProvider([("a", small), ("b", ScriptedProvider([Fail(overflow)]))])
    with pytest.raises(FailoverError, match="context window"):
        await both.chat_with_history([ChatMessage.user("x" * 50_000)], "m", 0.0)


async def test_first_chunk_just_after_the_deadline_is_a_timeout(
    anyio_backend: object,
) -> None:
    """A first chunk returned after the deadline fired (no checkpoint) fails over, not 'stalled'."""

    async def late() -> AsyncGenerator[StreamChunk, None]:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(2.0)  # the item is ready only after the 1 s deadline
        yield StreamChunk("late")
        yield StreamChunk.final()

    backup = ScriptedProvider([Stream(["on time"])], name="backup")
    llm = ReliableProvider([("late", Streams(late)), ("backup", backup)], first_chunk_timeout=1.0)
    async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
        got = [(c.delta, current_time()) async for c in chunks]
    assert got == [("on time", 2.0), ("", 2.0)]
    assert llm.health()[("late", "m")].state == "open"
