"""Streaming failover through the bridge: the seed's stream tests plus cancellation and timing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager

import anyio
import anyio.lowlevel
import looptime
import pytest
import sniffio
import trio
import trio.lowlevel
import trio.testing

from reliant import (
    ChatMessage,
    ChatRequest,
    FailoverError,
    Final,
    NoStreamingProviderError,
    Provider,
    ProviderError,
    ReliableProvider,
    StreamChunk,
    StreamError,
    StreamOptions,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    fallback_scope,
    stream_from_generator,
    take_last_provider_fallback,
)
from reliant._backend import current_time
from reliant._bridge import BUFFER_SIZE
from reliant.testing import Empty, Fail, Hang, NoJitter, Reply, ScriptedProvider, Stream

pytestmark = pytest.mark.anyio
# For the test of trio's own machinery (its task tree): run it on trio alone.
TRIO_ONLY = pytest.mark.parametrize("anyio_backend", ["trio"], indirect=True)

HI = [ChatMessage.user("hi")]
DEFAULT = StreamOptions()
TOOL = ToolSpec(
    "shell", "run shell", {"type": "object", "properties": {"command": {"type": "string"}}}
)
CALL = ToolCall("call_1", "shell", '{"command":"date"}')


def ok(label: str, **kw: bool) -> ScriptedProvider:
    return ScriptedProvider([Stream([label])], **kw)


def rp(
    *providers: tuple[str, Provider], retries: int = 0, backoff: float = 0.001, **kw: object
) -> ReliableProvider:
    return ReliableProvider(list(providers), retries, backoff, **kw)  # type: ignore[arg-type]


async def collect(
    provider: Provider, messages: list[ChatMessage] = HI, model: str = "m"
) -> list[str]:
    async with provider.stream_chat_with_history(messages, model, 0.0) as chunks:
        return [c.delta if not c.is_final else "<final>" async for c in chunks]


class Upstream(Provider):
    """A streaming test provider that streams what :meth:`chunks` yields.

    The boilerplate of a hand-written upstream, once: subclasses write the
    stream as a generator (or replace ``stream_chat_with_history`` whole).
    """

    @property
    def supports_streaming(self) -> bool:
        return True

    async def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> str:
        return "unused"

    def stream_chat_with_history(
        self, messages: object, model: str, temperature: float, options: object = None
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        return aclosing(self.chunks())

    def chunks(self) -> AsyncGenerator[StreamChunk, None]:
        raise NotImplementedError


class SlowConnect(Upstream):
    """A streaming provider whose upstream takes `delay` to open (a slow TCP/TLS connect)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.entered = 0
        self.closed = 0

    def stream_chat_with_history(  # type: ignore[override]
        self,
        messages: object,
        model: str,
        temperature: float,
        options: StreamOptions = DEFAULT,
    ) -> object:
        @asynccontextmanager
        async def connect() -> AsyncIterator[AsyncIterator[StreamChunk]]:
            self.entered += 1
            try:
                await anyio.sleep(self.delay)

                async def items() -> AsyncIterator[StreamChunk]:
                    yield StreamChunk("slow")
                    yield StreamChunk.final()

                yield items()
            finally:
                self.closed += 1

        return connect()


# -- ported from the seed --------------------------------------------------


async def test_stream_chat_prefers_provider_with_tool_event_support() -> None:
    """With tools, only providers that stream tool events are candidates."""
    primary = ScriptedProvider([Reply("", tool_calls=[CALL])], tool_events=False)
    fallback = ScriptedProvider([Reply("", tool_calls=[CALL])], tool_events=True)
    p = rp(("primary", primary), ("fallback", fallback))
    async with p.stream_chat(ChatRequest(HI, [TOOL]), "model", 0.0) as events:
        got = [e async for e in events]
    assert got == [ToolCallEvent(CALL), Final("tool_calls")]
    assert (primary.call_count, fallback.call_count) == (0, 1)


async def test_stream_chat_errors_when_no_provider_supports_tool_events() -> None:
    """No tool-event streamer: the error comes on first iteration, nobody is called."""
    primary = ScriptedProvider([Reply()], tool_events=False)
    async with rp(("primary", primary)).stream_chat(
        ChatRequest(HI, [TOOL]), "model", 0.0
    ) as events:
        with pytest.raises(
            NoStreamingProviderError, match=r"^No provider supports streaming tool events$"
        ):
            await events.__anext__()
        with pytest.raises(StopAsyncIteration):
            await events.__anext__()
    assert primary.call_count == 0


async def test_stream_chat_with_history_delegates_to_streaming_provider() -> None:
    """The whole history reaches the streaming provider."""
    p = ok("4")
    msgs = [
        ChatMessage.system("system"),
        ChatMessage.user("msg1"),
        ChatMessage.assistant("resp1"),
        ChatMessage.user("msg2"),
    ]
    assert await collect(rp(("primary", p)), msgs) == ["4", "<final>"]
    assert p.calls[0].messages == tuple(msgs) and p.call_count == 1


async def test_stream_chat_with_history_skips_non_streaming_providers() -> None:
    """Providers that cannot stream are not candidates."""
    non = ok("no", streaming=False)
    yes = ok("1")
    assert await collect(rp(("non-streaming", non), ("streaming", yes))) == ["1", "<final>"]
    assert (non.call_count, yes.call_count) == (0, 1)


async def test_stream_chat_with_history_errors_when_no_provider_supports_streaming() -> None:
    """No streaming candidate: the seed's message, raised from the iteration."""
    p = rp(("non-streaming", ok("x", streaming=False)))
    with pytest.raises(NoStreamingProviderError, match=r"^No provider supports streaming$"):
        await collect(p)


async def test_stream_failover_advances_to_next_provider_on_connect_error() -> None:
    """An error before the first chunk fails over to the next provider."""
    broken = ScriptedProvider([Fail(RuntimeError("503 Service Unavailable"))])
    healthy = ok("healthy")
    assert await collect(rp(("broken", broken), ("healthy", healthy))) == ["healthy", "<final>"]
    assert (broken.call_count, healthy.call_count) == (1, 1)


async def test_stream_failover_retries_same_provider_then_succeeds(
    anyio_backend: object,
) -> None:
    """A retryable first-chunk error retries the same provider."""
    p = ScriptedProvider([Fail(RuntimeError("503 Service Unavailable")), Stream(["recovered"])])
    assert await collect(rp(("p", p), retries=1)) == ["recovered", "<final>"]
    assert p.call_count == 2


async def test_stream_failover_skips_retries_on_non_retryable_error() -> None:
    """A 401 before the first chunk spends no retries."""
    broken = ScriptedProvider([Fail(RuntimeError("401 Unauthorized"))])
    healthy = ok("healthy")
    assert await collect(rp(("broken", broken), ("healthy", healthy), retries=3)) == [
        "healthy",
        "<final>",
    ]
    assert (broken.call_count, healthy.call_count) == (1, 1)


async def test_stream_failover_walks_model_fallback_chain() -> None:
    """Streams walk the model chain, not just the primary model."""
    p = ScriptedProvider(
        {
            "primary-model": [Fail(RuntimeError("503"))],
            "fallback-model": [Stream(["fallback-served"])],
        }
    )
    r = rp(("p", p)).with_model_fallbacks({"primary-model": ["fallback-model"]})
    assert await collect(r, model="primary-model") == ["fallback-served", "<final>"]
    assert p.models == ["primary-model", "fallback-model"]


async def test_stream_failover_forwards_midstream_error_without_failover() -> None:
    """After the first chunk an upstream error ends the stream as StreamError; no failover."""
    boom = RuntimeError("mid-stream boom")
    primary = ScriptedProvider([Stream(["primary"], error=boom)])
    secondary = ok("secondary")
    async with rp(
        ("primary", primary), ("secondary", secondary), retries=2
    ).stream_chat_with_history(HI, "m", 0.0) as chunks:
        assert (await chunks.__anext__()).delta == "primary"
        with pytest.raises(StreamError, match="broke after it started: mid-stream boom") as info:
            await chunks.__anext__()
        assert info.value.__cause__ is boom
        with pytest.raises(StopAsyncIteration):
            await chunks.__anext__()
    assert (primary.call_count, secondary.call_count) == (1, 0)


async def test_stream_failover_empty_stream_closes_cleanly_without_error() -> None:
    """All-empty upstreams give a clean, empty stream."""
    p = ScriptedProvider([Empty()])
    assert await collect(rp(("p", p))) == []
    assert p.call_count == 1


async def test_stream_failover_stops_after_receiver_dropped(
    anyio_backend: object,
) -> None:
    """Closing during a slow first chunk stops the bridge; the fallback is never called."""
    slow = ScriptedProvider([Fail(RuntimeError("503 Service Unavailable"), delay=0.03)])
    fallback = ok("fallback")
    async with rp(("slow", slow), ("fallback", fallback)).stream_chat_with_history(
        HI, "m", 0.0
    ) as chunks:
        await anyio.wait_all_tasks_blocked()  # the bridge waits for the first chunk
        await chunks.aclose()
        assert slow.open_streams == 0
    await anyio.sleep(0.2)
    assert fallback.call_count == 0
    assert slow.calls[0].cancelled


async def test_close_before_the_bridge_ran_calls_no_upstream() -> None:
    """Closing before the bridge task first ran: no provider is called at all."""
    first, second = ok("first"), ok("second")
    async with rp(("first", first), ("second", second)).stream_chat_with_history(
        HI, "m", 0.0
    ) as chunks:
        await chunks.aclose()
        assert chunks.closed
    assert (first.call_count, second.call_count) == (0, 0)


# -- cancellation at every await point ----------------------------------------


async def test_aclose_during_connect_closes_upstream(
    anyio_backend: object,
) -> None:
    """aclose() during a slow connect returns at once, upstream closed; nothing else opens."""
    slow = SlowConnect(10.0)
    spare = ok("spare")
    async with rp(("slow", slow), ("spare", spare)).stream_chat_with_history(
        HI, "m", 0.0
    ) as chunks:
        await anyio.sleep(1)
        await chunks.aclose()
        assert current_time() == 1.0
        assert (slow.entered, slow.closed) == (1, 1)
    assert spare.call_count == 0


async def test_leaving_context_during_first_chunk_wait(
    anyio_backend: object,
) -> None:
    """Leaving the block while the first chunk is awaited cancels it at that instant."""
    hang = ScriptedProvider([Hang()])
    spare = ok("spare")
    async with rp(("hang", hang), ("spare", spare)).stream_chat_with_history(HI, "m", 0.0):
        await anyio.sleep(2)
    assert current_time() == 2.0
    assert hang.calls[0].finished_at == 2.0 and hang.calls[0].cancelled
    assert hang.open_streams == 0 and spare.call_count == 0


async def test_cancel_during_backoff_sleep(anyio_backend: object) -> None:
    """Closing during the backoff sleep stops it at once and opens no new upstream."""
    err = ProviderError("429", status_code=429, retry_after=10.0)
    p = ScriptedProvider([Fail(err), Stream(["late"])])
    async with rp(("p", p), retries=2).stream_chat_with_history(HI, "m", 0.0) as chunks:
        await anyio.sleep(5)
        await chunks.aclose()
        assert current_time() == 5.0  # the sleep was cancelled, not waited out
    await anyio.sleep(20)
    assert p.call_count == 1


async def test_cancel_while_forwarding_to_slow_consumer(
    anyio_backend: object,
) -> None:
    """Leaving while the bridge is blocked on send to a slow consumer closes the upstream."""
    p = ScriptedProvider([Stream([f"t{i}" for i in range(1000)])])
    async with rp(("p", p)).stream_chat_with_history(HI, "m", 0.0) as chunks:
        assert (await chunks.__anext__()).delta == "t0"
        await anyio.sleep(3)
    assert p.open_streams == 0 and p.calls[0].cancelled
    assert p.calls[0].finished_at == 3.0


async def test_callers_cancel_scope_expiring(anyio_backend: object) -> None:
    """The caller's own deadline cancels the bridge and the upstream; no failover follows."""
    hang = ScriptedProvider([Hang()])
    spare = ok("spare")
    r = rp(("hang", hang), ("spare", spare))
    with anyio.move_on_after(7) as scope:
        await collect(r)
    assert scope.cancelled_caught
    assert current_time() == 7.0
    assert hang.open_streams == 0 and spare.call_count == 0


async def test_caller_exception_comes_out_unchanged() -> None:
    """An exception raised inside `async with` is the very same object outside, not a group."""
    boom = ValueError("consumer bug")
    with pytest.raises(ValueError) as info:
        async with rp(("p", ok("x"))).stream_chat_with_history(HI, "m", 0.0) as chunks:
            await chunks.__anext__()
            raise boom
    assert info.value is boom


async def test_break_out_of_loop_closes_upstream() -> None:
    """`break` then leaving the block closes the upstream."""
    p = ScriptedProvider([Stream(["a", "b", "c"])])
    async with rp(("p", p)).stream_chat_with_history(HI, "m", 0.0) as chunks:
        async for _ in chunks:
            break
    assert p.open_streams == 0


async def test_iterating_without_entering_is_a_clear_error() -> None:
    """Forgetting `async with` raises a TypeError that shows the right usage."""
    with pytest.raises(TypeError, match="async with"):
        async for _ in rp(("p", ok("x"))).stream_chat_with_history(HI, "m", 0.0):  # type: ignore[attr-defined]
            pass


@TRIO_ONLY  # looks at trio's task tree
async def test_one_named_bridge_task_while_open(anyio_backend: object) -> None:
    """While a stream is open the caller has exactly one child task, the named bridge."""
    me = trio.lowlevel.current_task()
    before = list(me.child_nurseries)
    async with rp(("p", ok("x"))).stream_chat_with_history(HI, "m", 0.0) as chunks:
        opened = [nursery for nursery in me.child_nurseries if nursery not in before]
        tasks = [task for nursery in opened for task in nursery.child_tasks]
        assert [task.name for task in tasks] == ["reliant stream bridge"]
        assert [c.delta async for c in chunks] == ["x", ""]
    assert me.child_nurseries == before


# -- timeouts -----------------------------------------------------------------


async def test_first_chunk_timeout_fails_over_at_exact_deadline(
    anyio_backend: object,
) -> None:
    """A hung first chunk is abandoned at first_chunk_timeout and the next provider serves."""
    hang = ScriptedProvider([Hang()])
    spare = ok("spare")
    r = rp(("hang", hang), ("spare", spare), first_chunk_timeout=2.5)
    assert await collect(r) == ["spare", "<final>"]
    assert hang.calls[0].finished_at == 2.5
    assert spare.calls[0].started_at == 2.5


async def test_first_chunk_timeout_covers_connect(anyio_backend: object) -> None:
    """The first-chunk deadline includes opening the upstream."""
    slow = SlowConnect(100.0)
    spare = ok("spare")
    assert await collect(rp(("slow", slow), ("spare", spare), first_chunk_timeout=4)) == [
        "spare",
        "<final>",
    ]
    assert spare.calls[0].started_at == 4.0 and slow.closed == 1


async def test_first_chunk_timeout_is_retryable(anyio_backend: object) -> None:
    """Hitting the first-chunk timeout retries the same provider after backoff."""
    p = ScriptedProvider([Hang(), Stream(["second try"])])
    r = rp(("p", p), retries=1, backoff=1.0, first_chunk_timeout=3)
    assert await collect(r) == ["second try", "<final>"]
    assert 3.5 <= p.calls[1].started_at <= 4.0


async def test_first_chunk_timeout_counts_from_each_attempt(
    anyio_backend: object,
) -> None:
    """A retry's first-chunk deadline runs from that retry's start, after its backoff."""
    p = ScriptedProvider([Hang(), Hang()])
    spare = ok("spare")
    # Without provider health, which would move on at the first silent timeout.
    r = rp(
        ("p", p),
        ("spare", spare),
        retries=1,
        backoff=1.0,
        first_chunk_timeout=3,
        health=None,
        rng=NoJitter(),
    )
    assert await collect(r) == ["spare", "<final>"]
    assert p.calls[0].finished_at == 3.0
    retry = p.calls[1]
    assert retry.started_at == 4.0  # after the 1 s backoff
    assert retry.finished_at == 7.0  # its own 3 s, not what was left of the first's
    assert spare.calls[0].started_at == 7.0


class Busy(Upstream):
    """Works `seconds` of the (mock) clock without a checkpoint, then streams one chunk."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def chunks(self) -> AsyncGenerator[StreamChunk, None]:
        jump(self.seconds)
        yield StreamChunk("late")


def jump(seconds: float) -> None:
    """Move the virtual clock on by ``seconds`` without a checkpoint, as busy work would.

    On trio, MockClock.jump; on asyncio, looptime's loop set up again at the later time.
    """
    if sniffio.current_async_library() == "trio":
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, trio.testing.MockClock)
        clock.jump(seconds)
    else:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, looptime.LoopTimeEventLoop)
        loop.setup_looptime(start=loop.time() + seconds)


async def test_first_chunk_after_deadline_without_checkpoint_times_out(
    anyio_backend: object,
) -> None:
    """A first chunk produced past the deadline without ever suspending is still a timeout."""
    spare = ok("spare")
    r = rp(("busy", Busy(10.0)), ("spare", spare), first_chunk_timeout=5)
    assert await collect(r) == ["spare", "<final>"]
    assert spare.calls[0].started_at == 10.0
    fast = rp(("busy", Busy(4.0)), ("spare", ok("spare")), first_chunk_timeout=5)
    assert await collect(fast) == ["late"]


async def test_all_timeouts_give_failover_error(anyio_backend: object) -> None:
    """When every candidate times out, the streaming FailoverError lists each timeout."""
    r = rp(
        ("a", ScriptedProvider([Hang()])), ("b", ScriptedProvider([Hang()])), first_chunk_timeout=1
    )
    with pytest.raises(FailoverError) as info:
        await collect(r)
    assert str(info.value).startswith("All streaming providers/models failed. Attempts:\n")
    assert [a.provider for a in info.value.attempts] == ["a", "b"]
    assert "no first chunk within 1 s" in info.value.attempts[0].error
    assert current_time() == 2.0


async def test_idle_timeout_ends_stream_at_exact_deadline(
    anyio_backend: object,
) -> None:
    """A gap longer than idle_timeout after commit ends the stream with StreamError."""
    p = ScriptedProvider([Stream(["a", "b"], gap=100.0)])
    spare = ok("spare")
    async with rp(("p", p), ("spare", spare), idle_timeout=5).stream_chat_with_history(
        HI, "m", 0.0
    ) as chunks:
        assert (await chunks.__anext__()).delta == "a"
        with pytest.raises(StreamError, match="stalled: no data for 5 s"):
            await chunks.__anext__()
    assert current_time() == 5.0
    assert spare.call_count == 0


async def test_idle_timeout_does_not_count_consumer_time(
    anyio_backend: object,
) -> None:
    """A consumer slower than idle_timeout does not trip it."""
    p = ScriptedProvider([Stream([f"t{i}" for i in range(BUFFER_SIZE * 3)], gap=0.1)])
    got = []
    async with rp(("p", p), idle_timeout=1).stream_chat_with_history(HI, "m", 0.0) as chunks:
        async for c in chunks:
            got.append(c.delta)
            await anyio.sleep(2)
    assert len(got) == BUFFER_SIZE * 3 + 1


class Burst(Upstream):
    """Streams ``n`` chunks at once; with ``wait``, after one checkpoint (as a network read)."""

    def __init__(self, n: int, *, wait: bool) -> None:
        self.n, self.wait, self.pulled = n, wait, 0

    async def chunks(self) -> AsyncGenerator[StreamChunk, None]:
        if self.wait:
            await anyio.lowlevel.checkpoint()
        for i in range(self.n):
            self.pulled += 1
            yield StreamChunk(f"t{i}")


async def test_a_consumer_that_stops_waiting_can_wait_again(
    anyio_backend: object,
) -> None:
    """A read abandoned by the consumer's own timeout loses nothing; the next read gets it."""
    p = ScriptedProvider([Stream(["a", "b", "c"], gap=2.0)])
    async with rp(("p", p)).stream_chat_with_history(HI, "m", 0.0) as chunks:
        assert (await chunks.__anext__()).delta == "a"
        with anyio.move_on_after(0.5) as waited:
            await chunks.__anext__()
        assert waited.cancelled_caught and current_time() == 0.5
        got = [c.delta async for c in chunks]
        assert current_time() == 4.0
    assert got == ["b", "c", ""]


@pytest.mark.parametrize("run", range(8))
async def test_a_wait_timing_out_as_the_item_arrives_loses_nothing(
    run: int, anyio_backend: object
) -> None:
    """The consumer's timeout and the next item at the same instant: the item is kept."""
    # Both wake-ups happen in one scheduler batch, in either order (trio
    # shuffles): the bridge may put the item while the consumer's wait is
    # already being cancelled, and waking it then must do nothing.
    p = ScriptedProvider([Stream(["a", "b", "c"], gap=2.0)])
    async with rp(("p", p)).stream_chat_with_history(HI, "m", 0.0) as chunks:
        assert (await chunks.__anext__()).delta == "a"
        got: list[str] = []
        with anyio.move_on_after(2.0):
            got.append((await chunks.__anext__()).delta)
        got += [c.delta async for c in chunks]
    assert got == ["b", "c", ""]


async def test_slow_consumer_keeps_buffer_bounded(anyio_backend: object) -> None:
    """A fast producer is pulled at most BUFFER_SIZE (+1 in hand) items ahead of a slow consumer."""
    burst = Burst(10_000, wait=False)
    async with rp(("p", burst)).stream_chat_with_history(HI, "m", 0.0) as chunks:
        first = await chunks.__anext__()
        await anyio.sleep(10)
        # This upstream never makes the bridge wait, so there is no hand-over:
        # the bridge filled the buffer (BUFFER_SIZE) and holds one more it
        # cannot put, the consumer took the first, and nothing else was pulled
        # (the bridge waits for the consumer to drain half the buffer).
        assert len(chunks._buffer) == BUFFER_SIZE - 1
        assert burst.pulled == BUFFER_SIZE + 1
    assert first.delta == "t0"


async def test_first_chunk_is_handed_over_before_a_burst_is_read() -> None:
    """After an upstream that waited, the consumer has the first chunk before the bridge goes on."""
    burst = Burst(50, wait=True)
    async with rp(("p", burst)).stream_chat_with_history(HI, "m", 0.0) as chunks:
        assert (await chunks.__anext__()).delta == "t0"
        assert burst.pulled == 1
        rest = [c.delta async for c in chunks]
    assert rest == [f"t{i}" for i in range(1, 50)] and burst.pulled == 50


async def test_an_upstream_that_never_waits_is_forwarded_without_a_hand_over() -> None:
    """An in-process upstream that never suspends is read on at once (a hand-over gains nothing)."""
    burst = Burst(50, wait=False)
    async with rp(("p", burst)).stream_chat_with_history(HI, "m", 0.0) as chunks:
        assert (await chunks.__anext__()).delta == "t0"
        assert burst.pulled == 50
        rest = [c.delta async for c in chunks]
    assert rest == [f"t{i}" for i in range(1, 50)]


# -- fallback info, non-streaming fallback, nesting --------------------------------


async def test_stream_records_fallback_info() -> None:
    """A stream served by a fallback provider reports it through the scope (the seed cannot)."""
    r = rp(
        ("broken", ScriptedProvider([Fail(RuntimeError("401 Unauthorized"))])), ("working", ok("w"))
    )
    with fallback_scope():
        async with r.stream_chat_with_history(HI, "m", 0.0) as chunks:
            await chunks.__anext__()
            info = take_last_provider_fallback()
    assert info is not None
    assert (info.requested_provider, info.actual_provider, info.actual_model) == (
        "broken",
        "working",
        "m",
    )


async def test_stream_fallback_to_non_streaming() -> None:
    """With the option on, a request whose streams all failed is served without streaming."""
    streamer = ScriptedProvider([Fail(RuntimeError("503"))])
    plain = ScriptedProvider([Reply("whole answer")], streaming=False)
    r = rp(("streamer", streamer), ("plain", plain), stream_fallback_to_non_streaming=True)
    assert await collect(r) == ["whole answer", "<final>"]
    assert plain.calls[0].method == "chat_with_history"


async def test_stream_fallback_to_non_streaming_without_candidates() -> None:
    """With the option on and no streaming provider, the answer comes as one chunk."""
    plain = ScriptedProvider([Reply("whole")], streaming=False)
    assert await collect(rp(("plain", plain), stream_fallback_to_non_streaming=True)) == [
        "whole",
        "<final>",
    ]


async def test_stream_options_disabled_calls_nobody() -> None:
    """StreamOptions(enabled=False) raises NoStreamingProviderError without calling anyone."""
    p = ok("x")
    async with rp(("p", p)).stream_chat_with_history(
        HI, "m", 0.0, StreamOptions(enabled=False)
    ) as chunks:
        with pytest.raises(NoStreamingProviderError):
            await chunks.__anext__()
    assert p.call_count == 0


async def test_nested_reliable_providers_stream(anyio_backend: object) -> None:
    """A ReliableProvider of ReliableProviders streams, failing over at both levels."""
    inner_a = rp(
        ("a1", ScriptedProvider([Fail(RuntimeError("503"))])),
        ("a2", ScriptedProvider([Fail(RuntimeError("401"))])),
    )
    inner_b = rp(("b1", ScriptedProvider([Hang()])), ("b2", ok("deep")), first_chunk_timeout=1)
    outer = rp(("A", inner_a), ("B", inner_b), retries=1)
    assert await collect(outer) == ["deep", "<final>"]


async def test_stream_with_system_prompt_and_events() -> None:
    """stream_chat_with_system and stream_chat without tools deliver text and final."""
    r = rp(("p", ScriptedProvider([Stream(["a", "b"])])))
    async with r.stream_chat_with_system("sys", "hi", "m", 0.0) as chunks:
        assert [c.delta async for c in chunks] == ["a", "b", ""]
    r2 = rp(("p", ScriptedProvider([Stream(["a"])])))
    async with r2.stream_chat(ChatRequest(HI), "m", 0.0) as events:
        assert [e async for e in events] == [TextDelta("a"), Final("stop")]


async def test_aclose_after_end_is_harmless() -> None:
    """aclose() after the stream ended returns and further iteration stops."""
    async with rp(("p", ok("x"))).stream_chat_with_history(HI, "m", 0.0) as chunks:
        got = [c.delta async for c in chunks]
        assert got == ["x", ""]
        await chunks.aclose()
        with pytest.raises(StopAsyncIteration):
            await chunks.__anext__()


async def test_idle_timeout_counts_from_the_last_item(
    anyio_backend: object,
) -> None:
    """Gaps shorter than idle_timeout pass; silence ends the stream at last item + idle exactly."""
    upstream = SlowTail(gaps=[4.0, 4.0], then_hang=True)
    got: list[str] = []
    async with rp(("p", upstream), idle_timeout=5).stream_chat_with_history(HI, "m", 0.0) as c:
        with pytest.raises(StreamError, match="no data for 5 s"):
            async for chunk in c:
                got.append(chunk.delta)
    assert got == ["t0", "t1", "t2"]
    assert current_time() == 13.0
    assert upstream.closed_at == 13.0


class SlowTail(Provider):
    """Yields t0 at once, then one item after each gap, then hangs (or ends)."""

    def __init__(self, gaps: list[float], then_hang: bool) -> None:
        self.gaps = gaps
        self.then_hang = then_hang
        self.closed_at: float | None = None

    @property
    def supports_streaming(self) -> bool:
        return True

    async def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> str:
        return ""

    def stream_chat_with_history(
        self, messages: object, model: str, temperature: float, options: StreamOptions = DEFAULT
    ) -> object:
        @stream_from_generator
        async def gen(_: object) -> AsyncIterator[StreamChunk]:
            try:
                yield StreamChunk("t0")
                for i, gap in enumerate(self.gaps, 1):
                    await anyio.sleep(gap)
                    yield StreamChunk(f"t{i}")
                if self.then_hang:
                    await anyio.sleep_forever()
                yield StreamChunk.final()
            finally:
                self.closed_at = current_time()

        return gen(None)


async def test_idle_timeout_ignores_a_slow_consumer_between_items(
    anyio_backend: object,
) -> None:
    """A consumer that takes longer than idle between reads still gets every item."""
    upstream = SlowTail(gaps=[1.0, 1.0, 1.0], then_hang=False)
    got = []
    async with rp(("p", upstream), idle_timeout=2).stream_chat_with_history(HI, "m", 0.0) as c:
        async for chunk in c:
            got.append(chunk.delta)
            await anyio.sleep(10)
    assert got == ["t0", "t1", "t2", "t3", ""]


async def test_base_exception_in_body_comes_out_unchanged() -> None:
    """A KeyboardInterrupt raised inside `async with` is not wrapped in a group."""
    interrupt = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as info:
        async with rp(("p", ScriptedProvider([Hang()]))).stream_chat_with_history(HI, "m", 0.0):
            raise interrupt
    assert info.value is interrupt


async def test_aclose_after_error_stops_quietly(anyio_backend: object) -> None:
    """An unread failure is dropped by aclose(): iteration then just stops."""
    r = rp(("a", ScriptedProvider([Fail(RuntimeError("401 Unauthorized"))])))
    async with r.stream_chat_with_history(HI, "m", 0.0) as chunks:
        await anyio.sleep(1)
        await chunks.aclose()
        with pytest.raises(StopAsyncIteration):
            await chunks.__anext__()
        assert chunks.closed


async def test_iterating_after_the_block_stops_at_once() -> None:
    """Once the `async with` is left, buffered items and unread errors are gone."""
    async with rp(("p", ScriptedProvider([Stream(["a", "b", "c"])]))).stream_chat_with_history(
        HI, "m", 0.0
    ) as chunks:
        assert (await chunks.__anext__()).delta == "a"
    with pytest.raises(StopAsyncIteration):
        await chunks.__anext__()
