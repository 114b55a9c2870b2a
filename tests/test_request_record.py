"""The request record: every request inside fallback_scope() leaves one, with timed attempts."""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest

from reliant import (
    ChatMessage,
    FailoverError,
    Hedge,
    ProviderError,
    ReliableProvider,
    RequestRecord,
    TokenUsage,
    fallback_scope,
    take_last_provider_fallback,
    take_last_request_record,
)
from reliant.testing import Fail, Hang, Reply, ScriptedProvider, Stream

pytestmark = pytest.mark.anyio

USER = [ChatMessage.user("hi")]


class Bottom(random.Random):
    """Jitter pinned to the bottom: every backoff is exactly base / 2."""

    def random(self) -> float:
        return 0.0


def chain(*providers: ScriptedProvider, **kw: object) -> ReliableProvider:
    kw.setdefault("max_retries", 0)
    return ReliableProvider(
        [(p.name, p) for p in providers],
        rng=Bottom(),
        **kw,  # type: ignore[arg-type]
    )


def timeline(record: RequestRecord) -> list[tuple[str, int, str, float | None, float | None]]:
    return [(a.provider, a.attempt, a.reason, a.started_at, a.ended_at) for a in record.attempts]


def err500(delay: float = 0.25) -> Fail:
    return Fail(ProviderError("down", status_code=500), delay=delay)


async def test_primary_served_at_once_has_a_record(anyio_backend: object) -> None:
    """No fallback info when the primary served at once, but a record with its timed attempt."""
    llm = chain(ScriptedProvider([Reply("ok", delay=0.5)], name="p"))
    with fallback_scope():
        assert await llm.simple_chat("hi", "m", 0.0) == "ok"
        assert take_last_provider_fallback() is None
        record = take_last_request_record()
        assert take_last_request_record() is None  # taking clears it
    assert record is not None
    assert (record.outcome, record.actual_provider, record.actual_model) == ("success", "p", "m")
    assert timeline(record) == [("p", 1, "success", 0.0, 0.5)]
    assert (record.started_at, record.ended_at, record.duration, record.stream) == (
        0.0,
        0.5,
        0.5,
        False,
    )
    assert record.summary() == "served by p (m) in 500 ms"


async def test_retry_then_fallback_timeline(anyio_backend: object) -> None:
    """Two failures on p (backoff 0.25), then b serves: every attempt with its start and end."""
    p = ScriptedProvider([err500()], name="p")
    b = ScriptedProvider([Reply("b", delay=0.5)], name="b")
    llm = chain(p, b, max_retries=1)
    with fallback_scope():
        await llm.simple_chat("hi", "m", 0.0)
        record = take_last_request_record()
        info = take_last_provider_fallback()
    assert record is not None and info is not None
    assert timeline(record) == [
        ("p", 1, "retryable", 0.0, 0.25),
        ("p", 2, "retryable", 0.5, 0.75),
        ("b", 1, "success", 0.75, 1.25),
    ]
    assert record.attempts[:-1] == info.attempts  # the same trail, plus the one that served
    assert record.summary() == "served by b (m) in 1250 ms after p (m) failed twice (1 retry)"
    assert (record.requested_provider, record.requested_model) == ("p", "m")


async def test_failure_is_recorded(anyio_backend: object) -> None:
    """A request that failed everywhere still leaves its record, read after the exception."""
    llm = chain(ScriptedProvider([err500()], name="p"), ScriptedProvider([err500(0.5)], name="b"))
    with fallback_scope():
        with pytest.raises(FailoverError):
            await llm.simple_chat("hi", "m", 0.0)
        record = take_last_request_record()
    assert record is not None
    assert (record.outcome, record.actual_provider, record.error_type) == (
        "failure",
        None,
        "FailoverError",
    )
    assert timeline(record) == [
        ("p", 1, "retryable", 0.0, 0.25),
        ("b", 1, "retryable", 0.25, 0.75),
    ]
    assert record.error is not None and "All providers/models failed" in record.error
    assert record.summary().startswith("failure after 750 ms: All providers/models failed")


async def test_cancelled_call_records_the_attempt_in_flight(
    anyio_backend: object,
) -> None:
    """Cancelled at 3 s while the attempt hangs: outcome cancelled, the attempt cancelled at 3 s."""
    llm = chain(ScriptedProvider([Hang()], name="p"))
    with fallback_scope():
        with anyio.move_on_after(3.0):
            await llm.simple_chat("hi", "m", 0.0)
        record = take_last_request_record()
    assert record is not None
    assert (record.outcome, record.error_type, record.actual_provider) == (
        "cancelled",
        "cancelled",
        None,
    )
    assert timeline(record) == [("p", 1, "cancelled", 0.0, 3.0)]


async def test_stream_record_has_ttfc_usage_and_end(anyio_backend: object) -> None:
    """A stream: time to first chunk, the usage of its final chunk, ended when upstream ended."""
    usage = TokenUsage(input_tokens=3, output_tokens=5)
    p = ScriptedProvider([Fail(ProviderError("x", status_code=503), delay=0.5)], name="p")
    b = ScriptedProvider([Reply("hello", delay=0.25, usage=usage)], name="b")
    llm = chain(p, b)
    with fallback_scope():
        async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
            assert [c.delta async for c in chunks] == ["hello", ""]
        record = take_last_request_record()
    assert record is not None
    assert (record.stream, record.time_to_first_chunk, record.usage, record.outcome) == (
        True,
        0.75,
        usage,
        "success",
    )
    assert timeline(record) == [
        ("p", 1, "retryable", 0.0, 0.5),
        ("b", 1, "success", 0.5, 0.75),
    ]


async def test_stream_left_early_is_cancelled(anyio_backend: object) -> None:
    """Leaving a committed stream at 2 s: the serving attempt ends "cancelled" at 2 s."""
    p = ScriptedProvider([Stream(["a", "b", "c"], first_delay=1.0, gap=5.0)], name="p")
    llm = chain(p)
    with fallback_scope():
        async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
            await chunks.__anext__()
            await anyio.sleep(1.0)
        record = take_last_request_record()
    assert record is not None
    assert (record.outcome, record.actual_provider, record.time_to_first_chunk) == (
        "cancelled",
        "p",
        1.0,
    )
    assert timeline(record) == [("p", 1, "cancelled", 0.0, 2.0)]


async def test_context_truncation_shows_as_an_attempt(
    anyio_backend: object,
) -> None:
    """A context overflow halves the history: that attempt is "context_truncated" in the record."""
    overflow = RuntimeError("request exceeds the available context size (8968 tokens)")
    p = ScriptedProvider([Fail(overflow, delay=0.25), Reply("ok", delay=0.25)], name="p")
    history = [ChatMessage.user("a"), ChatMessage.assistant("b"), ChatMessage.user("c")]
    llm = chain(p, max_retries=1)
    with fallback_scope():
        assert await llm.chat_with_history(history, "m", 0.0) == "ok"
        record = take_last_request_record()
    assert record is not None
    assert timeline(record) == [
        ("p", 1, "context_truncated", 0.0, 0.25),
        ("p", 2, "success", 0.25, 0.5),
    ]


async def test_hedge_loser_and_winner_in_the_record(anyio_backend: object) -> None:
    """A hedged stream: the loser is hedge_lost at 1.25, the winner served."""
    p = ScriptedProvider([Stream(["p"], first_delay=3.0)], name="p")
    b = ScriptedProvider([Stream(["b"], first_delay=0.25)], name="b")
    llm = chain(p, b, hedge=Hedge(after=1.0))
    with fallback_scope():
        async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
            assert [c.delta async for c in chunks] == ["b", ""]
        record = take_last_request_record()
    assert record is not None
    assert timeline(record) == [
        ("p", 1, "hedge_lost", 0.0, 1.25),
        ("b", 1, "success", 1.0, 1.25),
    ]
    assert record.summary() == "served by b (m) in 1250 ms after p (m) lost the hedge race"


async def test_recovered_stream_record(anyio_backend: object) -> None:
    """mid_stream="restart": the broken attempt (timed) and the recovery, then the new server."""
    p = ScriptedProvider([Stream.broken(["a"], first_delay=0.25)], name="p")
    b = ScriptedProvider([Stream(["c"], first_delay=0.25)], name="b")
    llm = chain(p, b, mid_stream="restart")
    with fallback_scope():
        async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
            assert [c.delta async for c in chunks] == ["a", "c", ""]
        record = take_last_request_record()
    assert record is not None
    assert timeline(record) == [
        ("p", 1, "stream_broken", 0.0, 0.25),
        ("b", 1, "success", 0.25, 0.5),
    ]
    (recovery,) = record.recoveries
    assert (recovery.provider, recovery.to_provider, recovery.mode) == ("p", "b", "restart")
    assert record.time_to_first_chunk == 0.25


async def test_no_record_outside_a_scope() -> None:
    """Outside fallback_scope() nothing is recorded and taking returns None."""
    llm = chain(ScriptedProvider([Reply("ok")], name="p"))
    await llm.simple_chat("hi", "m", 0.0)
    assert take_last_request_record() is None


async def test_concurrent_scopes_keep_their_own_records() -> None:
    """Two tasks, each in its own scope, each read their own request's record."""
    records: dict[str, RequestRecord | None] = {}

    async def one(name: str, llm: ReliableProvider) -> None:
        with fallback_scope():
            await llm.simple_chat("hi", "m", 0.0)
            records[name] = take_last_request_record()

    async with anyio.create_task_group() as nursery:
        for name in ("x", "y"):
            nursery.start_soon(one, name, chain(ScriptedProvider([Reply(name)], name=name)))
    assert {k: v.actual_provider for k, v in records.items() if v is not None} == {
        "x": "x",
        "y": "y",
    }


async def test_summary_tells_the_skipped_breaker(anyio_backend: object) -> None:
    """A request served after skipping an open breaker says so; it is not just 'served by b'."""
    p = ScriptedProvider([Fail(ProviderError("busy", status_code=429, retry_after=3))], name="p")
    b = ScriptedProvider([Reply("b", delay=0.002)], name="b")
    llm = chain(p, b)
    with fallback_scope():
        await llm.simple_chat("hi", "m", 0.0)
        first = take_last_request_record()
        await llm.simple_chat("hi", "m", 0.0)
        second = take_last_request_record()
    assert first is not None and second is not None
    assert first.summary() == "served by b (m) in 2 ms after p (m) failed"
    assert second.summary() == "served by b (m) in 2 ms after skipping p (m: circuit open)"


async def test_attempt_times_relative_to_the_request(
    anyio_backend: object,
) -> None:
    """Attempts tell started_after/ended_after (seconds since the request began), not raw clock."""
    await anyio.sleep(100.0)  # the raw clock is far from zero, the relative times are not
    p = ScriptedProvider([err500()], name="p")
    b = ScriptedProvider([Reply("b", delay=0.5)], name="b")
    llm = chain(p, b)
    with fallback_scope():
        await llm.simple_chat("hi", "m", 0.0)
        record = take_last_request_record()
        info = take_last_provider_fallback()
    assert record is not None and info is not None
    assert [(a.started_after, a.ended_after, a.duration) for a in record.attempts] == [
        (0.0, 0.25, 0.25),
        (0.25, 0.75, 0.5),
    ]
    assert record.attempts[0].started_at == 100.0
    (before,) = info.attempts  # the fallback info's trail: the attempt that served is not in it
    assert (before.started_after, before.ended_after) == (0.0, 0.25)


async def test_served_names_are_deprecated_aliases(anyio_backend: object) -> None:
    """RequestRecord.actual_provider/actual_model, as in ProviderFallbackInfo; served_* warn."""
    p = ScriptedProvider([err500()], name="p")
    b = ScriptedProvider([Reply("b")], name="b")
    llm = chain(p, b, model_aliases={"b": {"m": "b-model"}})
    with fallback_scope():
        await llm.simple_chat("hi", "m", 0.0)
        record = take_last_request_record()
        info = take_last_provider_fallback()
    assert record is not None and info is not None
    assert (record.actual_provider, record.actual_model) == ("b", "b-model")
    assert (info.actual_provider, info.actual_model) == ("b", "b-model")
    with pytest.warns(DeprecationWarning, match="use actual_provider"):
        assert record.served_provider == "b"
    with pytest.warns(DeprecationWarning, match="use actual_model"):
        assert record.served_model == "b-model"
