"""RedisHealth against a real redis-server: the Lua transitions, sharing across stores and
processes, probes, the shared retry budget, and what happens when Redis dies or stalls.

Redis keeps its own clock, so these tests use real, short durations (never a virtual
clock) with generous margins for a loaded machine. The async ones run on trio and on
asyncio; the fleet tests are plain functions that start worker processes (on trio).
"""

from __future__ import annotations

import json
import logging
import math
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import anyio
import pytest
import trio

pytest.importorskip("coredis")

import coredis

from backends_support import BACKENDS
from redis_support import WORKER, RedisServer, run_workers
from reliant import (
    HealthPolicy,
    ProviderError,
    RedisHealth,
    ReliableProvider,
)
from reliant._health import Outcome
from reliant.testing import Fail, Reply, ScriptedProvider

pytestmark = pytest.mark.anyio

KEY = ("primary", "m")
FAILURE = Outcome(ok=False, counts=True, error="boom")
SUCCESS = Outcome(ok=True)
TOLERANCE = 0.1  # seconds: server clock vs the loop's clock through one round trip, loaded machine


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Each async test on trio and on asyncio, in real time: Redis keeps its own clock."""
    return str(request.param)


def store(url: str, prefix: str, **policy: object) -> RedisHealth:
    return RedisHealth(url, HealthPolicy(**policy), prefix=prefix, timeout=1.0)  # type: ignore[arg-type]


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "reliant"
        and r.levelno == logging.WARNING
        and r.getMessage().startswith("Redis health store unavailable")
    ]


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[coredis.Redis[bytes]]:
    async with coredis.Redis.from_url(redis_server.url) as client:
        yield client


# -- construction and lifetime ----------------------------------------------------------


def test_redis_health_constructor_validates_and_hides_credentials() -> None:
    """Bad URLs and times are refused; repr never shows a password."""
    with pytest.raises(ValueError, match="redis://"):
        RedisHealth("http://localhost")
    with pytest.raises(ValueError, match="timeout"):
        RedisHealth("redis://localhost", timeout=0)
    with pytest.raises(ValueError, match="prefix"):
        RedisHealth("redis://localhost", prefix="")
    health = RedisHealth("redis://user:s3cret@localhost:6379/0")
    assert "s3cret" not in repr(health)
    assert health.timeout == 0.05 and health.prefix == "reliant:" and health.name == "default"


async def test_redis_health_must_be_entered_before_use() -> None:
    """A store used outside `async with` says so instead of failing obscurely."""
    with pytest.raises(RuntimeError, match="async with"):
        await RedisHealth("redis://127.0.0.1:1/0").admit(KEY)


def test_import_reliant_does_not_import_the_redis_client() -> None:
    """`import reliant` loads neither coredis nor the Redis store; RedisHealth loads them."""
    code = (
        "import sys, reliant; before = 'coredis' in sys.modules or "
        "'reliant._redis_health' in sys.modules; reliant.RedisHealth; "
        "print(before, 'coredis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


# -- the Lua transitions, one store --------------------------------------------------------


async def test_redis_breaker_opens_at_threshold_and_skips(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """open_after failures open the route for open_for (loop-clock times); success resets."""
    async with store(redis_server.url, redis_prefix, open_after=3, open_for=5.0) as h:
        await h.record(KEY, FAILURE)
        await h.record(KEY, SUCCESS)
        assert h.snapshot()[KEY].consecutive_failures == 0
        for _ in range(2):
            await h.record(KEY, FAILURE)
        assert (await h.admit(KEY)).admission == "allow"
        assert h.snapshot()[KEY].state == "closed"
        await h.record(KEY, FAILURE)
        snap = h.snapshot()[KEY]
        assert (snap.state, snap.consecutive_failures, snap.last_error) == ("open", 3, "boom")
        assert snap.opened_until is not None
        assert abs(snap.opened_until - (anyio.current_time() + 5.0)) < TOLERANCE
        assert snap.open_for == 10.0  # doubled for the next opening
        decision = await h.admit(KEY)
        assert decision.admission == "skip"
        assert abs(decision.reopens_at - snap.opened_until) < TOLERANCE


async def test_redis_failures_that_do_not_count_never_open(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Non-retryable failures keep the last error but never count toward opening."""
    async with store(redis_server.url, redis_prefix, open_after=1) as h:
        await h.record(KEY, Outcome(ok=False, counts=False, error="bad request"))
        snap = h.snapshot()[KEY]
        assert (snap.state, snap.consecutive_failures, snap.last_error) == (
            "closed",
            0,
            "bad request",
        )


async def test_redis_half_open_probe_is_exclusive_and_released(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """After open_for exactly one admit probes (SET NX); release frees the slot."""
    async with store(redis_server.url, redis_prefix, open_after=1, open_for=0.2) as h:
        await h.record(KEY, FAILURE)
        await anyio.sleep(0.25)
        assert h.snapshot()[KEY].state == "half_open"
        assert (await h.admit(KEY)).admission == "probe"
        assert h.snapshot()[KEY].probe_in_flight
        assert (await h.admit(KEY)).admission == "skip"
        await h.release(KEY)
        assert (await h.admit(KEY)).admission == "probe"
        assert (await h.admit(KEY, force=True)).admission == "allow"  # force bypasses
        await h.record(KEY, SUCCESS, probe=True)
        snap = h.snapshot()[KEY]
        assert (snap.state, snap.open_for, snap.probe_in_flight) == ("closed", 0.2, False)
        assert (await h.admit(KEY)).admission == "allow"


async def test_redis_decision_completes_under_cancellation(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """A cancelled caller still learns a granted probe, so its slot is given back, not lost."""
    async with store(redis_server.url, redis_prefix, open_after=1, open_for=0.05) as h:
        await h.record(KEY, FAILURE)
        await anyio.sleep(0.1)
        with anyio.CancelScope() as scope:
            scope.cancel()
            decision = await h.admit(KEY)
        assert decision.admission == "probe"
        await h.release(KEY)
        assert not h.snapshot()[KEY].probe_in_flight
        assert (await h.admit(KEY)).admission == "probe"


async def test_redis_failed_probes_double_the_open_period_up_to_the_cap(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Each failed probe re-opens for the doubled period, capped at max_open_for."""
    async with store(
        redis_server.url, redis_prefix, open_after=1, open_for=0.1, max_open_for=0.25
    ) as h:
        await h.record(KEY, FAILURE)
        periods = []
        for _ in range(3):
            snap = h.snapshot()[KEY]
            assert snap.opened_until is not None
            periods.append(snap.open_for)
            await anyio.sleep(max(snap.opened_until - anyio.current_time(), 0) + 0.02)
            assert (await h.admit(KEY)).admission == "probe"
            before = anyio.current_time()
            await h.record(KEY, FAILURE, probe=True)
            reopened = h.snapshot()[KEY].opened_until
            assert reopened is not None
            assert abs(reopened - before - periods[-1]) < TOLERANCE
        assert periods == [0.2, 0.25, 0.25]


async def test_redis_retry_after_and_silent_routes_open_at_once(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """A Retry-After opens for exactly that long (capped at 30 s, no doubling); silence at once."""
    async with store(redis_server.url, redis_prefix, open_after=5, open_for=1.0) as h:
        await h.record(KEY, Outcome(ok=False, counts=True, open_for=0.5))
        snap = h.snapshot()[KEY]
        assert snap.opened_until is not None and snap.state == "open"
        assert abs(snap.opened_until - anyio.current_time() - 0.5) < TOLERANCE
        assert snap.open_for == 1.0
        other = ("other", "m")
        await h.record(other, Outcome(ok=False, counts=True, open_for=600))
        until = h.snapshot()[other].opened_until
        assert until is not None and abs(until - anyio.current_time() - 30) < TOLERANCE
        silent = ("silent", "m")
        await h.record(silent, Outcome(ok=False, counts=True, silent=True))
        assert h.snapshot()[silent].state == "open"


async def test_redis_retry_budget_window(redis_server: RedisServer, redis_prefix: str) -> None:
    """Retries are allowed up to the ratio of the window's requests; old counts fall off."""
    async with store(
        redis_server.url,
        redis_prefix,
        retry_budget=0.5,
        budget_window=0.5,
        min_retries_per_second=0,
    ) as h:
        for _ in range(4):
            assert (await h.admit(KEY, new_request=True)).admission == "allow"
        answers = [(await h.admit(KEY, retry=True)).admission for _ in range(3)]
        assert answers == ["allow", "allow", "no_budget"]
        await anyio.sleep(0.6)  # the whole window passed: nothing counted any more
        assert (await h.admit(KEY, retry=True)).admission == "no_budget"
        await h.admit(KEY, new_request=True)
        await h.admit(KEY, new_request=True)
        assert (await h.admit(KEY, retry=True)).admission == "allow"
    async with RedisHealth(
        redis_server.url,
        HealthPolicy(budget_window=0.5, min_retries_per_second=4),
        prefix=redis_prefix,
        name="floor",
    ) as h:
        answers = [(await h.admit(KEY, retry=True)).admission for _ in range(3)]
        assert answers == ["allow", "allow", "no_budget"]  # the floor: 4/s x 0.5 s


async def test_redis_a_dead_route_cannot_spend_another_routes_retries(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Each route keeps its own budget in Redis, as in LocalHealth."""
    async with store(
        redis_server.url, redis_prefix, open_after=100, retry_budget=0.0, min_retries_per_second=1
    ) as h:
        dead, working = ("dead", "m"), ("serving", "m")
        assert (await h.admit(dead)).admission == "allow"
        answers = [(await h.admit(dead, retry=True)).admission for _ in range(11)]
        assert answers == ["allow"] * 10 + ["no_budget"]  # the floor: 1/s x 10 s
        assert (await h.admit(working)).admission == "allow"
        assert (await h.admit(working, retry=True)).admission == "allow"


async def test_redis_fast_failures_reopen_up_to_max_open_for_fast(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """A route failing fast re-opens for at most max_open_for_fast; a silent one doubles on."""
    async with store(
        redis_server.url,
        redis_prefix,
        open_after=1,
        open_for=0.1,
        max_open_for=10.0,
        max_open_for_fast=0.15,
    ) as h:
        fast, silent = ("fast", "m"), ("silent", "m")
        silently = Outcome(ok=False, counts=True, silent=True, error="no first chunk")
        await h.record(fast, FAILURE)
        await h.record(silent, silently)
        assert (h.snapshot()[fast].open_for, h.snapshot()[silent].open_for) == (0.15, 0.2)
        await anyio.sleep(0.25)
        assert (await h.admit(fast)).admission == "probe"
        assert (await h.admit(silent)).admission == "probe"
        await h.record(fast, FAILURE, probe=True)
        await h.record(silent, silently, probe=True)
        assert (h.snapshot()[fast].open_for, h.snapshot()[silent].open_for) == (0.15, 0.4)


async def test_redis_every_key_has_a_ttl(
    redis_server: RedisServer, redis_prefix: str, raw: coredis.Redis[bytes]
) -> None:
    """Route, probe and budget keys all expire: an abandoned deployment leaves nothing."""
    async with store(
        redis_server.url, redis_prefix, open_after=1, open_for=0.05, max_open_for=1.0
    ) as h:
        await h.admit(KEY, new_request=True)
        await h.record(KEY, FAILURE)
        await anyio.sleep(0.1)
        assert (await h.admit(KEY)).admission == "probe"
        await h.record(("other", "m"), Outcome(ok=False, counts=False, error="x"))
    keys = [k async for k in raw.scan_iter(match=f"{redis_prefix}*")]
    kinds = sorted(k.decode().removeprefix(redis_prefix).split(":")[0] for k in keys)
    assert kinds == ["budget", "probe", "route", "route"]
    for k in keys:
        ttl = await raw.pttl(k)
        assert 0 < ttl <= 601_000 + 1_000, (k, ttl)


# -- sharing -----------------------------------------------------------------------------


async def test_redis_two_reliable_providers_share_a_breaker(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """One provider opens the breaker; another, on its own connection, skips the dead primary."""
    policy = {"open_after": 3, "open_for": 5.0}
    dead = ScriptedProvider([Fail(ProviderError("down", status_code=500))], name="primary")
    backup = ScriptedProvider([Reply("ok")], name="backup")
    async with (
        store(redis_server.url, redis_prefix, **policy) as h1,
        store(redis_server.url, redis_prefix, **policy) as h2,
    ):
        first = ReliableProvider([("primary", dead), ("backup", backup)], max_retries=0, health=h1)
        second = ReliableProvider([("primary", dead), ("backup", backup)], max_retries=0, health=h2)
        for _ in range(3):
            assert await first.simple_chat("hi", "m", 0.0) == "ok"
        assert len(dead.calls) == 3
        assert await second.simple_chat("hi", "m", 0.0) == "ok"
        assert len(dead.calls) == 3  # skipped without a call
        assert second.health()[KEY].state == "open"


async def test_redis_health_shares_a_breaker_on_both_backends(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """RedisHealth works the same from trio and asyncio: a breaker opened by one is skipped."""
    policy = {"open_after": 2, "open_for": 5.0}
    dead = ScriptedProvider([Fail(ProviderError("down", status_code=500))], name="primary")
    backup = ScriptedProvider([Reply("ok")], name="backup")
    async with (
        store(redis_server.url, redis_prefix, **policy) as h1,
        store(redis_server.url, redis_prefix, **policy) as h2,
    ):
        first = ReliableProvider([dead, backup], max_retries=0, health=h1)
        second = ReliableProvider([dead, backup], max_retries=0, health=h2)
        for _ in range(2):
            assert await first.simple_chat("hi", "m", 0.0) == "ok"
        assert await second.simple_chat("hi", "m", 0.0) == "ok"
        assert len(dead.calls) == 2
        assert h2.shared and second.health()[KEY].state == "open"


def test_redis_fleet_calls_a_dead_primary_threshold_plus_one_probe_per_period(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Four processes hammering a dead primary: the threshold, then one probe per period."""
    open_after, open_for, processes, callers = 3, 0.3, 4, 2
    reports = run_workers(
        "hammer",
        processes,
        {
            "url": redis_server.url,
            "prefix": redis_prefix,
            "duration": 1.5,
            "callers": callers,
            "policy": {"open_after": open_after, "open_for": open_for, "max_open_for": open_for},
        },
    )
    assert [r["outages"] for r in reports] == [0] * processes
    assert all(r["served"] > 10 for r in reports)
    calls = sorted(r["wall0"] + t for r in reports for t in r["calls"])
    span = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    # Requests already admitted when the breaker opened may still fail
    # (at most one per caller), then one probe per open period, fleet-wide.
    in_flight = processes * callers - 1
    allowed = open_after + in_flight + math.ceil(span / open_for) + 1
    assert open_after < len(calls) <= allowed, (len(calls), allowed)
    # Per process this would be at least open_after + one probe per period each.
    assert len(calls) < processes * (open_after + math.floor(1.5 / open_for))


def test_redis_exactly_one_probe_across_processes(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Forty concurrent admits from four processes on a half-open route: one probe."""

    async def open_it() -> None:
        async with store(redis_server.url, redis_prefix, open_after=1, open_for=0.3) as h:
            await h.record(KEY, FAILURE)

    trio.run(open_it)
    opened = time.monotonic()
    procs = 4
    # The workers start (about a second) after the open period ended.
    reports = run_workers(
        "admit", procs, {"url": redis_server.url, "prefix": redis_prefix, "admits": 10}
    )
    assert time.monotonic() - opened > 0.3
    admissions = [a for r in reports for a in r["admissions"]]
    assert sorted(set(admissions)) == ["probe", "skip"]
    assert admissions.count("probe") == 1 and len(admissions) == 40


def test_redis_probe_holder_killed_frees_the_slot_at_expiry(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """A probe holder killed with SIGKILL blocks probes only until the slot expires."""
    probe_ttl = 1.0

    async def open_it() -> None:
        async with store(redis_server.url, redis_prefix, open_after=1, open_for=0.1) as h:
            await h.record(KEY, FAILURE)

    trio.run(open_it)
    time.sleep(0.15)
    params = {"url": redis_server.url, "prefix": redis_prefix, "probe_ttl": probe_ttl}
    with subprocess.Popen(
        [sys.executable, str(WORKER), "hold", json.dumps(params)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdin is not None
            assert holder.stdout.readline().strip() == "ready"
            holder.stdin.write("go\n")
            holder.stdin.flush()
            taken = json.loads(holder.stdout.readline())
            assert taken["admission"] == "probe"
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()

    async def probe_after_kill() -> tuple[str, float, float]:
        async with store(redis_server.url, redis_prefix, open_after=1, open_for=0.1) as h:
            asked_at = time.time()
            first = (await h.admit(KEY)).admission
            with trio.fail_after(5):
                while True:
                    if (await h.admit(KEY)).admission == "probe":
                        break
                    await trio.sleep(0.02)
            return first, asked_at, time.time()

    first, asked_at, probed_at = trio.run(probe_after_kill)
    if asked_at - taken["at"] < probe_ttl - 0.1:  # asked while the dead holder's slot lived
        assert first == "skip"
    waited = probed_at - taken["at"]
    assert probe_ttl - 0.05 <= waited <= probe_ttl + 1.0, waited


def test_redis_retry_budget_is_shared_by_the_fleet(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """4 processes x 100 callers on a failing upstream: at most 1.3x the first tries in total."""
    processes, callers = 4, 100
    policy = {"open_after": 10_000, "retry_budget": 0.2, "min_retries_per_second": 3.0}
    reports = run_workers(
        "budget",
        processes,
        {"url": redis_server.url, "prefix": redis_prefix, "callers": callers, "policy": policy},
    )
    assert [r["outages"] for r in reports] == [0] * processes
    first_tries = sum(r["requests"] for r in reports)
    calls = sum(r["calls"] for r in reports)
    assert sum(r["failed"] for r in reports) == first_tries
    assert calls <= 1.3 * first_tries
    # One budget per route for the fleet: 20 % of 400 requests (the floor is
    # 30 once, not once per process, which would allow 4 x 30 = 120).
    assert calls - first_tries <= max(0.2 * first_tries, 30)


# -- Redis down or slow ------------------------------------------------------------------


async def test_redis_killed_mid_run_falls_back_warns_once_and_resyncs(
    own_redis_server: RedisServer, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Requests keep succeeding without Redis, one warning, shared again after a restart."""
    caplog.set_level(logging.INFO, logger="reliant")
    url = own_redis_server.url
    primary = ScriptedProvider([Reply("primary")], name="primary")
    backup = ScriptedProvider([Reply("backup")], name="backup")
    async with RedisHealth(url, prefix=redis_prefix, reconnect_interval=0.5) as health:
        llm = ReliableProvider([("primary", primary), ("backup", backup)], health=health)
        for _ in range(5):
            assert await llm.simple_chat("hi", "m", 0.0) == "primary"
        assert health.shared
        own_redis_server.stop()
        slowest = 0.0
        end = anyio.current_time() + 1.3  # spans two reconnect attempts at least
        while anyio.current_time() < end:
            start = anyio.current_time()
            assert await llm.simple_chat("hi", "m", 0.0) == "primary"
            slowest = max(slowest, anyio.current_time() - start)
            await anyio.sleep(0.01)
        assert not health.shared
        assert slowest < 0.5
        assert len(outage_warnings(caplog)) == 1
        own_redis_server.start()
        with anyio.fail_after(5):
            while not health.shared:
                assert await llm.simple_chat("hi", "m", 0.0) == "primary"
                await anyio.sleep(0.05)
        assert len(outage_warnings(caplog)) == 1
        # Shared again: another store opens the breaker, this one skips primary.
        async with store(url, redis_prefix, open_after=1) as other:
            await other.record(KEY, FAILURE)
        calls = len(primary.calls)
        assert await llm.simple_chat("hi", "m", 0.0) == "backup"
        assert len(primary.calls) == calls


async def test_redis_answering_slowly_times_out_the_decision(
    redis_server: RedisServer, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A stalled Redis costs one decision its timeout; the request goes on, later ones at once."""
    caplog.set_level(logging.WARNING, logger="reliant")
    primary = ScriptedProvider([Reply("ok")], name="primary")
    async with RedisHealth(
        redis_server.url, prefix=redis_prefix, timeout=0.05, connect_timeout=5.0
    ) as health:
        llm = ReliableProvider([("primary", primary)], health=health)
        assert await llm.simple_chat("hi", "m", 0.0) == "ok"
        assert health.shared
        async with anyio.create_task_group() as tg:
            stalled = anyio.Event()

            async def stall() -> None:
                stream = await anyio.connect_tcp("127.0.0.1", redis_server.port)
                async with stream:
                    await stream.send(b"DEBUG SLEEP 0.8\r\n")
                    stalled.set()
                    await stream.receive(64)

            tg.start_soon(stall)
            await stalled.wait()
            await anyio.sleep(0.05)  # the server is now asleep
            start = anyio.current_time()
            assert await llm.simple_chat("hi", "m", 0.0) == "ok"
            first = anyio.current_time() - start
            start = anyio.current_time()
            assert await llm.simple_chat("hi", "m", 0.0) == "ok"
            second = anyio.current_time() - start
        assert 0.045 <= first < 0.4, first
        assert second < 0.04, second
        assert not health.shared
        assert len(outage_warnings(caplog)) == 1
