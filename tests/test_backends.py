"""The same guarantees on trio and on asyncio, each on a virtual clock, exact times.

Every test here runs twice (see ``anyio_backend`` in conftest): on trio with
``MockClock(autojump_threshold=0)`` and on asyncio with looptime's loop. The
asyncio hazards (task cancellation, ``asyncio.timeout`` nesting,
``wait_for``, ``gather``/``TaskGroup`` and context variables) have tests of
their own below, on asyncio only.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import anyio
import pytest

from reliant import (
    ChatMessage,
    FailoverError,
    ProviderError,
    ReliableProvider,
    StreamError,
    fallback_scope,
    take_last_provider_fallback,
    take_last_request_record,
)
from reliant._backend import current_time
from reliant._bridge import BUFFER_SIZE
from reliant.providers import Anthropic, OpenAICompatible
from reliant.testing import Fail, Hang, NoJitter, Reply, ScriptedProvider, Stream, serve_fake_llm

pytestmark = pytest.mark.anyio

HI = [ChatMessage.user("hi")]
DOWN = Fail(ProviderError("down", status_code=500))


def starts(p: ScriptedProvider) -> list[float]:
    return [c.started_at for c in p.calls]


async def drain(llm: ReliableProvider, model: str = "m") -> list[str]:
    async with llm.stream_chat_with_history(HI, model, 0.0) as chunks:
        return [c.delta async for c in chunks]


def is_asyncio(anyio_backend: tuple[str, Any]) -> bool:
    return anyio_backend[0] == "asyncio"


async def test_call_retries_then_falls_back_at_exact_times(anyio_backend: Any) -> None:
    """A 500 is retried after 0.5 s, then the backup answers at t=0.5: on both backends."""
    t0 = current_time()
    primary = ScriptedProvider([DOWN], name="primary")
    backup = ScriptedProvider([Reply("from backup")], name="backup")
    llm = ReliableProvider([primary, backup], max_retries=1, base_backoff=0.5, rng=NoJitter())
    with fallback_scope():
        assert await llm.simple_chat("x", "m", 0.0) == "from backup"
        info = take_last_provider_fallback()
    assert [t - t0 for t in starts(primary)] == [0.0, 0.5]
    assert [t - t0 for t in starts(backup)] == [0.5]
    assert info is not None and info.actual_provider == "backup"


async def test_stream_first_chunk_timeout_fails_over_on_time(anyio_backend: Any) -> None:
    """A hung primary is abandoned at exactly the first-chunk timeout; the backup streams."""
    t0 = current_time()
    hung = ScriptedProvider([Hang()], name="hung")
    backup = ScriptedProvider([Stream(["Hello", " world"])], name="backup")
    llm = ReliableProvider([hung, backup], first_chunk_timeout=2.0)
    assert await drain(llm) == ["Hello", " world", ""]
    assert [t - t0 for t in starts(backup)] == [2.0]
    assert hung.calls[0].cancelled and hung.open_streams == 0


async def test_idle_timeout_breaks_a_committed_stream_on_time(anyio_backend: Any) -> None:
    """An upstream silent for the idle timeout after its first item ends in StreamError."""
    t0 = current_time()
    stalls = ScriptedProvider([Stream(["Hel", "lo"], gap=60.0)], name="stalls")
    llm = ReliableProvider([stalls], idle_timeout=3.0)
    seen: list[str] = []
    with pytest.raises(StreamError, match="stalled"):
        async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
            async for c in chunks:
                seen.append(c.delta)
    assert seen == ["Hel"]
    assert current_time() - t0 == 3.0
    assert stalls.open_streams == 0


async def test_a_steady_stream_never_trips_the_idle_timeout(anyio_backend: Any) -> None:
    """Items 2 s apart under a 3 s idle timeout flow to the end: the deadline moves each wait."""
    t0 = current_time()
    steady = ScriptedProvider([Stream(["a", "b", "c", "d", "e"], gap=2.0)], name="steady")
    llm = ReliableProvider([steady], idle_timeout=3.0)
    assert await drain(llm) == ["a", "b", "c", "d", "e", ""]
    assert current_time() - t0 == 8.0


async def test_the_idle_clock_restarts_after_a_slow_consumer(anyio_backend: Any) -> None:
    """A consumer busy for 10 s is not idleness; a 3 s silence after that still is."""
    t0 = current_time()
    late = ScriptedProvider([Stream(["a", "b", "c"], gap=6.0)], name="late")
    llm = ReliableProvider([late], idle_timeout=3.0)
    seen: list[str] = []
    with pytest.raises(StreamError, match="stalled"):
        async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
            async for c in chunks:
                seen.append(c.delta)
                if c.delta == "a":
                    await anyio.sleep(10.0)
    # "b" came at 6 while the consumer slept; waiting again at 10, it was idle
    # since 6: the deadline 6 + 3 had passed, so the stream ended at once.
    assert seen == ["a", "b"]
    assert current_time() - t0 == 10.0


async def test_leaving_the_block_stops_the_upstream_at_once(anyio_backend: Any) -> None:
    """Breaking out of `async for` closes the upstream at that instant; no task outlives it."""
    t0 = current_time()
    before = asyncio.all_tasks() if is_asyncio(anyio_backend) else set()
    slow = ScriptedProvider([Stream(["a", "b", "c", "d"], first_delay=1.0, gap=1.0)], name="slow")
    llm = ReliableProvider([slow])
    async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
        async for c in chunks:
            if c.delta == "b":
                break
    assert current_time() - t0 == 2.0
    assert slow.open_streams == 0 and slow.calls[0].cancelled
    if is_asyncio(anyio_backend):
        assert asyncio.all_tasks() == before


async def test_cancelling_the_caller_stops_the_backoff_sleep(anyio_backend: Any) -> None:
    """A cancel scope around a request ends it inside its backoff sleep, at the deadline."""
    t0 = current_time()
    primary = ScriptedProvider([DOWN], name="primary")
    llm = ReliableProvider([primary], max_retries=3, base_backoff=4.0, rng=NoJitter())
    with anyio.move_on_after(1.5) as scope:
        await drain(llm)
    assert scope.cancelled_caught
    assert current_time() - t0 == 1.5
    assert len(primary.calls) == 1  # the retry never started


async def test_cancellation_is_never_retried_or_recorded(anyio_backend: Any) -> None:
    """A cancelled request makes one call, records no failed attempt, and is 'cancelled'."""
    hung = ScriptedProvider([Hang()], name="hung")
    llm = ReliableProvider([hung, ScriptedProvider([Reply("no")], name="b")], max_retries=2)
    with fallback_scope():
        with anyio.move_on_after(1.0):
            await llm.simple_chat("x", "m", 0.0)
        record = take_last_request_record()
    assert len(hung.calls) == 1 and hung.calls[0].cancelled
    assert record is not None and record.outcome == "cancelled"
    assert [a.reason for a in record.attempts] == ["cancelled"]


async def test_the_buffer_is_bounded_for_a_slow_consumer(anyio_backend: Any) -> None:
    """A fast upstream is held to the buffer's size while the consumer sleeps."""
    many = [f"t{i}" for i in range(BUFFER_SIZE * 4)]
    produced: list[int] = []

    class Counting(ScriptedProvider):
        def stream_chat_with_history(self, *args: Any, **kwargs: Any) -> Any:
            inner = super().stream_chat_with_history(*args, **kwargs)

            class Opening:
                async def __aenter__(self) -> Any:
                    items = await inner.__aenter__()

                    async def counted() -> Any:
                        async for item in items:
                            produced.append(1)
                            yield item

                    return counted()

                async def __aexit__(self, *exc: Any) -> Any:
                    return await inner.__aexit__(*exc)

            return Opening()

    llm = ReliableProvider([Counting([Stream(many)], name="fast")])
    async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
        first = await chunks.__anext__()
        await anyio.sleep(10.0)
        assert first.delta == "t0"
        assert len(produced) <= BUFFER_SIZE + 2  # the buffer, the item in hand, one in flight
        rest = [c.delta async for c in chunks]
    assert [first.delta, *rest] == [*many, ""]


async def test_keyboard_interrupt_passes_straight_through(anyio_backend: Any) -> None:
    """A KeyboardInterrupt from a provider is neither retried nor wrapped."""
    primary = ScriptedProvider([Fail(KeyboardInterrupt())], name="primary")  # type: ignore[arg-type]
    llm = ReliableProvider([primary, ScriptedProvider([Reply("no")], name="b")], max_retries=2)
    with pytest.raises(KeyboardInterrupt):
        await llm.simple_chat("x", "m", 0.0)
    assert len(primary.calls) == 1


async def test_http_failover_and_disconnect_on_both_backends(anyio_backend: Any) -> None:
    """Over real loopback HTTP: a 500 fails over, and leaving a stream closes its connection."""
    async with (
        serve_fake_llm() as server,
        OpenAICompatible(name="oa", base_url=server.openai_base_url, api_key="k") as oa,
        Anthropic(name="an", base_url=server.anthropic_base_url, api_key="k") as an,
    ):
        llm = ReliableProvider(
            [oa, an],
            max_retries=0,
            model_aliases={"oa": {"m": "status:500"}, "an": {"m": "ok:chunks=3"}},
        )
        assert await drain(llm) == ["tok0 ", "tok1 ", "tok2 ", ""]
        stalled = ReliableProvider([oa], model_aliases={"oa": {"m": "hang_body:after=1"}})
        async with stalled.stream_chat_with_history(HI, "m", 0.0) as chunks:
            async for c in chunks:
                assert c.delta == "tok0 "
                break
            left_at = current_time()
        index = len(server.requests) - 1
        assert await server.wait_for_disconnect(index) == left_at  # the same (virtual) clock
        assert index in server.aborted


# -- asyncio's own hazards -----------------------------------------------------------------


def asyncio_only(anyio_backend: tuple[str, Any]) -> None:
    if not is_asyncio(anyio_backend):
        pytest.skip("an asyncio hazard")


async def test_task_cancel_stops_a_stream_and_closes_the_upstream(anyio_backend: Any) -> None:
    """task.cancel() on the task that owns a stream ends it and closes the upstream at once."""
    asyncio_only(anyio_backend)
    t0 = current_time()
    before = asyncio.all_tasks()
    hung = ScriptedProvider([Stream(["a", "b"], gap=100.0)], name="hung")
    llm = ReliableProvider([hung], idle_timeout=None)
    task = asyncio.ensure_future(drain(llm))
    await asyncio.sleep(5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert current_time() - t0 == 5.0
    assert hung.open_streams == 0 and hung.calls[0].cancelled
    assert asyncio.all_tasks() == before


async def test_asyncio_cancellation_closes_a_real_http_stream_at_once(anyio_backend: Any) -> None:
    """task.cancel() and asyncio.timeout() mid-stream over HTTP: the server sees each close then."""
    asyncio_only(anyio_backend)
    async with (
        serve_fake_llm() as server,
        OpenAICompatible(name="oa", base_url=server.openai_base_url, api_key="k") as oa,
    ):
        llm = ReliableProvider([oa], model_aliases={"oa": {"m": "ok:chunks=100:gap=1"}})
        before = own_tasks()
        task = asyncio.ensure_future(drain(llm))
        await asyncio.sleep(2.5)
        task.cancel()
        cancelled_at = current_time()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await server.wait_for_disconnect(0) == cancelled_at
        t0 = current_time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.5):
                await drain(llm)
        assert await server.wait_for_disconnect(1) == t0 + 1.5 == current_time()
        assert server.aborted == [0, 1]
        assert own_tasks() == before


def own_tasks() -> set[asyncio.Task[Any]]:
    """The loop's tasks but the fake server's, which runs on the test's loop too."""
    return {
        t
        for t in asyncio.all_tasks()
        if not t.get_name().startswith("reliant.testing._fake_server.")
    }


async def test_asyncio_timeout_around_a_stream(anyio_backend: Any) -> None:
    """asyncio.timeout(3) around a hung stream raises TimeoutError at exactly t=3."""
    asyncio_only(anyio_backend)
    t0 = current_time()
    llm = ReliableProvider([ScriptedProvider([Hang()], name="hung")], first_chunk_timeout=None)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(3.0):
            await drain(llm)
    assert current_time() - t0 == 3.0


async def test_outer_timeout_still_fires_after_reliant_handled_an_inner_one(
    anyio_backend: Any,
) -> None:
    """reliant's own first-chunk timeouts (inner cancellations) leave an outer timeout intact."""
    asyncio_only(anyio_backend)
    t0 = current_time()
    hung_a = ScriptedProvider([Hang()], name="a")
    hung_b = ScriptedProvider([Hang()], name="b")
    llm = ReliableProvider([hung_a, hung_b], max_retries=5, first_chunk_timeout=1.0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(2.5):
            await drain(llm)
    # a at 0 timed out at 1 (handled), b at 1 timed out at 2 (handled), the
    # outer timeout fired at 2.5 inside the next attempt.
    assert current_time() - t0 == 2.5
    assert len(hung_a.calls) + len(hung_b.calls) == 3
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_wait_for_around_a_call(anyio_backend: Any) -> None:
    """asyncio.wait_for cancels a call stuck in its backoff and raises TimeoutError on time."""
    asyncio_only(anyio_backend)
    t0 = current_time()
    primary = ScriptedProvider([DOWN], name="primary")
    llm = ReliableProvider([primary], max_retries=3, base_backoff=4.0, rng=NoJitter())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(llm.simple_chat("x", "m", 0.0), 1.0)
    assert current_time() - t0 == 1.0
    assert len(primary.calls) == 1


async def test_fallback_info_is_per_task_under_gather_and_task_group(anyio_backend: Any) -> None:
    """Concurrent requests in gather() and a TaskGroup each see their own fallback info."""
    asyncio_only(anyio_backend)

    async def one(primary_fails: bool) -> str | None:
        primary = ScriptedProvider([DOWN if primary_fails else Reply("p")], name="primary")
        llm = ReliableProvider([primary, ScriptedProvider([Reply("b")], name="backup")])
        with fallback_scope():
            await llm.simple_chat("x", "m", 0.0)
            info = take_last_provider_fallback()
        return None if info is None else info.actual_provider

    flags = [True, False, True, False]
    assert await asyncio.gather(*(one(f) for f in flags)) == ["backup", None, "backup", None]
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(f)) for f in flags]
    assert [t.result() for t in tasks] == ["backup", None, "backup", None]


async def test_a_failover_error_on_asyncio_is_the_same_error(anyio_backend: Any) -> None:
    """Every candidate failing raises FailoverError with the trail, never a CancelledError."""
    asyncio_only(anyio_backend)
    llm = ReliableProvider([ScriptedProvider([DOWN], name="a")], max_retries=1, base_backoff=0.1)
    with pytest.raises(FailoverError) as info:
        await drain(llm)
    assert [a.reason for a in info.value.attempts] == ["retryable", "retryable"]


async def test_an_abandoned_generator_closes_its_stream(anyio_backend: Any) -> None:
    """An async generator that owns a stream, dropped unclosed, still closes the upstream."""
    asyncio_only(anyio_backend)
    slow = ScriptedProvider([Stream(["a", "b", "c"], gap=1.0)], name="slow")
    llm = ReliableProvider([slow])

    async def relay() -> Any:
        async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
            async for c in chunks:
                yield c.delta

    agen = relay()
    assert await agen.__anext__() == "a"
    del agen
    gc.collect()
    for _ in range(10):  # the loop's asyncgen finalizer closes it in a task of its own
        await asyncio.sleep(0)
    assert slow.open_streams == 0
    assert sys.getrefcount(llm) >= 1


def test_asyncio_run_ends_clean_after_abandoned_and_cancelled_streams(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncio.run() over abandoned, cancelled and timed-out streams: no pending task, no error."""
    import logging

    caplog.set_level(logging.DEBUG, logger="asyncio")

    async def main() -> None:
        slow = ScriptedProvider([Stream(["a", "b", "c"], gap=0.05)], name="slow")
        hung = ScriptedProvider([Hang()], name="hung")
        llm = ReliableProvider([slow])

        async def relay() -> Any:
            async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
                async for c in chunks:
                    yield c.delta

        agen = relay()
        await agen.__anext__()
        del agen  # abandoned mid-stream, never closed by us
        task = asyncio.ensure_future(drain(ReliableProvider([hung], first_chunk_timeout=None)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await drain(ReliableProvider([hung], first_chunk_timeout=None))
        gc.collect()
        await asyncio.sleep(0.01)
        # Before asyncio.run's own clean-up (which would cancel stragglers
        # quietly): nothing of reliant is left running.
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert slow.open_streams == 0 and hung.open_streams == 0

    asyncio.run(main())
    gc.collect()
    errors = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]


@pytest.mark.parametrize("kind", ["openai", "anthropic", "bedrock", "gemini", "responses", "azure"])
async def test_every_provider_fails_over_and_streams_on_both_backends(
    anyio_backend: Any, kind: str
) -> None:
    """Each HTTP provider, on trio and on asyncio: a 500 on it fails over, then it streams."""
    from reliant.providers import AzureOpenAI, Bedrock, Gemini, OpenAIResponses

    async with serve_fake_llm() as server:
        cls, url = {
            "openai": (OpenAICompatible, server.openai_base_url),
            "anthropic": (Anthropic, server.anthropic_base_url),
            "bedrock": (Bedrock, server.bedrock_base_url),
            "gemini": (Gemini, server.gemini_base_url),
            "responses": (OpenAIResponses, server.responses_base_url),
            "azure": (AzureOpenAI, server.azure_base_url),
        }[kind]
        async with (
            cls(name="p", base_url=url, api_key="k") as failing,  # type: ignore[operator]
            cls(name="p", base_url=url, api_key="k") as serving,  # type: ignore[operator]
        ):
            failing_named = ReliableProvider(
                [("down", failing), ("up", serving)],
                max_retries=0,
                model_aliases={"down": {"m": "status:500"}, "up": {"m": "ok:chunks=3"}},
            )
            with fallback_scope():
                assert await drain(failing_named) == ["tok0 ", "tok1 ", "tok2 ", ""]
                info = take_last_provider_fallback()
            assert info is not None and info.actual_provider == "up"
            assert await failing_named.simple_chat("x", "m", 0.0) == "tok0 tok1 tok2 "


def test_the_hot_clock_is_the_loops_own() -> None:
    """Per-item time reads call asyncio's monotonic clock directly, a virtual loop's its own."""
    import time

    import looptime

    from reliant._backend import current

    async def hot_clock() -> Any:
        return current().clock()

    assert asyncio.run(hot_clock()) is time.monotonic
    loop = looptime.new_event_loop()
    try:
        clock = loop.run_until_complete(hot_clock())
        assert clock == loop.time and clock is not time.monotonic
    finally:
        loop.close()
