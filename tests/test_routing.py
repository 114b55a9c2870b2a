"""Routing across deployments: strategies, affinity, rate limits, and their interplay."""

from __future__ import annotations

import random
from collections.abc import Sequence

import anyio
import pytest

from reliant import (
    ChatMessage,
    DeploymentView,
    FailoverError,
    HealthPolicy,
    Hedge,
    NoCapacityError,
    ProviderError,
    RateLimit,
    ReliableProvider,
    Routing,
    affinity_key,
    fallback_scope,
    take_last_provider_fallback,
)
from reliant._backend import current_time
from reliant._routing import order, prefix_key
from reliant.testing import Fail, Reply, ScriptedProvider, Stream

pytestmark = pytest.mark.anyio

USER = [ChatMessage.user("hi")]


def deployment(name: str, delay: float = 0.0) -> ScriptedProvider:
    return ScriptedProvider([Stream(["a", "b"], first_delay=delay)], name=name)


def routed(*providers: ScriptedProvider, seed: int = 1, **kw: object) -> ReliableProvider:
    return ReliableProvider(
        [(p.name, p) for p in providers],
        max_retries=0,
        rng=random.Random(seed),
        **kw,  # type: ignore[arg-type]
    )


async def stream_once(llm: ReliableProvider, messages: Sequence[ChatMessage] = USER) -> str:
    async with llm.stream_chat_with_history(messages, "m", 0.0) as chunks:
        return "".join([c.delta async for c in chunks])


async def call_once(llm: ReliableProvider, text: str = "hi") -> str:
    return await llm.chat_with_system(None, text, "m", 0.0)


def calls(*providers: ScriptedProvider) -> dict[str, int]:
    return {p.name: len(p.calls) for p in providers}


async def run_concurrently(callers: int, per_caller: int, request: object) -> None:
    async def caller() -> None:
        for _ in range(per_caller):
            await request()  # type: ignore[operator]

    async with anyio.create_task_group() as tg:
        for _ in range(callers):
            tg.start_soon(caller)


# -- the default is the plain chain --------------------------------------------------


async def test_default_routing_is_the_plain_chain(anyio_backend: object) -> None:
    """Routing() puts each provider in a tier of its own: the primary serves every request."""
    a, b = deployment("a"), deployment("b")
    llm = routed(a, b, routing=Routing())
    for _ in range(5):
        assert await stream_once(llm) == "ab"
    assert calls(a, b) == {"a": 5, "b": 0}


async def test_priority_tier_fails_over_in_order_then_to_the_next_tier(
    anyio_backend: object,
) -> None:
    """Priority keeps the given order within a tier, then the next tier serves."""
    a = ScriptedProvider([Fail(ProviderError("down", status_code=500))], name="a")
    b = ScriptedProvider([Fail(ProviderError("down", status_code=500))], name="b")
    c = ScriptedProvider([Reply("from c")], name="c")
    llm = routed(a, b, c, routing=Routing(tiers=[["a", "b"], ["c"]]), health=None)
    assert await call_once(llm) == "from c"
    assert [p.calls[0].started_at for p in (a, b, c)] == [0.0, 0.0, 0.0]
    assert calls(a, b, c) == {"a": 1, "b": 1, "c": 1}


async def test_a_provider_left_out_of_every_tier_gets_no_request(anyio_backend: object) -> None:
    """Only the providers named in the tiers are routed to."""
    a = ScriptedProvider([Fail(ProviderError("down", status_code=500))], name="a")
    b = deployment("b")
    llm = routed(a, b, routing=Routing(tiers=[["a"]]), health=None)
    with pytest.raises(FailoverError):
        await call_once(llm)
    assert calls(a, b) == {"a": 1, "b": 0}


# -- strategies ---------------------------------------------------------------------


async def test_weighted_spreads_in_proportion_to_the_weights(anyio_backend: object) -> None:
    """Weights 3:1 send about three quarters of the requests to the heavier deployment."""
    a, b = deployment("a"), deployment("b")
    llm = routed(a, b, routing=Routing(tiers=[["a", "b"]], strategy="weighted", weights={"a": 3}))
    for _ in range(400):
        await stream_once(llm)
    share = len(a.calls) / 400
    assert 0.70 <= share <= 0.80, share


async def test_least_busy_sends_to_the_deployment_with_fewest_in_flight(
    anyio_backend: object,
) -> None:
    """Two streams held open on one deployment send the next requests to the other."""
    a, b = deployment("a"), deployment("b")
    llm = routed(a, b, routing=Routing(tiers=[["a", "b"]], strategy="least_busy"))
    async with llm.stream_chat_with_history(USER, "m", 0.0) as first:
        await first.__anext__()
        held = first_name = next(p.name for p in (a, b) if p.calls)
        assert llm.deployments()[held].in_flight == 1
        await stream_once(llm)  # goes to the idle one
        assert calls(a, b) == {"a": 1, "b": 1}
        assert first_name == held
    assert llm.deployments()["a"].in_flight == llm.deployments()["b"].in_flight == 0


async def test_least_busy_breaks_ties_at_random(anyio_backend: object) -> None:
    """Idle equal deployments share sequential traffic instead of the first taking it all."""
    a, b, c = deployment("a"), deployment("b"), deployment("c")
    llm = routed(a, b, c, routing=Routing(tiers=[["a", "b", "c"]], strategy="least_busy"))
    for _ in range(300):
        await stream_once(llm)
    assert all(70 <= n <= 130 for n in calls(a, b, c).values()), calls(a, b, c)


async def test_latency_sends_little_to_a_slow_deployment(anyio_backend: object) -> None:
    """Three deployments at 50, 50 and 200 ms: the slow one gets under 2 % of 2,000 streams."""
    a, b, c = deployment("a", 0.05), deployment("b", 0.05), deployment("c", 0.2)
    llm = routed(a, b, c, routing=Routing(tiers=[["a", "b", "c"]], strategy="latency"))
    await run_concurrently(50, 40, lambda: stream_once(llm))
    assert sum(calls(a, b, c).values()) == 2000
    assert len(c.calls) < 40, calls(a, b, c)
    assert llm.deployments()["c"].latency > llm.deployments()["a"].latency


async def test_latency_moves_away_from_a_slowdown_and_back_after_recovery(
    anyio_backend: object,
) -> None:
    """A deployment that slows from 50 to 500 ms loses its traffic at once and wins it back."""
    delay = {"a": 0.05}

    def a_script(index: int, model: str) -> Stream:
        return Stream(["a"], first_delay=delay["a"])

    a = ScriptedProvider(a_script, name="a")
    b = deployment("b", 0.05)
    llm = routed(a, b, routing=Routing(tiers=[["a", "b"]], strategy="latency", decay=1.0))
    for _ in range(20):
        await stream_once(llm)
    assert len(a.calls) >= 5
    delay["a"] = 0.5
    before = len(a.calls)
    for _ in range(20):
        await stream_once(llm)
    assert len(a.calls) - before <= 2  # the first slow answer moves traffic away
    delay["a"] = 0.05
    await anyio.sleep(10.0)  # the slow sample decays: a is tried again
    before = len(a.calls)
    for _ in range(40):
        await stream_once(llm)
    assert len(a.calls) - before >= 10


async def test_latency_counts_a_slow_failure_as_a_peak(anyio_backend: object) -> None:
    """A deployment that fails after 2 s costs more than one that answers in 50 ms."""
    a = ScriptedProvider([Fail(ProviderError("timeout", kind="timeout"), delay=2.0)], name="a")
    b = ScriptedProvider([Reply("ok", delay=0.05)], name="b")
    llm = routed(a, b, routing=Routing(tiers=[["a", "b"]], strategy="latency"), health=None)
    for _ in range(10):
        await call_once(llm)
    views = llm.deployments()
    assert views["a"].latency > 1.0 > views["b"].latency > 0
    assert len(a.calls) <= 2


# -- affinity -------------------------------------------------------------------------


def system(prefix: str, question: str = "q") -> list[ChatMessage]:
    return [ChatMessage.system(prefix), ChatMessage.user(question)]


async def test_prefix_affinity_keeps_a_prompt_prefix_on_one_deployment(
    anyio_backend: object,
) -> None:
    """Requests sharing a system prompt go to the same deployment, whatever the question.

    (A load bound this loose never spills; the next test holds the default one.)
    """
    ps = [deployment(n) for n in "abcd"]
    llm = routed(
        *ps, routing=Routing(tiers=[["a", "b", "c", "d"]], affinity="prefix", load_bound=100)
    )
    for i in range(10):
        await stream_once(llm, system("You are a pirate.", f"q{i}"))
    assert sorted(calls(*ps).values()) == [0, 0, 0, 10]


async def test_prefix_affinity_spreads_prefixes_within_the_load_bound(
    anyio_backend: object,
) -> None:
    """50 prefixes x 40 requests over four deployments: each prefix mostly stays, load bounded."""
    ps = [deployment(n) for n in "abcd"]
    llm = routed(*ps, routing=Routing(tiers=[["a", "b", "c", "d"]], affinity="prefix"))
    seen: dict[str, set[str]] = {}
    rng = random.Random(7)
    order_ = [i for i in range(50) for _ in range(40)]
    rng.shuffle(order_)
    for i in order_:
        before = calls(*ps)
        await stream_once(llm, system(f"prefix {i}"))
        after = calls(*ps)
        served = next(n for n in after if after[n] != before[n])
        seen.setdefault(f"prefix {i}", set()).add(served)
    loads = calls(*ps).values()
    assert max(loads) <= 1.25 * 2000 / 4, loads
    # A prefix's first request on a deployment is the only cache miss there:
    # at least 96 % of the 2,000 requests would hit.
    misses = sum(len(s) for s in seen.values())
    assert misses <= 80, seen


async def test_an_explicit_affinity_key_replaces_the_prefix(anyio_backend: object) -> None:
    """affinity_key() routes different prompts of one session to one deployment."""
    ps = [deployment(n) for n in "abcd"]
    llm = routed(
        *ps, routing=Routing(tiers=[["a", "b", "c", "d"]], affinity="prefix", load_bound=100)
    )
    with affinity_key("session-42"):
        for i in range(8):
            await stream_once(llm, system(f"different prompt {i}"))
    assert sorted(calls(*ps).values()) == [0, 0, 0, 8]
    with pytest.raises(TypeError), affinity_key(""):
        pass


async def test_affinity_yields_to_an_open_breaker(anyio_backend: object) -> None:
    """When the preferred deployment's breaker is open, the key's next choice serves at once."""
    down: set[str] = set()

    def script(name: str) -> object:
        def outcome(index: int, model: str) -> object:
            if name in down:
                return Fail(ProviderError("boom", status_code=503))
            return Stream(["a", "b"])

        return outcome

    ps = [ScriptedProvider(script(n), name=n) for n in "abc"]  # type: ignore[arg-type]
    llm = routed(*ps, routing=Routing(tiers=[["a", "b", "c"]], affinity="prefix", load_bound=100))
    await stream_once(llm, system("P"))
    preferred = next(p for p in ps if p.calls)
    down.add(preferred.name)
    for _ in range(3):  # each fails over to the key's next choice; opens the breaker
        assert await stream_once(llm, system("P")) == "ab"
    assert llm.health()[(preferred.name, "m")].state == "open"
    count = len(preferred.calls)
    t0 = current_time()
    await stream_once(llm, system("P"))
    assert len(preferred.calls) == count  # skipped without a call
    assert current_time() == t0


def test_rendezvous_order_is_stable_when_a_deployment_is_removed() -> None:
    """Removing a deployment moves only the keys that preferred it."""
    names = ["a", "b", "c", "d"]
    views = {n: DeploymentView(n) for n in names}
    routing = Routing(tiers=[names], affinity="prefix")
    rng = random.Random(0)
    before = {
        k: order([names], views, routing, rng, prefix_key([k]))[0][0] for k in map(str, range(200))
    }
    rest = ["a", "b", "c"]
    after = {
        k: order([rest], views, routing, rng, prefix_key([k]))[0][0] for k in map(str, range(200))
    }
    moved = [k for k in before if before[k] != after[k]]
    assert moved and all(before[k] == "d" for k in moved)


# -- rate limits -----------------------------------------------------------------------


async def test_rpm_limit_sends_the_overflow_to_the_peer(anyio_backend: object) -> None:
    """With rpm=2 on a, the third request of the minute goes to b without a call to a."""
    a, b = deployment("a"), deployment("b")
    llm = routed(a, b, rate_limits={"a": RateLimit(rpm=2)})
    for _ in range(3):
        await stream_once(llm)
    assert calls(a, b) == {"a": 2, "b": 1}
    assert llm.deployments()["a"].remaining_requests == 0
    await anyio.sleep(60.0)
    await stream_once(llm)
    assert calls(a, b) == {"a": 3, "b": 1}


async def test_no_capacity_anywhere_waits_exactly_for_the_soonest(anyio_backend: object) -> None:
    """Every deployment out of room: the request waits until the first slot frees, then goes."""
    a, b = deployment("a"), deployment("b")
    llm = routed(
        a,
        b,
        routing=Routing(max_wait=60.0),
        rate_limits={"a": RateLimit(rpm=1), "b": RateLimit(rpm=1)},
    )
    await stream_once(llm)
    await anyio.sleep(10.0)
    await stream_once(llm)
    assert calls(a, b) == {"a": 1, "b": 1}
    await stream_once(llm)
    assert current_time() == 60.0  # a's first request leaves the window at t=60
    assert a.calls[1].started_at == 60.0


async def test_no_capacity_past_max_wait_is_a_clear_error_without_a_call(
    anyio_backend: object,
) -> None:
    """Past Routing.max_wait the request fails with NoCapacityError; no 429 is spent."""
    a = deployment("a")
    llm = routed(a, routing=Routing(max_wait=5.0), rate_limits={"a": RateLimit(rpm=1)})
    await stream_once(llm)
    with pytest.raises(NoCapacityError) as info:
        await call_once(llm)
    assert info.value.deployments == ("a",)
    assert info.value.wait == 60.0
    assert "no rate-limit capacity" in str(info.value)
    assert len(a.calls) == 1 and current_time() == 0.0


async def test_tpm_estimate_is_corrected_by_reported_usage(anyio_backend: object) -> None:
    """A token window counts the estimate first, then the usage the answer reported."""
    from reliant import ChatRequest, TokenUsage

    a = ScriptedProvider([Reply("x", usage=TokenUsage(10, 5))], name="a")
    llm = routed(a, rate_limits={"a": RateLimit(tpm=1000)})
    await llm.chat(ChatRequest([ChatMessage.user("abcd" * 10)]), "m", 0.0)
    assert llm.deployments()["a"].remaining_tokens == 1000 - 15


async def test_a_failover_candidate_out_of_capacity_is_skipped_without_a_call(
    anyio_backend: object,
) -> None:
    """A peer that ran out of room meanwhile is written 'capacity' in the trail, not called."""
    a = ScriptedProvider([Fail(ProviderError("down", status_code=500), delay=1.0)], name="a")
    b = deployment("b")
    limits = {"b": RateLimit(rpm=1)}
    llm = routed(a, b, routing=Routing(tiers=[["a", "b"]]), rate_limits=limits, health=None)
    # Another ReliableProvider shares the routing state and takes b's one
    # request of the minute while a is still failing.
    other = routed(b, rate_limits=limits, routing_store=llm.routing_store)
    failed: list[FailoverError] = []

    async def first() -> None:
        with pytest.raises(FailoverError) as info:
            await call_once(llm)
        failed.append(info.value)

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.sleep(0.5)
        await stream_once(other)
    assert [(t.provider, t.reason) for t in failed[0].attempts] == [
        ("a", "retryable"),
        ("b", "capacity"),
    ]
    assert current_time() == 1.0
    assert len(b.calls) == 1


async def test_rate_limits_without_routing_route_the_plain_chain(anyio_backend: object) -> None:
    """rate_limits alone keep the chain's order and only add the limits."""
    a, b = deployment("a"), deployment("b")
    llm = routed(a, b, rate_limits={"a": RateLimit(rpm=1)})
    assert llm.routing == Routing()
    await stream_once(llm)
    await stream_once(llm)
    assert calls(a, b) == {"a": 1, "b": 1}


# -- interplay ----------------------------------------------------------------------------


async def test_hedge_goes_to_the_next_candidate_in_the_balancers_order(
    anyio_backend: object,
) -> None:
    """With least_busy, a slow attempt's hedge goes to the less busy peer, not the next listed."""
    a, b, c = deployment("a", 5.0), deployment("b", 0.1), deployment("c", 0.1)
    llm = routed(
        a,
        b,
        c,
        routing=Routing(tiers=[["a", "b", "c"]], strategy="least_busy"),
        hedge=Hedge(after=1.0),
    )
    # Other processes' work, seen through the shared store: b has two
    # requests in flight, c one, a none.
    store = llm.routing_store
    held = [ScriptedProvider([Stream(["z"], first_delay=100.0)], name=n) for n in "bbc"]
    holders = [routed(h, routing_store=store) for h in held]
    async with anyio.create_task_group() as tg:
        for holder in holders:
            tg.start_soon(stream_once, holder)
        await anyio.sleep(0.5)
        assert {n: v.in_flight for n, v in llm.deployments().items()} == {"a": 0, "b": 2, "c": 1}
        assert await stream_once(llm) == "ab"
        assert current_time() == pytest.approx(1.6)
        tg.cancel_scope.cancel()
    assert calls(a, b, c) == {"a": 1, "b": 0, "c": 1}


async def test_mid_stream_recovery_continues_on_a_peer(anyio_backend: object) -> None:
    """A stream that breaks mid-way restarts on the next deployment of the tier."""
    from reliant import StreamError

    a = ScriptedProvider([Stream(["x", "y"], error=StreamError("cut"))], name="a")
    b = deployment("b")
    llm = routed(a, b, routing=Routing(tiers=[["a", "b"]]), mid_stream="restart")
    async with llm.stream_chat_with_history(USER, "m", 0.0) as chunks:
        items = [c async for c in chunks]
    assert [c.delta for c in items if c.delta] == ["x", "y", "a", "b"]
    assert any(c.restarted for c in items)
    assert llm.deployments()["a"].in_flight == llm.deployments()["b"].in_flight == 0


async def test_choosing_a_peer_is_not_a_fallback(anyio_backend: object) -> None:
    """Fallback info is recorded only when the served deployment differs from the chosen one."""
    a, b = deployment("a"), deployment("b")
    llm = routed(a, b, routing=Routing(tiers=[["a", "b"]], strategy="least_busy"))
    with fallback_scope():
        for _ in range(10):
            await stream_once(llm)
        assert take_last_provider_fallback() is None
    assert min(calls(a, b).values()) > 0


async def test_route_chosen_event_tells_strategy_choice_and_order(anyio_backend: object) -> None:
    """A RouteChosen event follows RequestStarted with the strategy, the choice and why."""
    from reliant import RouteChosen

    events: list[object] = []
    a, b = deployment("a"), deployment("b")
    llm = routed(
        a,
        b,
        routing=Routing(tiers=[["a", "b"]], strategy="least_busy"),
        on_event=events.append,
    )
    await stream_once(llm)
    chosen = [e for e in events if isinstance(e, RouteChosen)]
    assert len(chosen) == 1
    e = chosen[0]
    assert e.strategy == "least_busy" and e.reason == "fewest requests in flight"
    assert set(e.order) == {"a", "b"} and e.provider == e.order[0]
    assert type(events[0]).__name__ == "RequestStarted" and events[1] is e
    assert events[0].provider == e.provider  # type: ignore[attr-defined]


async def test_in_flight_is_given_back_when_the_caller_cancels(anyio_backend: object) -> None:
    """A cancelled stream frees its deployment's in-flight slot."""
    a = deployment("a", 10.0)
    llm = routed(a, routing=Routing())
    with anyio.move_on_after(1.0):
        await stream_once(llm)
    assert current_time() == 1.0
    assert llm.deployments()["a"].in_flight == 0


# -- validation -------------------------------------------------------------------------


def test_routing_validates_its_fields() -> None:
    """Bad strategies, tiers, weights and numbers are refused with clear errors."""
    with pytest.raises(ValueError, match="strategy"):
        Routing(strategy="fastest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="affinity"):
        Routing(affinity="session")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tiers"):
        Routing(tiers="ab")
    with pytest.raises(ValueError, match="twice"):
        Routing(tiers=[["a"], ["a"]])
    with pytest.raises(ValueError, match="weights"):
        Routing(weights={"a": 0})
    with pytest.raises(ValueError, match="load_bound"):
        Routing(load_bound=0.5)
    with pytest.raises(ValueError, match="decay"):
        Routing(decay=float("nan"))
    with pytest.raises(ValueError, match="rpm, tpm"):
        RateLimit()
    with pytest.raises(ValueError, match="rpm"):
        RateLimit(rpm=-1)
    assert Routing(tiers=[["a", "b"]]).tiers == (("a", "b"),)


def test_reliable_provider_refuses_unknown_names_in_routing() -> None:
    """Tiers, weights and rate limits naming an unknown provider are refused."""
    a = deployment("a")
    with pytest.raises(ValueError, match="unknown provider"):
        ReliableProvider([a], routing=Routing(tiers=[["a", "x"]]))
    with pytest.raises(ValueError, match="unknown provider"):
        ReliableProvider([a], routing=Routing(weights={"x": 2}, tiers=[["a"]]))
    with pytest.raises(ValueError, match="unknown provider"):
        ReliableProvider([a], rate_limits={"x": RateLimit(rpm=1)})
    with pytest.raises(TypeError, match="RateLimit"):
        ReliableProvider([a], rate_limits={"a": 60})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="Routing"):
        ReliableProvider([a], routing="latency")  # type: ignore[arg-type]


def test_routing_reads_a_toml_table() -> None:
    """Routing.from_mapping builds the policy and refuses unknown keys."""
    r = Routing.from_mapping({"tiers": [["a", "b"]], "strategy": "latency"})
    assert r.strategy == "latency" and r.tiers == (("a", "b"),)
    with pytest.raises(ValueError, match="unknown"):
        Routing.from_mapping({"stratgy": "latency"})


async def test_room_taken_for_a_skipped_deployment_is_given_back(anyio_backend: object) -> None:
    """The chosen deployment skipped for an open breaker keeps no in-flight slot and no RPM room."""
    a = ScriptedProvider([Fail(ProviderError("down", status_code=503))], name="a")
    b = deployment("b")
    llm = routed(a, b, rate_limits={"a": RateLimit(rpm=100)}, health=HealthPolicy(open_after=1))
    await stream_once(llm)  # a fails once: its breaker opens for 30 s
    assert llm.health()[("a", "m")].state == "open"
    for _ in range(5):
        await stream_once(llm)  # routed to a first, skipped without a call
    assert len(a.calls) == 1
    view = llm.deployments()["a"]
    assert (view.in_flight, view.remaining_requests) == (0, 99)


async def test_a_deployment_with_an_open_breaker_goes_last_in_its_tier(
    anyio_backend: object,
) -> None:
    """While a's breaker is open b leads (no skip, no fallback); when a may probe, a leads."""
    a = ScriptedProvider([Fail(ProviderError("down", status_code=503)), Stream(["a"])], name="a")
    b = deployment("b")
    llm = routed(
        a, b, routing=Routing(tiers=[["a", "b"]]), health=HealthPolicy(open_after=1, open_for=5.0)
    )
    assert await stream_once(llm) == "ab"  # a fails, b serves; a's breaker opens until t=5
    with fallback_scope():
        assert await stream_once(llm) == "ab"
        assert take_last_provider_fallback() is None  # b was the first candidate
    assert len(a.calls) == 1
    await anyio.sleep(5.0)
    assert await stream_once(llm) == "a"  # a leads again: its probe succeeds
    assert llm.health()[("a", "m")].state == "closed"


def test_a_store_seen_from_a_clock_behind_its_stamps_does_not_overflow() -> None:
    """Times older than a deployment's last stamp (another loop's clock) read as no decay."""
    from reliant import LocalRouting

    store = LocalRouting(decay=1.0)
    assert store.acquire_nowait("a", 100_000.0, None, 0) == 0.0
    store.observe_nowait("a", 100_000.0, 0.2, False)
    assert store.acquire_nowait("a", 1.0, None, 0) == 0.0  # a clock far behind
    view = store.view("a", 1.0, None, 0)
    assert view.latency == 0.2 and view.load == 2.0


async def test_a_deployment_that_stalls_loses_traffic_before_its_first_slow_answer(
    anyio_backend: object,
) -> None:
    """An attempt in flight past a's average makes a costlier at once: no wait for its answer."""
    delay = {"a": 0.05}

    def a_script(index: int, model: str) -> Stream:
        return Stream(["a"], first_delay=delay["a"])

    a = ScriptedProvider(a_script, name="a")
    b = deployment("b", 0.05)
    llm = routed(a, b, routing=Routing(tiers=[["a", "b"]], strategy="latency"))
    for _ in range(10):
        await stream_once(llm)
    assert len(a.calls) >= 3 and len(b.calls) >= 3
    delay["a"] = 30.0  # a stalls
    async with anyio.create_task_group() as tg:
        while not (a.calls and a.calls[-1].finished_at is None):
            tg.start_soon(stream_once, llm)  # until one request is stuck on a
            await anyio.sleep(0.1)
        stuck = len(a.calls)
        await anyio.sleep(1.0)
        assert llm.deployments()["a"].latency >= 1.0  # its oldest request's age
        before = len(b.calls)
        for _ in range(10):
            await stream_once(llm)
        assert len(b.calls) - before == 10 and len(a.calls) <= stuck + 1
        tg.cancel_scope.cancel()
