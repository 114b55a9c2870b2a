"""Provider health: breakers, cooldowns, silent routes and the retry budget, at exact times."""

from __future__ import annotations

import math
import random

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends_support import BACKENDS, run_on
from reliant import (
    ChatMessage,
    FailoverError,
    HealthPolicy,
    LocalHealth,
    Provider,
    ProviderError,
    ReliableProvider,
    fallback_scope,
    take_last_provider_fallback,
)
from reliant._backend import current_time
from reliant._health import Outcome, RetryBudget
from reliant.testing import Fail, Hang, Reply, ScriptedProvider, Stream

pytestmark = pytest.mark.anyio

USER = [ChatMessage.user("hello")]
KEY = ("primary", "m")


class Bottom(random.Random):
    """Jitter pinned to the bottom: every backoff is exactly base / 2."""

    def random(self) -> float:
        return 0.0


def dead(name: str = "primary", status: int = 500) -> ScriptedProvider:
    return ScriptedProvider([Fail(ProviderError("down", status_code=status))], name=name)


def backup() -> ScriptedProvider:
    return ScriptedProvider([Reply("from backup")], name="backup")


def starts(p: ScriptedProvider) -> list[float]:
    return [c.started_at for c in p.calls]


FAILURE = Outcome(ok=False, counts=True, error="boom")
SUCCESS = Outcome(ok=True)


# -- the state machine, directly ------------------------------------------------


async def test_breaker_opens_after_open_after_failures(
    anyio_backend: object,
) -> None:
    """Three consecutive retryable failures open the breaker for open_for seconds."""
    h = LocalHealth(HealthPolicy(open_after=3, open_for=5.0))
    for _ in range(2):
        h.record_nowait(KEY, FAILURE)
    assert h.snapshot()[KEY].state == "closed"
    assert h.admit_nowait(KEY).admission == "allow"
    await anyio.sleep(1.0)
    h.record_nowait(KEY, FAILURE)
    snap = h.snapshot()[KEY]
    assert (snap.state, snap.consecutive_failures, snap.opened_until) == ("open", 3, 6.0)
    assert snap.last_error == "boom"
    decision = h.admit_nowait(KEY)
    assert (decision.admission, decision.reopens_at) == ("skip", 6.0)


async def test_success_resets_the_count() -> None:
    """A success between failures resets the consecutive count: no opening."""
    h = LocalHealth()
    for _ in range(2):
        h.record_nowait(KEY, FAILURE)
    h.record_nowait(KEY, SUCCESS)
    for _ in range(2):
        h.record_nowait(KEY, FAILURE)
    assert h.snapshot()[KEY].state == "closed"
    assert h.snapshot()[KEY].consecutive_failures == 2


async def test_non_retryable_failures_do_not_count() -> None:
    """Errors that say nothing about the route (auth, bad request) never open it."""
    h = LocalHealth()
    for _ in range(10):
        h.record_nowait(KEY, Outcome(ok=False, counts=False, error="401"))
    snap = h.snapshot()[KEY]
    assert (snap.state, snap.consecutive_failures, snap.last_error) == ("closed", 0, "401")


async def test_half_open_admits_exactly_one_probe(anyio_backend: object) -> None:
    """After the open period one admit gets the probe; the rest skip until it reports."""
    h = LocalHealth(HealthPolicy(open_after=1))
    h.record_nowait(KEY, FAILURE)
    await anyio.sleep(5.0)
    assert h.snapshot()[KEY].state == "half_open"
    assert h.admit_nowait(KEY).admission == "probe"
    assert [h.admit_nowait(KEY).admission for _ in range(5)] == ["skip"] * 5
    assert h.snapshot()[KEY].probe_in_flight
    h.record_nowait(KEY, SUCCESS, probe=True)
    snap = h.snapshot()[KEY]
    assert (snap.state, snap.opened_until, snap.probe_in_flight) == ("closed", None, False)
    assert h.admit_nowait(KEY).admission == "allow"


async def open_periods(h: LocalHealth, failure: Outcome) -> list[float]:
    """The open periods of a route whose first failure and five probes fail with ``failure``."""
    h.record_nowait(KEY, failure)
    periods = []
    opened_at = current_time()
    for _ in range(5):
        until = h.snapshot()[KEY].opened_until
        assert until is not None
        periods.append(until - opened_at)
        await anyio.sleep_until(until)
        opened_at = current_time()
        assert h.admit_nowait(KEY).admission == "probe"
        h.record_nowait(KEY, failure, probe=True)
    until = h.snapshot()[KEY].opened_until
    assert until is not None
    periods.append(until - opened_at)
    return periods


async def test_failed_probes_of_a_silent_route_double_up_to_max_open_for(
    anyio_backend: object,
) -> None:
    """A silent route's failed probes re-open for twice as long: 5, 10, 20, 40, 60, 60 s."""
    h = LocalHealth(HealthPolicy(open_after=1, open_for=5.0, max_open_for=60.0))
    silent = Outcome(ok=False, counts=True, silent=True, error="no first chunk")
    assert await open_periods(h, silent) == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]


async def test_failed_probes_of_a_fast_failing_route_double_up_to_max_open_for_fast(
    anyio_backend: object,
) -> None:
    """A route answering errors at once is probed every 10 s at most: 5, 10, 10, 10, 10, 10 s."""
    h = LocalHealth(HealthPolicy(open_after=1, open_for=5.0, max_open_for=60.0))
    assert await open_periods(h, FAILURE) == [5.0, 10.0, 10.0, 10.0, 10.0, 10.0]


def test_fast_cap_stays_between_open_for_and_max_open_for() -> None:
    """max_open_for_fast is raised to open_for and lowered to max_open_for."""
    assert HealthPolicy(open_for=15.0, max_open_for=60.0).fast_cap == 15.0
    assert HealthPolicy(open_for=1.0, max_open_for=4.0).fast_cap == 4.0
    assert HealthPolicy(max_open_for_fast=30.0).fast_cap == 30.0


async def test_success_resets_the_doubling(anyio_backend: object) -> None:
    """A successful probe closes the breaker and the next opening lasts open_for again."""
    h = LocalHealth(HealthPolicy(open_after=1, open_for=5.0))
    h.record_nowait(KEY, FAILURE)
    await anyio.sleep(5.0)
    h.admit_nowait(KEY)
    h.record_nowait(KEY, FAILURE, probe=True)  # re-opened for 10 s, next would be 20
    await anyio.sleep(10.0)
    assert h.admit_nowait(KEY).admission == "probe"
    h.record_nowait(KEY, SUCCESS, probe=True)
    h.record_nowait(KEY, FAILURE)
    assert h.snapshot()[KEY].opened_until == current_time() + 5.0


async def test_retry_after_opens_for_exactly_that_long(
    anyio_backend: object,
) -> None:
    """A Retry-After opens at once for exactly its value, capped at 30 s, with no doubling."""
    h = LocalHealth()
    h.record_nowait(KEY, Outcome(ok=False, counts=True, open_for=7.5))
    snap = h.snapshot()[KEY]
    assert (snap.state, snap.opened_until, snap.open_for) == ("open", 7.5, 5.0)
    h.record_nowait(("other", "m"), Outcome(ok=False, counts=True, open_for=1e12))
    assert h.snapshot()[("other", "m")].opened_until == 30.0


async def test_silent_route_opens_at_once() -> None:
    """A silent failure opens the breaker on the first occurrence."""
    h = LocalHealth()
    h.record_nowait(KEY, Outcome(ok=False, counts=True, silent=True))
    assert h.snapshot()[KEY].state == "open"


async def test_release_frees_the_probe_slot(anyio_backend: object) -> None:
    """Releasing a probe without an outcome lets the next request probe."""
    h = LocalHealth(HealthPolicy(open_after=1))
    h.record_nowait(KEY, FAILURE)
    await anyio.sleep(5.0)
    assert h.admit_nowait(KEY).admission == "probe"
    h.release_nowait(KEY)
    assert h.admit_nowait(KEY).admission == "probe"


async def test_force_bypasses_the_breaker_but_not_the_budget(
    anyio_backend: object,
) -> None:
    """force=True never skips; a forced retry still needs budget."""
    h = LocalHealth(HealthPolicy(open_after=1, min_retries_per_second=0.0, retry_budget=0.0))
    h.record_nowait(KEY, FAILURE)
    assert h.admit_nowait(KEY, force=True).admission == "allow"
    assert h.admit_nowait(KEY, force=True, retry=True).admission == "no_budget"


def test_retry_budget_ratio_floor_and_window() -> None:
    """Retries are allowed up to 20 % of requests or 3/s over 10 s, and the window slides."""
    b = RetryBudget(0.2, 10.0, 3.0)
    for _ in range(500):
        b.note_request(0.0)
    assert sum(b.try_retry(0.5) for _ in range(200)) == 100
    assert not b.try_retry(9.9)
    assert b.try_retry(10.6)  # the bucket of t=0 fell out of the window
    quiet = RetryBudget(0.2, 10.0, 3.0)
    quiet.note_request(0.0)
    assert sum(quiet.try_retry(0.0) for _ in range(50)) == 30  # the floor: 3/s x 10 s


def test_retry_budget_tolerates_a_clock_that_goes_back() -> None:
    """An earlier time counts in the newest bucket; nothing goes negative or raises."""
    b = RetryBudget(0.5, 10.0, 0.0)
    for _ in range(4):
        b.note_request(100.0)
    b.note_request(50.0)
    assert [b.try_retry(40.0) for _ in range(4)] == [True, True, True, False]  # < 2.5


@pytest.mark.parametrize(
    ("field", "value", "exc"),
    [
        ("open_after", 0, ValueError),
        ("open_after", 2.5, TypeError),
        ("open_after", True, TypeError),
        ("open_for", 0, ValueError),
        ("open_for", -1.0, ValueError),
        ("open_for", math.nan, ValueError),
        ("max_open_for", math.inf, ValueError),
        ("retry_budget", -0.1, ValueError),
        ("budget_window", 0.0, ValueError),
        ("min_retries_per_second", "3", TypeError),
        ("silent_after", math.nan, ValueError),
    ],
)
def test_policy_validation_names_the_field(field: str, value: object, exc: type[Exception]) -> None:
    """Bad HealthPolicy values raise a clear error naming the field."""
    with pytest.raises(exc, match=field):
        HealthPolicy(**{field: value})  # type: ignore[arg-type]


def test_policy_rejects_cap_below_base_and_unknown_keys() -> None:
    """max_open_for below open_for, and unknown TOML keys, are refused."""
    with pytest.raises(ValueError, match="max_open_for"):
        HealthPolicy(open_for=10.0, max_open_for=5.0)
    with pytest.raises(ValueError, match="open_aftr"):
        HealthPolicy.from_mapping({"open_aftr": 3})
    assert HealthPolicy.from_mapping({"open_after": 2}).open_after == 2


def test_health_argument_is_type_checked() -> None:
    """ReliableProvider(health=...) takes a policy, a store or None."""
    with pytest.raises(TypeError, match="health"):
        ReliableProvider([("p", backup())], health="on")  # type: ignore[arg-type]


# -- through ReliableProvider --------------------------------------------------


async def test_retry_after_moves_to_the_fallback_at_once(
    anyio_backend: object,
) -> None:
    """A 429 with Retry-After: 30 serves from the fallback at t=0 instead of sleeping 30 s."""
    primary = ScriptedProvider([Fail(ProviderError("busy", status_code=429, retry_after=30))])
    fallback = backup()
    llm = ReliableProvider([("primary", primary), ("backup", fallback)], max_retries=2)
    with fallback_scope():
        assert await llm.simple_chat("x", "m", 0.0) == "from backup"
        info = take_last_provider_fallback()
    assert info is not None and info.actual_provider == "backup"
    assert starts(primary) == [0.0] and starts(fallback) == [0.0]
    assert llm.health()[KEY].opened_until == 30.0
    await anyio.sleep(29.0)
    await llm.simple_chat("x", "m", 0.0)
    assert starts(primary) == [0.0]  # still cooling down: skipped
    await anyio.sleep(1.0)
    await llm.simple_chat("x", "m", 0.0)
    assert starts(primary) == [0.0, 30.0]  # the probe


def busy_then_ok(retry_after: float) -> ScriptedProvider:
    """A primary answering one 429 with this Retry-After, then answering."""
    busy = Fail(ProviderError("busy", status_code=429, retry_after=retry_after))
    return ScriptedProvider([busy, Reply("from primary")], name="primary")


async def test_a_short_retry_after_is_waited_out_on_the_preferred_route(
    anyio_backend: object,
) -> None:
    """A 429 with Retry-After: 2 is waited out: the primary answers at t=2, no backup call."""
    primary, fallback = busy_then_ok(2.0), backup()
    llm = ReliableProvider([("primary", primary), ("backup", fallback)], max_retries=2)
    with fallback_scope():
        assert await llm.simple_chat("x", "m", 0.0) == "from primary"
        info = take_last_provider_fallback()
    assert starts(primary) == [0.0, 2.0] and starts(fallback) == []
    assert info is not None and info.actual_provider == "primary"  # a retry, on the same route
    assert llm.health()[KEY].state == "closed"  # its success closed what the 429 opened


async def test_a_retry_after_longer_than_the_wait_moves_on_at_once(
    anyio_backend: object,
) -> None:
    """Retry-After: 3.5 is above max_retry_after_wait (3 s): the backup serves at t=0."""
    primary, fallback = busy_then_ok(3.5), backup()
    llm = ReliableProvider([("primary", primary), ("backup", fallback)], max_retries=2)
    assert await llm.simple_chat("x", "m", 0.0) == "from backup"
    assert starts(primary) == [0.0] and starts(fallback) == [0.0]


async def test_a_retry_after_past_the_callers_deadline_moves_on_at_once(
    anyio_backend: object,
) -> None:
    """A caller with 1.5 s left does not wait a 2 s Retry-After: the backup serves at t=0."""
    primary, fallback = busy_then_ok(2.0), backup()
    llm = ReliableProvider([("primary", primary), ("backup", fallback)], max_retries=2)
    with anyio.fail_after(1.5):
        assert await llm.simple_chat("x", "m", 0.0) == "from backup"
    assert starts(primary) == [0.0] and starts(fallback) == [0.0]


async def test_a_retry_after_on_a_probe_moves_on_at_once(
    anyio_backend: object,
) -> None:
    """A route already known down (its probe gets the 429) is not waited for."""
    busy = Fail(ProviderError("busy", status_code=429, retry_after=2.0))
    primary = ScriptedProvider([Fail(ProviderError("down", status_code=503))] * 3 + [busy])
    fallback = backup()
    llm = ReliableProvider(
        [("primary", primary), ("backup", fallback)], max_retries=2, base_backoff=1.0, rng=Bottom()
    )
    assert await llm.simple_chat("x", "m", 0.0) == "from backup"  # 3 failures open the breaker
    await anyio.sleep_until(6.5)  # open from 1.5 for 5 s
    assert await llm.simple_chat("x", "m", 0.0) == "from backup"
    assert starts(primary) == [0.0, 0.5, 1.5, 6.5] and starts(fallback) == [1.5, 6.5]


async def test_max_retry_after_wait_zero_always_moves_on(
    anyio_backend: object,
) -> None:
    """HealthPolicy(max_retry_after_wait=0) keeps the move-on-at-once rule for every Retry-After."""
    primary, fallback = busy_then_ok(0.5), backup()
    llm = ReliableProvider(
        [("primary", primary), ("backup", fallback)],
        health=HealthPolicy(max_retry_after_wait=0.0),
    )
    assert await llm.simple_chat("x", "m", 0.0) == "from backup"
    assert starts(primary) == [0.0]


async def test_dead_primary_is_called_at_most_eight_times_in_twenty_requests(
    anyio_backend: object,
) -> None:
    """20 requests 1 s apart call a dead primary 5 times: 3, then one probe per open period."""
    primary, fallback = dead(), backup()
    llm = ReliableProvider(
        [("primary", primary), ("backup", fallback)], max_retries=2, base_backoff=1.0, rng=Bottom()
    )
    for _ in range(20):
        assert await llm.simple_chat("x", "m", 0.0) == "from backup"
        await anyio.sleep(1.0)
    assert starts(primary) == [0.0, 0.5, 1.5, 6.5, 16.5]
    assert len(fallback.calls) == 20
    assert llm.health()[KEY].opened_until == 26.5  # a fast failure: re-opened for 10 s


class DownUntil(Provider):
    """Answers 503 at once until ``until`` (virtual time), then answers; notes each call's time."""

    def __init__(self, until: float) -> None:
        self.until = until
        self.calls: list[float] = []

    async def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> str:
        now = current_time()
        self.calls.append(now)
        if now < self.until:
            raise ProviderError("primary API error (503 Service Unavailable)", status_code=503)
        return "from primary"


async def test_a_recovered_primary_gets_its_traffic_back_within_30_s(
    anyio_backend: object,
) -> None:
    """503 for 60 s, then healthy; 20 requests 4 s apart: the primary serves again from t=68."""
    primary = DownUntil(60.0)
    llm = ReliableProvider(
        [("primary", primary), ("backup", backup())],
        max_retries=2,
        base_backoff=0.5,
        rng=Bottom(),
    )
    served: list[tuple[float, str]] = []
    for i in range(20):
        await anyio.sleep_until(4.0 * i)
        served.append((current_time(), await llm.simple_chat("x", "m", 0.0)))
    back = [t for t, who in served if who == "from primary"]
    assert back == [68.0, 72.0, 76.0]  # probed at 68, 8 s after it recovered
    # The outage: 3 calls, then one probe per open period (5 s, then at most 10 s).
    assert primary.calls[:3] == [0.0, 0.25, 0.75]
    assert primary.calls[3:] == [8.0, 20.0, 32.0, 44.0, 56.0, 68.0, 72.0, 76.0]


async def test_without_health_every_request_pays_every_retry(
    anyio_backend: object,
) -> None:
    """health=None keeps the seed's behaviour: 3 calls to the dead primary per request."""
    primary, fallback = dead(), backup()
    llm = ReliableProvider(
        [("primary", primary), ("backup", fallback)],
        max_retries=2,
        base_backoff=1.0,
        rng=Bottom(),
        health=None,
    )
    for _ in range(5):
        await llm.simple_chat("x", "m", 0.0)
    assert len(primary.calls) == 15
    assert llm.health() == {}


async def test_skip_is_in_the_failure_trail(anyio_backend: object) -> None:
    """A skipped candidate appears in the trail as circuit_open, without a call."""
    primary = dead()
    other = dead("backup", 503)
    llm = ReliableProvider([("primary", primary), ("backup", other)], max_retries=0)
    health = llm.health_store
    assert isinstance(health, LocalHealth)
    health.record_nowait(KEY, Outcome(ok=False, counts=True, open_for=10.0))
    with pytest.raises(FailoverError) as info:
        await llm.simple_chat("x", "m", 0.0)
    reasons = [(a.provider, a.reason) for a in info.value.attempts]
    # primary skipped, backup failed, then primary tried as the last resort
    assert reasons == [
        ("primary", "circuit_open"),
        ("backup", "retryable"),
        ("primary", "retryable"),
    ]
    assert "circuit open; skipped without a call (probe allowed in 10 s)" in str(info.value)
    assert starts(primary) == [0.0]


async def test_every_candidate_open_still_serves_soonest_first(
    anyio_backend: object,
) -> None:
    """With every breaker open the request is still served, starting with the soonest re-open."""
    a = ScriptedProvider([Reply("from a")])
    b = ScriptedProvider([Reply("from b")])
    health = LocalHealth()
    health.record_nowait(("a", "m"), Outcome(ok=False, counts=True, open_for=20.0))
    health.record_nowait(("b", "m"), Outcome(ok=False, counts=True, open_for=5.0))
    llm = ReliableProvider([("a", a), ("b", b)], health=health)
    with fallback_scope():
        assert await llm.simple_chat("x", "m", 0.0) == "from b"
        info = take_last_provider_fallback()
    assert info is not None and info.actual_provider == "b"
    assert (starts(a), starts(b)) == ([], [0.0])
    assert health.snapshot()[("b", "m")].state == "closed"  # its success closed it


async def test_single_provider_keeps_the_seed_behaviour(
    anyio_backend: object,
) -> None:
    """One provider with an open breaker is still called, with its retries and backoff."""
    p = ScriptedProvider([Fail(ProviderError("down", status_code=503))] * 6 + [Reply("ok")])
    llm = ReliableProvider([("primary", p)], max_retries=2, base_backoff=1.0, rng=Bottom())
    with pytest.raises(FailoverError):
        await llm.simple_chat("x", "m", 0.0)
    assert llm.health()[KEY].state == "open"
    with pytest.raises(FailoverError):
        await llm.simple_chat("x", "m", 0.0)
    assert await llm.simple_chat("x", "m", 0.0) == "ok"
    assert starts(p) == [0.0, 0.5, 1.5, 1.5, 2.0, 3.0, 3.0]
    assert llm.health()[KEY].state == "closed"


async def test_hung_primary_stream_fails_over_once_then_is_skipped(
    anyio_backend: object,
) -> None:
    """A hang costs one first-chunk timeout (2 s, no retry); the next request skips it."""
    primary = ScriptedProvider([Hang()], name="primary")
    fallback = ScriptedProvider([Stream(["a", "b"])], name="backup")
    llm = ReliableProvider(
        [("primary", primary), ("backup", fallback)], max_retries=2, first_chunk_timeout=2.0
    )
    for expected_first in (2.0, 2.0):
        async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
            first = await chunks.__anext__()
            assert (first.delta, current_time()) == ("a", expected_first)
            assert [c.delta async for c in chunks] == ["b", ""]
    assert starts(primary) == [0.0]
    assert llm.health()[KEY].state == "open"
    assert "no first chunk within 2 s" in (llm.health()[KEY].last_error or "")


async def test_slow_headers_then_reset_is_a_silent_route(
    anyio_backend: object,
) -> None:
    """A transport error after silent_after seconds of waiting moves on at once and opens."""
    reset = ProviderError("connection reset by peer")
    primary = ScriptedProvider([Fail(reset, delay=6.0)], name="primary")
    llm = ReliableProvider([("primary", primary), ("backup", backup())], max_retries=2)
    assert await llm.simple_chat("x", "m", 0.0) == "from backup"
    assert starts(primary) == [0.0]
    assert current_time() == 6.0
    assert llm.health()[KEY].state == "open"


async def test_thousand_concurrent_requests_send_one_probe(
    anyio_backend: object,
) -> None:
    """1,000 concurrent requests against a half-open route send exactly one probe."""
    primary = ScriptedProvider([Reply("from primary", delay=1.0)], name="primary")
    fallback = backup()
    health = LocalHealth(HealthPolicy(open_after=1))
    health.record_nowait(KEY, FAILURE)
    await anyio.sleep(5.0)
    llm = ReliableProvider([("primary", primary), ("backup", fallback)], health=health)
    answers: list[str] = []

    async def one() -> None:
        answers.append(await llm.simple_chat("x", "m", 0.0))

    async with anyio.create_task_group() as nursery:
        for _ in range(1000):
            nursery.start_soon(one)
    assert len(primary.calls) == 1
    assert answers.count("from primary") == 1 and answers.count("from backup") == 999
    assert health.snapshot()[KEY].state == "closed"


async def test_cancelled_probe_releases_the_slot(anyio_backend: object) -> None:
    """A probe request cancelled mid-call gives the slot back; the next request probes."""
    primary = ScriptedProvider([Hang(), Reply("from primary")], name="primary")
    health = LocalHealth(HealthPolicy(open_after=1))
    health.record_nowait(KEY, FAILURE)
    await anyio.sleep(5.0)
    llm = ReliableProvider([("primary", primary), ("backup", backup())], health=health)
    with anyio.move_on_after(1.0):
        await llm.simple_chat("x", "m", 0.0)
    assert not health.snapshot()[KEY].probe_in_flight
    assert await llm.simple_chat("x", "m", 0.0) == "from primary"
    assert starts(primary) == [5.0, 6.0]


async def test_cancelled_probe_stream_releases_the_slot(
    anyio_backend: object,
) -> None:
    """Leaving a stream whose probe had not answered yet frees the probe slot."""
    primary = ScriptedProvider([Hang(), Stream(["p"])], name="primary")
    health = LocalHealth(HealthPolicy(open_after=1))
    health.record_nowait(KEY, FAILURE)
    await anyio.sleep(5.0)
    llm = ReliableProvider([("primary", primary), ("backup", backup())], health=health)
    with anyio.move_on_after(1.0):
        async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
            await chunks.__anext__()
    assert not health.snapshot()[KEY].probe_in_flight
    async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
        assert [c.delta async for c in chunks] == ["p", ""]
    assert health.snapshot()[KEY].state == "closed"


class Boom(BaseException):
    """Not an Exception: passes through reliant untouched."""


async def test_unexpected_errors_never_leave_a_probe_stuck(
    anyio_backend: object,
) -> None:
    """A probe ending in a stray exception re-opens; one ending in a BaseException releases."""
    health = LocalHealth(HealthPolicy(open_after=1))
    health.record_nowait(KEY, FAILURE)
    await anyio.sleep(5.0)
    primary = ScriptedProvider([Fail(KeyError("surprise"))], name="primary")
    llm = ReliableProvider([("primary", primary), ("backup", backup())], health=health)
    assert await llm.simple_chat("x", "m", 0.0) == "from backup"
    snap = health.snapshot()[KEY]
    assert (snap.state, snap.probe_in_flight) == ("open", False)
    await anyio.sleep(10.0)
    primary2 = ScriptedProvider([Fail(Boom())], name="primary")  # type: ignore[arg-type]
    llm2 = ReliableProvider([("primary", primary2), ("backup", backup())], health=health)
    with pytest.raises(Boom):
        await llm2.simple_chat("x", "m", 0.0)
    assert not health.snapshot()[KEY].probe_in_flight


async def test_flapping_provider_is_neither_hammered_nor_abandoned(
    anyio_backend: object,
) -> None:
    """A provider failing 3 calls then working 3, in a loop, serves every cycle; failures cost 3."""

    def flapping(i: int, model: str) -> Fail | Reply:
        return Fail(ProviderError("flap", status_code=503)) if (i // 3) % 2 == 0 else Reply("p")

    primary = ScriptedProvider(flapping, name="primary")
    llm = ReliableProvider([("primary", primary), ("backup", backup())], max_retries=0)
    served = []
    for _ in range(100):
        served.append(await llm.simple_chat("x", "m", 0.0))
        await anyio.sleep(1.0)
    # Each 10 s cycle: 3 failed calls open the breaker, 5 s later the probe
    # works and the primary serves 3 requests, then fails 3 times again.
    assert served.count("p") == 30
    assert sum(isinstance(c.outcome, Fail) for c in primary.calls) == 30
    assert len(primary.calls) == 60  # 100 requests, 40 of them spared the failing primary


async def test_budget_caps_amplification_under_a_total_outage(
    anyio_backend: object,
) -> None:
    """500 concurrent callers against all-failing upstreams send at most 1.3x the first tries."""

    async def outage(health: LocalHealth | None) -> int:
        a, b = dead("a"), dead("b")
        llm = ReliableProvider([("a", a), ("b", b)], max_retries=2, health=health)

        async def one() -> None:
            with pytest.raises(FailoverError):
                await llm.simple_chat("x", "m", 0.0)

        async with anyio.create_task_group() as nursery:
            for _ in range(500):
                nursery.start_soon(one)
        return len(a.calls) + len(b.calls)

    first_tries = 500 * 2
    assert await outage(None) == 3 * first_tries
    with_health = await outage(LocalHealth())
    assert first_tries <= with_health <= 1.3 * first_tries


async def test_a_dead_route_cannot_spend_another_routes_retries() -> None:
    """Each route has its own retry budget: exhausting one leaves the others' untouched."""
    h = LocalHealth(HealthPolicy(open_after=100, retry_budget=0.0, min_retries_per_second=0.1))
    dead_route, working = ("dead", "m"), ("serving", "m")
    assert h.admit_nowait(dead_route).admission == "allow"
    assert h.admit_nowait(dead_route, retry=True).admission == "allow"  # the floor: 1 per 10 s
    assert h.admit_nowait(dead_route, retry=True).admission == "no_budget"
    assert h.admit_nowait(working).admission == "allow"
    assert h.admit_nowait(working, retry=True).admission == "allow"


def test_idle_retry_budgets_are_dropped_when_there_are_many() -> None:
    """Thousands of routes used once keep memory bounded: budgets idle for a window go."""
    busy = LocalHealth()
    for i in range(3000):
        busy._budget(("p", f"m{i}"), 0.0).note_request(0.0)
    assert len(busy._budgets) == 3000  # all within one window: none may go
    spread = LocalHealth()
    for i in range(3000):
        spread._budget(("p", f"m{i}"), float(i)).note_request(float(i))  # one route a second
    assert len(spread._budgets) <= 1024 + 11  # only the last window's routes survive a prune


async def test_budget_refusal_is_in_the_trail(anyio_backend: object) -> None:
    """A retry the budget refuses goes to the next candidate, and the trail says retry_budget."""
    health = LocalHealth(HealthPolicy(retry_budget=0.0, min_retries_per_second=0.0))
    llm = ReliableProvider([("primary", dead()), ("backup", backup())], health=health)
    with fallback_scope():
        assert await llm.simple_chat("x", "m", 0.0) == "from backup"
    a = dead()
    llm = ReliableProvider([("primary", a)], max_retries=2, health=health)
    with pytest.raises(FailoverError) as info:
        await llm.simple_chat("x", "m", 0.0)
    assert [x.reason for x in info.value.attempts] == ["retryable", "retry_budget"]
    assert "retry budget exhausted" in info.value.attempts[1].error
    assert len(a.calls) == 1


# -- property: the state machine -------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.booleans()),
        st.tuples(st.just("ok"), st.booleans()),
        st.tuples(st.just("fail"), st.booleans()),
        st.tuples(st.just("release"), st.booleans()),
        st.tuples(st.just("sleep"), st.floats(0.0, 100.0)),
    ),
    max_size=60,
)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=200, deadline=None)
@given(ops=ops)
def test_never_two_probes_and_always_closes_after_successes(
    backend: str, ops: list[tuple[str, object]]
) -> None:
    """Random outcome sequences never admit two probes at once, and successes always close."""

    async def run() -> None:
        h = LocalHealth(HealthPolicy(open_after=2, open_for=1.0, max_open_for=8.0))
        holding = 0
        for op, arg in ops:
            if op == "admit":
                d = h.admit_nowait(KEY, force=bool(arg))
                if d.admission == "probe":
                    assert holding == 0, "two probes in flight"
                    holding = 1
            elif op in ("ok", "fail"):
                probe = bool(arg) and holding == 1
                h.record_nowait(KEY, SUCCESS if op == "ok" else FAILURE, probe=probe)
                holding -= probe
            elif op == "release" and holding:
                h.release_nowait(KEY)
                holding = 0
            elif op == "sleep":
                await anyio.sleep(float(arg))  # type: ignore[arg-type]
            snap = h.snapshot().get(KEY)
            if snap is not None:
                assert snap.opened_until is None or snap.opened_until >= 0
                assert 1.0 <= snap.open_for <= 8.0
        # Whatever happened: waiting out the period and one good probe closes it.
        await anyio.sleep(8.0)
        if holding:
            h.release_nowait(KEY)
        if h.admit_nowait(KEY).admission == "probe":
            h.record_nowait(KEY, SUCCESS, probe=True)
        else:
            h.record_nowait(KEY, SUCCESS)
        snap = h.snapshot().get(KEY)
        assert snap is None or (snap.state == "closed" and snap.consecutive_failures == 0)

    run_on(backend, run)
