"""Hedged requests: the next candidate starts when the current one is slow; first answer wins."""

from __future__ import annotations

import math
import random

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reliant import (
    ChatMessage,
    FailoverError,
    HealthPolicy,
    Hedge,
    LocalHealth,
    ProviderError,
    ReliableProvider,
    StreamError,
    fallback_scope,
    take_last_provider_fallback,
)
from reliant._backend import current_time
from reliant._health import Outcome
from reliant._hedge import P95_MIN_SAMPLES, Hedger
from reliant.testing import Fail, Reply, ScriptedProvider, Stream

pytestmark = pytest.mark.anyio

USER = [ChatMessage.user("hi")]


def slow(name: str, ttft: float, chunks: tuple[str, ...] = ("a", "b")) -> ScriptedProvider:
    return ScriptedProvider([Stream(list(chunks), first_delay=ttft)], name=name)


def hedged(*providers: ScriptedProvider, **kw: object) -> ReliableProvider:
    hedge = kw.pop("hedge", Hedge(after=1.0))
    return ReliableProvider(
        [(p.name, p) for p in providers],
        max_retries=0,
        hedge=hedge,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


async def first_chunk(llm: ReliableProvider) -> tuple[str, float, list[str]]:
    async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
        first = await chunks.__anext__()
        at = current_time()
        rest = [c.delta async for c in chunks]
    return first.delta, at, rest


async def test_slow_primary_is_hedged_and_the_fallback_wins(
    anyio_backend: object,
) -> None:
    """Primary TTFT 3 s, fallback 0.2 s, after=1: first chunk at 1.2 s; primary closed at 1.2 s."""
    primary = slow("primary", 3.0, ("p",))
    fallback = slow("backup", 0.2, ("f", "g"))
    llm = hedged(primary, fallback)
    with fallback_scope():
        delta, at, rest = await first_chunk(llm)
        info = take_last_provider_fallback()
    assert (delta, at, rest) == ("f", 1.2, ["g", ""])
    (p_call,) = primary.calls
    assert p_call.cancelled and p_call.finished_at == 1.2
    assert fallback.calls[0].started_at == 1.0
    assert info is not None and info.actual_provider == "backup"
    (lost,) = info.attempts
    assert (lost.provider, lost.reason, lost.started_at, lost.ended_at) == (
        "primary",
        "hedge_lost",
        0.0,
        1.2,
    )
    assert "backup (model m) answered first" in lost.error


async def test_fast_primary_sends_no_hedge(anyio_backend: object) -> None:
    """Primary TTFT 0.5 s with after=1: no second request at all, no fallback info."""
    primary, fallback = slow("primary", 0.5), slow("backup", 0.1)
    llm = hedged(primary, fallback)
    with fallback_scope():
        assert await first_chunk(llm) == ("a", 0.5, ["b", ""])
        assert take_last_provider_fallback() is None
    assert fallback.calls == []


async def test_both_slow_the_earlier_first_chunk_wins(
    anyio_backend: object,
) -> None:
    """Primary answers at 2.5 s, the hedge (started at 1 s) at 3 s: primary wins, hedge closed."""
    primary, fallback = slow("primary", 2.5), slow("backup", 2.0)
    llm = hedged(primary, fallback)
    with fallback_scope():
        assert await first_chunk(llm) == ("a", 2.5, ["b", ""])
        info = take_last_provider_fallback()
    (b_call,) = fallback.calls
    assert (b_call.started_at, b_call.finished_at, b_call.cancelled) == (1.0, 2.5, True)
    assert info is not None and info.actual_provider == "primary"
    assert [a.reason for a in info.attempts] == ["hedge_lost"]


async def test_winner_breaking_mid_stream_is_an_error_not_a_switch(
    anyio_backend: object,
) -> None:
    """After the winner's first chunk there is no replay from the loser: a break is an error."""
    primary = ScriptedProvider(
        [Stream(["p1", "p2"], first_delay=0.1, gap=1.0, error=StreamError("cut"))], name="primary"
    )
    fallback = slow("backup", 0.5)
    llm = hedged(primary, fallback, hedge=Hedge(after=0.05))
    got: list[str] = []
    with pytest.raises(StreamError, match="cut"):
        async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
            async for c in chunks:
                got.append(c.delta)
    assert got == ["p1", "p2"]
    (b_call,) = fallback.calls
    assert b_call.cancelled and b_call.finished_at == pytest.approx(0.1)


async def test_caller_cancelling_during_the_race_closes_every_upstream(
    anyio_backend: object,
) -> None:
    """Leaving the stream at 1.5 s while both race: both upstreams closed at 1.5 s."""
    primary, fallback = slow("primary", 10.0), slow("backup", 10.0)
    llm = hedged(primary, fallback)
    with anyio.move_on_after(1.5):
        async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
            await chunks.__anext__()
    for p in (primary, fallback):
        (call,) = p.calls
        assert call.cancelled and call.finished_at == 1.5
        assert p.open_streams == 0


async def test_a_racer_failing_does_not_end_the_race(
    anyio_backend: object,
) -> None:
    """The primary fails at 1.5 s while the hedge runs; the hedge answers at 2 s."""
    primary = ScriptedProvider([Fail(ProviderError("boom", status_code=500), delay=1.5)])
    fallback = slow("backup", 1.0)
    llm = hedged(primary, fallback)
    with fallback_scope():
        assert await first_chunk(llm) == ("a", 2.0, ["b", ""])
        info = take_last_provider_fallback()
    assert info is not None
    assert [(a.provider, a.reason) for a in info.attempts] == [("scripted", "retryable")]


async def test_all_racers_failing_continue_with_the_rest_of_the_plan(
    anyio_backend: object,
) -> None:
    """Both racers fail; the third candidate is tried next by the usual failover."""
    a = ScriptedProvider([Fail(ProviderError("a down", status_code=500), delay=2.0)], name="a")
    b = ScriptedProvider([Fail(ProviderError("b down", status_code=500), delay=0.5)], name="b")
    c = slow("c", 0.1)
    llm = hedged(a, b, c)
    assert await first_chunk(llm) == ("a", 2.1, ["b", ""])
    assert c.calls[0].started_at == 2.0
    with pytest.raises(FailoverError) as info:
        await first_chunk(hedged(a, b))
    assert sorted(x.provider for x in info.value.attempts) == ["a", "b"]


async def test_non_streaming_calls_hedge_on_the_whole_response(
    anyio_backend: object,
) -> None:
    """chat: the hedge's whole response at 1.3 s beats a primary answering at 5 s."""
    primary = ScriptedProvider([Reply("slow", delay=5.0)], name="primary")
    fallback = ScriptedProvider([Reply("fast", delay=0.3)], name="backup")
    llm = hedged(primary, fallback)
    assert await llm.chat_with_history(USER, "m", 0.0) == "fast"
    assert current_time() == 1.3
    assert primary.calls[0].cancelled and primary.calls[0].finished_at == 1.3


async def test_budget_exhausted_means_no_hedge_and_the_trail_says_why(
    anyio_backend: object,
) -> None:
    """With the hedge budget spent, a slow primary is waited for; the trail says hedge_budget."""
    primary, fallback = slow("primary", 2.0), slow("backup", 0.1)
    llm = hedged(primary, fallback, hedge=Hedge(after=1.0, budget=0.0, min_hedges_per_second=0))
    with fallback_scope():
        assert await first_chunk(llm) == ("a", 2.0, ["b", ""])
        info = take_last_provider_fallback()
    assert fallback.calls == []
    assert info is not None
    (refused,) = info.attempts
    assert refused.reason == "hedge_budget" and "hedge budget exhausted" in refused.error


async def test_budget_allows_about_ten_percent(anyio_backend: object) -> None:
    """200 concurrent slow requests: 10 % of them, 20, are hedged; the rest wait."""
    primary = ScriptedProvider([Stream(["a"], first_delay=2.0)], name="primary")
    fallback = ScriptedProvider([Stream(["b"], first_delay=5.0)], name="backup")
    llm = hedged(primary, fallback)

    async def one() -> None:
        await first_chunk(llm)

    async with anyio.create_task_group() as nursery:
        for _ in range(200):
            nursery.start_soon(one)
    assert len(primary.calls) == 200 and len(fallback.calls) == 20


async def test_low_traffic_is_hedged_every_time(anyio_backend: object) -> None:
    """One request every 5 s with the default Hedge: each one is hedged, none refused by budget."""
    primary = ScriptedProvider([Stream(["p"], first_delay=3.0)], name="primary")
    backup = ScriptedProvider([Stream(["b"], first_delay=0.2)], name="backup")
    llm = hedged(primary, backup, hedge=Hedge(after=1.0))
    served: list[tuple[str, float]] = []
    for i in range(6):
        await anyio.sleep_until(5.0 * i)
        with fallback_scope():
            delta, at, _ = await first_chunk(llm)
            info = take_last_provider_fallback()
        assert info is not None
        assert [a.reason for a in info.attempts] == ["hedge_lost"]
        served.append((delta, at))
    assert served == [("b", 5.0 * i + 1.2) for i in range(6)]
    assert [c.started_at for c in backup.calls] == [5.0 * i + 1.0 for i in range(6)]


async def test_hedge_budget_floor_is_per_window(anyio_backend: object) -> None:
    """Floor 0.5/s over 10 s: 5 hedges for 3 requests, the 6th refused, 5 more once they age out."""
    hedger = Hedger(Hedge(after=1.0, budget=0.1, window=10.0, min_hedges_per_second=0.5))
    for _ in range(3):
        hedger.note_request()
    assert [hedger.try_hedge() for _ in range(6)] == [True] * 5 + [False]
    await anyio.sleep(10.0)
    assert [hedger.try_hedge() for _ in range(6)] == [True] * 5 + [False]


async def test_an_open_breaker_is_never_hedged_to(anyio_backend: object) -> None:
    """The next candidate's breaker is open: it is skipped, the one after it is the hedge."""
    primary, dead, third = slow("primary", 3.0), slow("dead", 0.1), slow("third", 0.1)
    health = LocalHealth(HealthPolicy())
    health.record_nowait(("dead", "m"), Outcome(ok=False, counts=True, open_for=30.0))
    llm = hedged(primary, dead, third, health=health)
    assert await first_chunk(llm) == ("a", 1.1, ["b", ""])
    assert dead.calls == [] and third.calls[0].started_at == 1.0


async def test_max_extra_two_starts_a_second_hedge(anyio_backend: object) -> None:
    """max_extra=2: hedges at 1 s and 2 s; the third candidate (0.1 s) wins at 2.1 s."""
    a, b, c = slow("a", 9.0), slow("b", 9.0), slow("c", 0.1)
    llm = hedged(a, b, c, hedge=Hedge(after=1.0, max_extra=2, budget=2.0))
    assert await first_chunk(llm) == ("a", 2.1, ["b", ""])
    assert [p.calls[0].started_at for p in (a, b, c)] == [0.0, 1.0, 2.0]
    assert a.calls[0].cancelled and b.calls[0].cancelled


def test_hedge_validation() -> None:
    """Bad Hedge values raise errors naming the field; hedge= takes a Hedge or None."""
    for kw, exc in (
        ({"after": 0}, ValueError),
        ({"after": "p99"}, TypeError),
        ({"after": math.nan}, ValueError),
        ({"max_extra": 0}, ValueError),
        ({"max_extra": 1.5}, TypeError),
        ({"budget": 2.0}, ValueError),
        ({"budget": -0.1}, ValueError),
        ({"min_after": -1.0}, ValueError),
        ({"min_hedges_per_second": -1.0}, ValueError),
    ):
        field = next(iter(kw))
        with pytest.raises(exc, match=field):
            Hedge(**kw)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="hedge"):
        ReliableProvider([("p", slow("p", 0.0))], hedge=1.0)  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(0.05, 5.0),
)
def test_p95_converges_on_the_observed_distribution(seed: int, scale: float) -> None:
    """ "p95" uses initial_after until 20 samples, then the observed 95th percentile."""
    rng = random.Random(seed)
    hedger = Hedger(Hedge(after="p95", initial_after=1.0, min_after=0.01))
    key = ("p", "m")
    samples = [rng.expovariate(1.0 / scale) for _ in range(400)]
    for i, x in enumerate(samples):
        if i < P95_MIN_SAMPLES - 1:
            assert hedger.delay_for(key) == 1.0
        hedger.observe(key, x)
    window = sorted(samples[-256:])
    lo, hi = window[int(0.93 * 256)], window[min(int(0.97 * 256), 255)]
    assert max(lo, 0.01) <= hedger.delay_for(key) <= max(hi, 0.01)
