"""Provider health: traffic amplification and latency during an outage, and its overhead.

Prints (and writes results/health.json):

1. Amplification, over real loopback HTTP against the project's fake server:
   C concurrent callers (1, 100, 500) each make 4 requests while *both*
   providers answer 500 (max_retries=2, so 3 attempts per provider without
   health). Reported: upstream requests per caller request, and per first
   try (every request must try each provider once: that is the floor).
2. Latency during an outage of the primary only (500s), backup healthy:
   time to first token of 30 sequential streams, health on vs off, next to
   the healthy backup called directly. Without health every request pays the
   primary's whole retry ladder; with it, only the first few do.
3. Overhead of health on a healthy request, in process (ScriptedProvider-like
   instant provider, thousands of calls): health on vs ``health=None``, for a
   non-streaming call and for a two-chunk stream. Target: at most 5 us more.
4. A burst that must not starve, over real loopback HTTP: 200 concurrent
   requests, each with its own model ids; two providers that always answer
   500 come first, the third fails each request once and then answers
   (``max_retries=1``). Target: 200/200 served with default health (one
   budget per store served about half).
5. Recovery after an outage (failoverbench S15's shape), in process on a
   virtual clock: the primary answers 503 for 60 s, then is healthy; twenty
   requests come 4 s apart. Target: the primary serves again within 30 s of
   recovering, and the outage costs at most about one probe per 10 s.

    python benchmarks/bench_health.py
"""

from __future__ import annotations

import contextlib
import statistics
import time

import trio
import trio.testing

from _util import Instant, best_of, row, write_json
from reliant import (
    ChatMessage,
    FailoverError,
    LocalHealth,
    Provider,
    ProviderError,
    ReliableProvider,
)
from reliant.providers import Anthropic, OpenAICompatible
from reliant.testing.fake_server import serve_fake_llm

MESSAGES = [ChatMessage.user("hello")]
CALLERS = (1, 100, 500)
REQUESTS_PER_CALLER = 4


async def amplification(
    server: object, primary: Provider, backup: Provider
) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for callers in CALLERS:
        for health_on in (False, True):
            server.script("dead-a", ["status:500"])  # type: ignore[attr-defined]
            server.script("dead-b", ["status:500"])  # type: ignore[attr-defined]
            llm = ReliableProvider(
                [("a", primary), ("b", backup)],
                max_retries=2,
                base_backoff=0.01,
                model_aliases={"a": {"m": "dead-a"}, "b": {"m": "dead-b"}},
                health=LocalHealth() if health_on else None,
            )
            before = len(server.requests)  # type: ignore[attr-defined]

            async def caller(llm: ReliableProvider = llm) -> None:
                for _ in range(REQUESTS_PER_CALLER):
                    with contextlib.suppress(FailoverError):
                        await llm.chat_with_history(MESSAGES, "m", 0.0)

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(callers):
                    nursery.start_soon(caller)
            elapsed = time.perf_counter() - start
            sent = len(server.requests) - before  # type: ignore[attr-defined]
            requests = callers * REQUESTS_PER_CALLER
            out.append(
                {
                    "callers": callers,
                    "health": health_on,
                    "caller_requests": requests,
                    "upstream_requests": sent,
                    "per_request": sent / requests,
                    "per_first_try": sent / (2 * requests),
                    "wall_s": elapsed,
                }
            )
    return out


async def ttft(llm: Provider, model: str) -> float:
    start = time.perf_counter()
    async with llm.stream_chat_with_history(MESSAGES, model, 0.0) as chunks:
        async for chunk in chunks:
            if chunk.delta:
                first = time.perf_counter() - start
                break
        else:
            raise RuntimeError("no text")
        async for _ in chunks:
            pass
    return first


async def outage_latency(server: object, primary: Provider, backup: Provider) -> dict[str, object]:
    server.script("down", ["status:500"])  # type: ignore[attr-defined]
    server.script("up", ["ok:chunks=5"])  # type: ignore[attr-defined]
    aliases = {"primary": {"m": "down"}, "backup": {"m": "up"}}
    result: dict[str, object] = {}
    for label, health in (("health_off", None), ("health_on", LocalHealth())):
        llm = ReliableProvider(
            [("primary", primary), ("backup", backup)],
            max_retries=2,
            base_backoff=0.05,
            model_aliases=aliases,
            health=health,
        )
        samples = [await ttft(llm, "m") for _ in range(30)]
        result[label] = {
            "p50_ms": statistics.median(samples) * 1e3,
            "first_ms": samples[0] * 1e3,
            "last10_p50_ms": statistics.median(samples[-10:]) * 1e3,
        }
    direct = [await ttft(backup, "up") for _ in range(30)]
    result["backup_direct_p50_ms"] = statistics.median(direct) * 1e3
    return result


async def overhead() -> dict[str, float]:
    on = ReliableProvider([("p", Instant()), ("q", Instant())])
    off = ReliableProvider([("p", Instant()), ("q", Instant())], health=None)

    def call(llm: ReliableProvider):  # type: ignore[no-untyped-def]
        async def go() -> None:
            await llm.chat_with_history(MESSAGES, "m", 0.0)

        return go

    def stream(llm: ReliableProvider):  # type: ignore[no-untyped-def]
        async def go() -> None:
            async with llm.stream_chat_with_history(MESSAGES, "m", 0.0) as chunks:
                async for _ in chunks:
                    pass

        return go

    figures: dict[str, float] = {}
    # Interleave on/off runs so machine noise hits both alike.
    for name, make, inner in (("call", call, 4000), ("stream", stream, 1000)):
        offs, ons = [], []
        for _ in range(5):
            offs.append(await best_of(make(off), repeat=3, inner=inner))
            ons.append(await best_of(make(on), repeat=3, inner=inner))
        figures[f"{name}_off_us"] = statistics.median(offs) * 1e6
        figures[f"{name}_on_us"] = statistics.median(ons) * 1e6
        figures[f"{name}_added_us"] = figures[f"{name}_on_us"] - figures[f"{name}_off_us"]
    return figures


async def burst(server: object) -> dict[str, object]:
    n = 200
    aliases: dict[str, dict[str, str]] = {"dead-a": {}, "dead-b": {}, "serving": {}}
    for i in range(n):
        for name in aliases:
            aliases[name][f"r{i}"] = f"{name}-{i}"
        server.script(f"dead-a-{i}", ["status:500"])  # type: ignore[attr-defined]
        server.script(f"dead-b-{i}", ["status:503"])  # type: ignore[attr-defined]
        server.script(f"serving-{i}", ["status:500", "ok:chunks=1"])  # type: ignore[attr-defined]
    url = server.openai_base_url  # type: ignore[attr-defined]
    served = 0
    async with (
        OpenAICompatible(name="dead-a", base_url=url, api_key="k") as a,
        Anthropic(name="dead-b", base_url=server.anthropic_base_url, api_key="k") as b,  # type: ignore[attr-defined]
        OpenAICompatible(name="serving", base_url=url, api_key="k") as c,
    ):
        llm = ReliableProvider(
            [("dead-a", a), ("dead-b", b), ("serving", c)], max_retries=1, model_aliases=aliases
        )

        async def one(i: int) -> None:
            nonlocal served
            with contextlib.suppress(FailoverError):
                await llm.chat_with_history(MESSAGES, f"r{i}", 0.0)
                served += 1

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
    return {"requests": n, "served": served}


class _DownUntil(Provider):
    """503 at once until ``until`` (trio time), then an answer."""

    def __init__(self, until: float) -> None:
        self.until = until
        self.calls: list[float] = []

    async def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> str:
        now = trio.current_time()
        self.calls.append(now)
        if now < self.until:
            raise ProviderError("primary API error (503 Service Unavailable)", status_code=503)
        return "primary"


async def recovery() -> dict[str, object]:
    primary = _DownUntil(60.0)
    llm = ReliableProvider([("primary", primary), ("backup", Instant())], max_retries=2)
    back: list[float] = []
    for i in range(20):
        await trio.sleep_until(4.0 * i)
        if await llm.simple_chat("x", "m", 0.0) == "primary":
            back.append(trio.current_time())
    during = [t for t in primary.calls if t < 60.0]
    return {
        "primary_back_at_s": back[0] if back else None,
        "after_recovery_s": back[0] - 60.0 if back else None,
        "primary_calls_during_outage": len(during),
        "probe_times_s": during,
    }


async def main(back: dict[str, object]) -> None:
    async with (
        serve_fake_llm() as server,
        OpenAICompatible(name="primary", base_url=server.openai_base_url, api_key="k") as primary,
        Anthropic(name="backup", base_url=server.anthropic_base_url, api_key="k") as backup,
    ):
        amp = await amplification(server, primary, backup)
        latency = await outage_latency(server, primary, backup)
        starved = await burst(server)
    cost = await overhead()

    print("1. outage of every provider: upstream requests per caller request (max_retries=2)")
    print(f"  {'callers':>8} {'health':>7} {'per request':>12} {'per first try':>14}")
    for r in amp:
        print(
            f"  {r['callers']:>8} {'on' if r['health'] else 'off':>7} "
            f"{r['per_request']:>12.2f} {r['per_first_try']:>13.2f}x"
        )
    print("2. primary down, backup healthy: time to first token of 30 sequential streams")
    for label in ("health_off", "health_on"):
        fig = latency[label]
        assert isinstance(fig, dict)
        print(
            f"  {label:<11} p50 {fig['p50_ms']:7.2f} ms   first {fig['first_ms']:7.2f} ms   "
            f"last 10 p50 {fig['last10_p50_ms']:7.2f} ms"
        )
    print(f"  backup called directly: p50 {latency['backup_direct_p50_ms']:.2f} ms")
    print("3. healthy request, in process: health on vs health=None")
    print(row("non-streaming, health=None", cost["call_off_us"] / 1e6))
    print(row("non-streaming, health on", cost["call_on_us"] / 1e6, cost["call_off_us"] / 1e6))
    print(row("2-chunk stream, health=None", cost["stream_off_us"] / 1e6))
    print(row("2-chunk stream, health on", cost["stream_on_us"] / 1e6, cost["stream_off_us"] / 1e6))
    print(
        f"  added by health: {cost['call_added_us']:.2f} us per call, "
        f"{cost['stream_added_us']:.2f} us per stream (target <= 5 us)"
    )
    print("4. burst: 200 concurrent requests, two dead providers, the third fails each once")
    print(f"  served {starved['served']}/{starved['requests']} with default health (target: all)")
    print("5. recovery: primary 503 for 60 s, then healthy; 20 requests 4 s apart (virtual time)")
    print(
        f"  primary serves again at t={back['primary_back_at_s']} s "
        f"({back['after_recovery_s']} s after it recovered; target <= 30 s); "
        f"{back['primary_calls_during_outage']} calls to it during the 60 s outage"
    )
    path = write_json(
        "health.json",
        {
            "amplification": amp,
            "outage_latency": latency,
            **cost,
            "burst": starved,
            "recovery": back,
        },
    )
    print(f"  wrote {path}")


if __name__ == "__main__":
    # The recovery scenario runs on a virtual clock: 80 s of requests in milliseconds.
    trio.run(main, trio.run(recovery, clock=trio.testing.MockClock(autojump_threshold=0)))
