"""Typed events: exact order and times for each scenario, hooks that raise or are async."""

from __future__ import annotations

import logging
import random
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from reliant import (
    AttemptFailed,
    AttemptSkipped,
    AttemptStarted,
    ChatMessage,
    CircuitOpened,
    FailoverError,
    FallbackTaken,
    HealthPolicy,
    Hedge,
    HedgeStarted,
    LocalHealth,
    ProviderError,
    ReliableProvider,
    ReliantEvent,
    RequestFinished,
    RequestStarted,
    RetryScheduled,
    StreamError,
    StreamFinished,
    StreamRecovered,
    StreamStarted,
    TokenUsage,
)
from reliant._backend import current_time
from reliant.testing import Fail, Hang, Reply, ScriptedProvider, Stream

pytestmark = pytest.mark.anyio

USER = [ChatMessage.user("hi")]


class Bottom(random.Random):
    """Jitter pinned to the bottom: every backoff is exactly base / 2."""

    def random(self) -> float:
        return 0.0


def err500(text: str = "down") -> Fail:
    return Fail(ProviderError(text, status_code=500), delay=0.25)


def steps(events: list[ReliantEvent]) -> list[tuple[str, str, int, float]]:
    """Each event as (class name, provider, attempt, time)."""
    return [(type(e).__name__, e.provider, e.attempt, e.at) for e in events]


def llm_with(
    *providers: ScriptedProvider, events: list[ReliantEvent], **kw: Any
) -> ReliableProvider:
    kw.setdefault("max_retries", 0)
    return ReliableProvider(
        [(p.name, p) for p in providers], on_event=events.append, rng=Bottom(), **kw
    )


async def test_retry_events_in_order_at_exact_times(anyio_backend: object) -> None:
    """Two 500s then success: failed/retry pairs with the backoffs 0.5 and 1.0, then success."""
    events: list[ReliantEvent] = []
    primary = ScriptedProvider([err500(), err500(), Reply("ok", delay=0.25)], name="primary")
    llm = llm_with(primary, events=events, max_retries=2, base_backoff=1.0)
    assert await llm.simple_chat("hi", "m", 0.0) == "ok"
    assert steps(events) == [
        ("RequestStarted", "primary", 0, 0.0),
        ("AttemptStarted", "primary", 1, 0.0),
        ("AttemptFailed", "primary", 1, 0.25),
        ("RetryScheduled", "primary", 1, 0.25),
        ("AttemptStarted", "primary", 2, 0.75),
        ("AttemptFailed", "primary", 2, 1.0),
        ("RetryScheduled", "primary", 2, 1.0),
        ("AttemptStarted", "primary", 3, 2.0),
        ("AttemptSucceeded", "primary", 3, 2.25),
        ("RequestFinished", "primary", 3, 2.25),
    ]
    failed = events[2]
    assert isinstance(failed, AttemptFailed)
    assert (failed.reason, failed.status, failed.error_kind, failed.started_at) == (
        "retryable",
        500,
        "500",
        0.0,
    )
    assert "down" in failed.error
    assert [e.delay for e in events if isinstance(e, RetryScheduled)] == [0.5, 1.0]
    done = events[-1]
    assert isinstance(done, RequestFinished)
    assert (done.outcome, done.duration, done.attempts, done.served, done.error_type) == (
        "success",
        2.25,
        3,
        True,
        None,
    )
    assert len({e.request_id for e in events}) == 1


async def test_fallback_event_names_from_to_and_why(anyio_backend: object) -> None:
    """A 401 moves on at once: FallbackTaken(p -> b, non_retryable) before the attempt."""
    events: list[ReliantEvent] = []
    primary = ScriptedProvider([Fail(ProviderError("no", status_code=401), delay=0.5)], name="p")
    backup = ScriptedProvider([Reply("b", delay=0.25)], name="b")
    llm = llm_with(primary, backup, events=events, max_retries=2)
    assert await llm.simple_chat("hi", "m", 0.0) == "b"
    assert steps(events) == [
        ("RequestStarted", "p", 0, 0.0),
        ("AttemptStarted", "p", 1, 0.0),
        ("AttemptFailed", "p", 1, 0.5),
        ("FallbackTaken", "b", 1, 0.5),
        ("AttemptStarted", "b", 1, 0.5),
        ("AttemptSucceeded", "b", 1, 0.75),
        ("RequestFinished", "b", 1, 0.75),
    ]
    fallback = events[3]
    assert isinstance(fallback, FallbackTaken)
    assert (fallback.from_provider, fallback.to_provider, fallback.reason) == (
        "p",
        "b",
        "non_retryable",
    )


async def test_model_fallback_is_a_fallback_too(anyio_backend: object) -> None:
    """After "big" failed on the only provider, "small" is a FallbackTaken to another model."""
    events: list[ReliantEvent] = []
    p = ScriptedProvider({"big": [err500()], "small": [Reply("s")]}, name="p")
    llm = llm_with(p, events=events, model_fallbacks={"big": ["small"]})
    assert await llm.simple_chat("hi", "big", 0.0) == "s"
    (fallback,) = [e for e in events if isinstance(e, FallbackTaken)]
    assert (fallback.from_model, fallback.to_model, fallback.at) == ("big", "small", 0.25)


async def test_circuit_opened_and_closed_events(anyio_backend: object) -> None:
    """open_after=1: the first failure opens (reopens 5 s later); the probe at 5 s closes it."""
    events: list[ReliantEvent] = []
    primary = ScriptedProvider([err500(), Reply("p")], name="p")
    backup = ScriptedProvider([Reply("b")], name="b")
    health = LocalHealth(HealthPolicy(open_after=1, open_for=5.0))
    llm = llm_with(primary, backup, events=events, health=health)
    assert await llm.simple_chat("hi", "m", 0.0) == "b"
    assert steps(events) == [
        ("RequestStarted", "p", 0, 0.0),
        ("AttemptStarted", "p", 1, 0.0),
        ("AttemptFailed", "p", 1, 0.25),
        ("CircuitOpened", "p", 1, 0.25),
        ("FallbackTaken", "b", 1, 0.25),
        ("AttemptStarted", "b", 1, 0.25),
        ("AttemptSucceeded", "b", 1, 0.25),
        ("RequestFinished", "b", 1, 0.25),
    ]
    opened = events[3]
    assert isinstance(opened, CircuitOpened)
    assert (opened.reopens_at, opened.open_for, opened.failures) == (5.25, 5.0, 1)
    events.clear()
    await anyio.sleep(1.0)  # t = 1.25: still open, skipped without a call
    assert await llm.simple_chat("hi", "m", 0.0) == "b"
    assert steps(events)[1:4] == [
        ("AttemptSkipped", "p", 1, 1.25),
        ("FallbackTaken", "b", 1, 1.25),
        ("AttemptStarted", "b", 1, 1.25),
    ]
    skipped = events[1]
    assert isinstance(skipped, AttemptSkipped) and skipped.reason == "circuit_open"
    events.clear()
    await anyio.sleep_until(5.25)
    assert await llm.simple_chat("hi", "m", 0.0) == "p"
    assert steps(events) == [
        ("RequestStarted", "p", 0, 5.25),
        ("AttemptStarted", "p", 1, 5.25),
        ("AttemptSucceeded", "p", 1, 5.25),
        ("CircuitClosed", "p", 1, 5.25),
        ("RequestFinished", "p", 1, 5.25),
    ]
    started = events[1]
    assert isinstance(started, AttemptStarted) and started.probe


async def test_hedge_events(anyio_backend: object) -> None:
    """Primary silent for 3 s, after=1: hedge at 1.0, backup's chunk at 1.2, primary lost at 1.2."""
    events: list[ReliantEvent] = []
    primary = ScriptedProvider([Stream(["p"], first_delay=3.0)], name="p")
    backup = ScriptedProvider([Stream(["f", "g"], first_delay=0.25)], name="b")
    llm = llm_with(primary, backup, events=events, hedge=Hedge(after=1.0))
    async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
        assert [c.delta async for c in chunks] == ["f", "g", ""]
    assert steps(events) == [
        ("RequestStarted", "p", 0, 0.0),
        ("AttemptStarted", "p", 1, 0.0),
        ("HedgeStarted", "b", 1, 1.0),
        ("AttemptStarted", "b", 1, 1.0),
        ("HedgeLost", "p", 1, 1.25),
        ("AttemptSucceeded", "b", 1, 1.25),
        ("StreamStarted", "b", 1, 1.25),
        ("StreamFinished", "b", 1, 1.25),
        ("RequestFinished", "b", 1, 1.25),
    ]
    hedge = events[2]
    assert isinstance(hedge, HedgeStarted)
    assert (hedge.hedged_provider, hedge.after) == ("p", 1.0)
    assert isinstance(events[3], AttemptStarted) and events[3].hedge
    first = events[6]
    assert isinstance(first, StreamStarted) and first.time_to_first_chunk == 1.25
    finished = events[7]
    assert isinstance(finished, StreamFinished)
    assert (finished.chunks, finished.finish_reason, finished.duration) == (3, "stop", 1.25)


async def test_stream_recovery_events(anyio_backend: object) -> None:
    """A stream cut after 2 chunks, mid_stream="restart": stream_broken, fallback, recovered."""
    events: list[ReliantEvent] = []
    primary = ScriptedProvider(
        [Stream.broken(["a", "b"], first_delay=0.25, gap=0.25, message="cut")], name="p"
    )
    backup = ScriptedProvider([Stream(["c"], first_delay=0.5)], name="b")
    llm = llm_with(primary, backup, events=events, mid_stream="restart")
    async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
        assert [c.delta async for c in chunks] == ["a", "b", "c", ""]
    assert steps(events) == [
        ("RequestStarted", "p", 0, 0.0),
        ("AttemptStarted", "p", 1, 0.0),
        ("AttemptSucceeded", "p", 1, 0.25),
        ("StreamStarted", "p", 1, 0.25),
        ("AttemptFailed", "p", 1, 0.5),
        ("FallbackTaken", "b", 1, 0.5),
        ("AttemptStarted", "b", 1, 0.5),
        ("AttemptSucceeded", "b", 1, 1.0),
        ("StreamRecovered", "b", 1, 1.0),
        ("StreamFinished", "b", 1, 1.0),
        ("RequestFinished", "b", 1, 1.0),
    ]
    broke = events[4]
    assert isinstance(broke, AttemptFailed) and broke.reason == "stream_broken"
    recovered = events[8]
    assert isinstance(recovered, StreamRecovered)
    assert (recovered.from_provider, recovered.after_chars, recovered.mode) == ("p", 2, "restart")
    assert isinstance(events[5], FallbackTaken) and events[5].reason == "stream_broken"


async def test_all_failed_request_finished_failure(anyio_backend: object) -> None:
    """Every candidate failed: RequestFinished says failure, FailoverError, no route served."""
    events: list[ReliantEvent] = []
    llm = llm_with(ScriptedProvider([err500()], name="p"), events=events, health=None)
    with pytest.raises(FailoverError):
        await llm.simple_chat("hi", "m", 0.0)
    done = events[-1]
    assert isinstance(done, RequestFinished)
    assert (done.outcome, done.error_type, done.served, done.provider, done.at) == (
        "failure",
        "FailoverError",
        False,
        "p",
        0.25,
    )
    assert done.error is not None and done.error.startswith("All providers/models failed")


async def test_cancelled_stream_still_finishes(anyio_backend: object) -> None:
    """Leaving the stream at 1.5 s mid-way: RequestFinished(cancelled) at 1.5, no StreamFinished."""
    events: list[ReliantEvent] = []
    p = ScriptedProvider([Stream(["a", "b", "c"], first_delay=0.5, gap=1.0)], name="p")
    llm = llm_with(p, events=events)
    async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
        await chunks.__anext__()
        await anyio.sleep(1.0)
    assert steps(events)[-1] == ("RequestFinished", "p", 1, 1.5)
    done = events[-1]
    assert isinstance(done, RequestFinished)
    assert (done.outcome, done.error_type, done.served, done.time_to_first_chunk) == (
        "cancelled",
        "cancelled",
        True,
        0.5,
    )
    assert not any(isinstance(e, StreamFinished) for e in events)


async def test_cancelled_call_finishes_cancelled(anyio_backend: object) -> None:
    """A non-streaming call cancelled at 2 s while its attempt hangs: RequestFinished(cancelled)."""
    events: list[ReliantEvent] = []
    llm = llm_with(ScriptedProvider([Hang()], name="p"), events=events)
    with anyio.move_on_after(2.0):
        await llm.simple_chat("hi", "m", 0.0)
    assert steps(events) == [
        ("RequestStarted", "p", 0, 0.0),
        ("AttemptStarted", "p", 1, 0.0),
        ("RequestFinished", "p", 1, 2.0),
    ]
    assert isinstance(events[-1], RequestFinished) and events[-1].outcome == "cancelled"


async def test_stream_usage_and_chunks(anyio_backend: object) -> None:
    """StreamFinished and RequestFinished carry the usage the final chunk reported."""
    events: list[ReliantEvent] = []
    usage = TokenUsage(input_tokens=12, output_tokens=34)
    llm = llm_with(ScriptedProvider([Reply("hello", usage=usage)], name="p"), events=events)
    async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
        assert [c.delta async for c in chunks] == ["hello", ""]
    finished = [e for e in events if isinstance(e, StreamFinished | RequestFinished)]
    assert [(type(e).__name__, e.usage) for e in finished] == [
        ("StreamFinished", usage),
        ("RequestFinished", usage),
    ]


async def test_unrecovered_break_is_a_stream_error(anyio_backend: object) -> None:
    """mid_stream="error": the break is AttemptFailed(stream_broken), the request a StreamError."""
    events: list[ReliantEvent] = []
    p = ScriptedProvider([Stream.broken(["a"], gap=0.5, first_delay=0.25)], name="p")
    llm = llm_with(p, events=events)
    with pytest.raises(StreamError):
        async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
            async for _ in chunks:
                pass
    assert [type(e).__name__ for e in events][-2:] == ["AttemptFailed", "RequestFinished"]
    done = events[-1]
    assert isinstance(done, RequestFinished)
    assert (done.outcome, done.error_type, done.served) == ("failure", "StreamError", True)


# -- hooks ----------------------------------------------------------------------------------


async def test_raising_hook_is_logged_once_and_changes_nothing(
    caplog: pytest.LogCaptureFixture, anyio_backend: object
) -> None:
    """A hook that raises on every event: answers unchanged, one warning, key-free."""
    seen: list[ReliantEvent] = []

    def bad(event: ReliantEvent) -> None:
        raise RuntimeError("listener broke, token sk-live1234567890abcdef")

    p = ScriptedProvider([err500(), Reply("ok")], name="p")
    llm = ReliableProvider([("p", p)], max_retries=1, rng=Bottom(), on_event=bad)
    llm.add_listener(seen.append)  # a later listener still gets every event
    with caplog.at_level(logging.WARNING, logger="reliant"):
        assert await llm.simple_chat("hi", "m", 0.0) == "ok"
        assert await llm.simple_chat("hi", "m", 0.0) == "ok"
    warnings = [r for r in caplog.records if "listener raised" in r.getMessage()]
    assert len(warnings) == 1
    assert "sk-live" not in warnings[0].__dict__["error"]
    assert "[REDACTED]" in warnings[0].__dict__["error"]
    assert current_time() == 0.25 + 0.25  # backoff base 0.5 -> 0.25: nothing delayed
    assert sum(isinstance(e, RequestFinished) for e in seen) == 2


def test_async_hooks_are_rejected() -> None:
    """An async function, an object with async __call__ or a non-callable is a TypeError."""
    p = ScriptedProvider([Reply("ok")])

    async def hook(event: ReliantEvent) -> None:
        pass

    class AsyncCall:
        async def __call__(self, event: ReliantEvent) -> None:
            pass

    for bad in (hook, AsyncCall()):
        with pytest.raises(TypeError, match="synchronous"):
            ReliableProvider([("p", p)], on_event=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="synchronous"):
            ReliableProvider([("p", p)]).add_listener(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        ReliableProvider([("p", p)], on_event="print")  # type: ignore[arg-type]


async def test_listeners_added_and_removed() -> None:
    """add_listener/remove_listener change who hears the next request; copies keep listeners."""
    first: list[ReliantEvent] = []
    second: list[ReliantEvent] = []
    llm = ReliableProvider([("p", ScriptedProvider([Reply("ok")]))], on_event=first.append)
    llm.add_listener(second.append)
    assert llm.listeners == (first.append, second.append)
    await llm.simple_chat("hi", "m", 0.0)
    llm.remove_listener(first.append)
    llm.remove_listener(first.append)  # not listening: no error
    await llm.simple_chat("hi", "m", 0.0)
    assert (len(first), len(second)) == (4, 8)
    assert llm.with_model_fallbacks({}).listeners == (second.append,)


async def test_no_listener_no_scope_builds_nothing() -> None:
    """Without listeners and outside fallback_scope() a run has no observer: no event is built."""
    llm = ReliableProvider([("p", ScriptedProvider([Reply("ok")]))])
    run = llm._planner.attempts(model="m", messages=None)
    assert run.obs is None
    events: list[ReliantEvent] = []
    llm.add_listener(events.append)
    assert llm._planner.attempts(model="m", messages=None).obs is not None
    llm.remove_listener(events.append)
    assert llm._planner.emit is None


@pytest.mark.parametrize("anyio_backend", ["trio", "asyncio"])  # real time: Redis keeps its own
async def test_redis_health_reports_circuit_transitions(
    anyio_backend: str, redis_server: Any, redis_prefix: str
) -> None:
    """With RedisHealth the breaker's open and close come as events too (real, short times)."""
    pytest.importorskip("coredis")
    from reliant import CircuitClosed, RedisHealth

    events: list[ReliantEvent] = []
    policy = HealthPolicy(open_after=1, open_for=0.2)
    async with RedisHealth(redis_server.url, policy, prefix=redis_prefix, timeout=1.0) as health:
        primary = ScriptedProvider([Fail(ProviderError("down", status_code=500)), Reply("p")])
        backup = ScriptedProvider([Reply("b")])
        llm = ReliableProvider(
            [("p", primary), ("b", backup)], max_retries=0, health=health, on_event=events.append
        )
        assert await llm.simple_chat("hi", "m", 0.0) == "b"
        names = [type(e).__name__ for e in events]
        assert names.index("AttemptFailed") < names.index("CircuitOpened")
        assert names.index("CircuitOpened") < names.index("FallbackTaken")
        (opened,) = [e for e in events if isinstance(e, CircuitOpened)]
        assert (opened.provider, opened.failures) == ("p", 1)
        assert abs(opened.open_for - 0.2) < 0.1
        await anyio.sleep(0.25)
        events.clear()
        assert await llm.simple_chat("hi", "m", 0.0) == "p"
        assert [type(e).__name__ for e in events][-2:] == ["CircuitClosed", "RequestFinished"]
        assert isinstance(events[-2], CircuitClosed)


async def test_each_field_means_one_thing(anyio_backend: object) -> None:
    """`model` is the id sent in every event; error_type is a class name, error_kind the kind."""
    events: list[ReliantEvent] = []
    primary = ScriptedProvider([err500()], name="primary")
    backup = ScriptedProvider([err500()], name="backup")
    aliases = {"primary": {"smart": "gpt-4o"}, "backup": {"smart": "claude"}}
    llm = llm_with(primary, backup, events=events, model_aliases=aliases)
    with pytest.raises(FailoverError):
        await llm.simple_chat("hi", "smart", 0.0)
    started, failed, done = events[0], events[2], events[-1]
    assert isinstance(started, RequestStarted)
    assert (started.provider, started.model, started.requested_model) == (
        "primary",
        "gpt-4o",
        "smart",
    )
    assert [e.model for e in events if not isinstance(e, RequestStarted | RequestFinished)] == [
        "gpt-4o",
        "gpt-4o",
        "claude",
        "claude",
        "claude",
    ]
    assert isinstance(failed, AttemptFailed) and failed.error_kind == "500"
    assert isinstance(done, RequestFinished) and done.error_type == "FailoverError"
    with pytest.warns(DeprecationWarning, match="use error_kind"):
        assert failed.error_type == "500"
