"""Routing state shared in a real redis-server: one RPM budget and in-flight count each.

Real time (Redis keeps its own clock); the async tests run on trio and on asyncio, the
fleet test is a plain function that starts worker processes (on trio).
"""

from __future__ import annotations

import logging

import anyio
import pytest

from backends_support import BACKENDS
from redis_support import RedisServer, run_workers
from reliant import (
    NoCapacityError,
    RateLimit,
    RedisRouting,
    ReliableProvider,
    Routing,
)
from reliant.testing import Reply, ScriptedProvider, Stream

pytestmark = pytest.mark.anyio


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Each async test on trio and on asyncio, in real time: Redis keeps its own clock."""
    return str(request.param)


def deployments(*names: str) -> list[ScriptedProvider]:
    return [ScriptedProvider([Reply("ok")], name=n) for n in names]


def test_redis_routing_constructor_validates_and_hides_credentials() -> None:
    """A bad URL, prefix or time is refused; repr never shows the password."""
    with pytest.raises(ValueError, match="redis://"):
        RedisRouting("http://localhost")
    with pytest.raises(ValueError, match="prefix"):
        RedisRouting("redis://localhost", prefix="")
    with pytest.raises(ValueError):
        RedisRouting("redis://localhost", timeout=0)
    assert "hunter2" not in repr(RedisRouting("redis://u:hunter2@localhost:6379/0"))


async def test_redis_routing_must_be_entered_before_use() -> None:
    """Using the store outside its async with is a clear error."""
    llm = ReliableProvider(
        deployments("a"),
        rate_limits={"a": RateLimit(rpm=1)},
        routing_store=RedisRouting("redis://localhost:1"),
    )
    with pytest.raises(RuntimeError, match="not open"):
        await llm.simple_chat("hi", "m", 0.0)


async def test_two_providers_in_one_process_share_the_rpm_budget(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Two ReliableProviders on two connections: rpm=3 is three requests between them."""
    limits = {"a": RateLimit(rpm=3)}
    async with (
        RedisRouting(redis_server.url, prefix=redis_prefix, timeout=1.0) as s1,
        RedisRouting(redis_server.url, prefix=redis_prefix, timeout=1.0) as s2,
    ):
        (a1,), (a2,) = deployments("a"), deployments("a")
        first = ReliableProvider(
            [a1], routing=Routing(max_wait=0), rate_limits=limits, routing_store=s1
        )
        second = ReliableProvider(
            [a2], routing=Routing(max_wait=0), rate_limits=limits, routing_store=s2
        )
        for _ in range(2):
            assert await first.simple_chat("hi", "m", 0.0) == "ok"
        assert await second.simple_chat("hi", "m", 0.0) == "ok"
        with pytest.raises(NoCapacityError) as info:
            await second.simple_chat("hi", "m", 0.0)
        assert 59.0 <= info.value.wait <= 61.0
        with pytest.raises(NoCapacityError):
            await first.simple_chat("hi", "m", 0.0)
        assert (len(a1.calls), len(a2.calls)) == (2, 1)
        assert second.deployments()["a"].remaining_requests == 0
        assert s1.shared and s2.shared


async def test_in_flight_counts_are_shared_for_least_busy(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """A stream held open through one store makes another process's least_busy pick the peer."""
    async with (
        RedisRouting(redis_server.url, prefix=redis_prefix, timeout=1.0) as s1,
        RedisRouting(redis_server.url, prefix=redis_prefix, timeout=1.0) as s2,
    ):
        holder = ScriptedProvider([Stream(["x", "y"], gap=100.0)], name="a")  # mid-answer
        hold = ReliableProvider([holder], routing=Routing(), routing_store=s1)
        a, b = deployments("a", "b")
        llm = ReliableProvider(
            [a, b], routing=Routing(tiers=[["a", "b"]], strategy="least_busy"), routing_store=s2
        )
        async with hold.stream_chat_with_system(None, "hi", "m", 0.0) as chunks:
            await chunks.__anext__()
            for _ in range(3):
                await llm.simple_chat("hi", "m", 0.0)  # each refreshes the mirror
            assert llm.deployments()["a"].in_flight == 1
        assert len(b.calls) >= 2
        await llm.simple_chat("hi", "m", 0.0)
        assert llm.deployments()["a"].in_flight == 0


async def test_redis_routing_keys_expire(redis_server: RedisServer, redis_prefix: str) -> None:
    """Every key the store writes has a TTL, so an abandoned deployment leaves nothing behind."""
    import coredis

    async with RedisRouting(redis_server.url, prefix=redis_prefix, timeout=1.0) as shared:
        llm = ReliableProvider(
            deployments("a"), rate_limits={"a": RateLimit(rpm=10)}, routing_store=shared
        )
        await llm.simple_chat("hi", "m", 0.0)
    async with coredis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*")]
        assert keys
        for key in keys:
            assert 0 < await client.pttl(key) <= 600_000


async def test_redis_down_routes_in_process_and_warns_once(
    own_redis_server: RedisServer, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis killed the limits hold per process, one warning is logged, nothing fails."""
    caplog.set_level(logging.WARNING, logger="reliant")
    async with RedisRouting(own_redis_server.url, prefix=redis_prefix, timeout=0.2) as shared:
        (a,) = deployments("a")
        llm = ReliableProvider(
            [a],
            routing=Routing(max_wait=0),
            rate_limits={"a": RateLimit(rpm=2)},
            routing_store=shared,
        )
        own_redis_server.stop()
        assert await llm.simple_chat("hi", "m", 0.0) == "ok"
        assert await llm.simple_chat("hi", "m", 0.0) == "ok"
        with pytest.raises(NoCapacityError):
            await llm.simple_chat("hi", "m", 0.0)
        assert not shared.shared
    warnings = [r for r in caplog.records if "routing store unavailable" in r.getMessage()]
    assert len(warnings) == 1


def test_a_fleet_of_processes_honours_one_rpm_budget_per_deployment(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """4 processes x 10 callers x 5 requests over two deployments at rpm=30: exactly 60 served."""
    reports = run_workers(
        "rpm",
        4,
        {"url": redis_server.url, "prefix": redis_prefix, "rpm": 30, "callers": 10, "requests": 5},
    )
    assert all(r["shared"] for r in reports)
    calls = {name: sum(r["calls"][name] for r in reports) for name in ("a", "b")}
    assert calls == {"a": 30, "b": 30}
    assert sum(r["served"] for r in reports) == 60
    assert sum(r["refused"] for r in reports) == 200 - 60


async def test_learned_limits_are_shared_and_refill(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """A 'nothing left of 600 RPM' told to one process holds the fleet back for 0.1 s, not 60 s."""
    from reliant._routing_state import Learned

    async with (
        RedisRouting(redis_server.url, prefix=redis_prefix, timeout=1.0) as s1,
        RedisRouting(redis_server.url, prefix=redis_prefix, timeout=1.0) as s2,
    ):
        (a1,), (a2,) = deployments("a"), deployments("a")
        first = ReliableProvider([a1], routing=Routing(), routing_store=s1)
        second = ReliableProvider([a2], routing=Routing(max_wait=1.0), routing_store=s2)
        s1.learn("a", anyio.current_time(), Learned(0.0, 60.0, None, None, 600.0, None))
        await first.simple_chat("hi", "m", 0.0)  # carries what was learned; waits its refill
        started = anyio.current_time()
        await second.simple_chat("hi", "m", 0.0)  # the fleet's bucket: one more refill
        assert 0.02 <= anyio.current_time() - started <= 0.5
        assert len(a1.calls) == len(a2.calls) == 1
