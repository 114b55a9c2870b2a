"""Routing across deployments (issue #22): reliant beside LiteLLM's Router, on one fake server.

    python benchmarks/bench_routing.py [--quick] [--litellm-python /tmp/litellm-venv/bin/python]

One fake LLM server process (``python -m reliant.testing.fake_server``) serves
every case to both sides: its deployments (``/d/<name>/v1``, each with its
own time to first token, rate limits and prompt cache) are declared, changed
mid-run and read over its HTTP controls. reliant runs here on trio; LiteLLM's
Router runs in its own interpreter (``benchmarks/_routing_litellm.py``, the
same cases, the same numbers, ``CASES``), with the strategy that matches. Real
time throughout; each (case, strategy) gets fresh deployments.

Cases and targets (the issue's):

- ``latency``: three deployments with TTFT 50, 50 and 200 ms; 50 callers;
  2,000 streams. ``latency`` sends at most 10 % to the slow one; its p99 TTFT
  is within 1.2x of an oracle that always picks the fastest (``priority``
  with the fast deployment alone).
- ``degradation``: one deployment goes from 50 to 500 ms at a third of the
  requests and back at two thirds: traffic moves away within 20 requests and
  comes back after it recovers. reliant runs it with ``decay=1.0``: at 500
  requests a second the whole run lasts about 4 s, and with the default 10 s
  the recovered deployment's old peak would not fade within it.
- ``rate_limits``: two deployments at 600 RPM enforced by the server; 1,000
  requests at 30/s: zero 429s with ``rate_limits``, and with limits learned
  from headers alone. ``rate_limits_tight`` (ours, not the issue's): the same
  at 150 RPM each, so the offered load is beyond capacity and every router
  must refuse or queue.
- ``affinity``: 50 prefixes x 40 requests over four prefix-caching
  deployments (20 prefixes each fit their cache): hit ratio at least 90 %
  with ``affinity="prefix"``, the busiest deployment at most 1.25x its fair
  share.
- ``decision``: the in-process cost of one routing decision and its
  bookkeeping (route, start, end) per request, by strategy; with Redis, the
  round trips per request.

Writes ``benchmarks/results/routing.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx2
import trio

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import _routing_litellm as ll  # noqa: E402  (the same cases, numbers and server controls)
from _util import RESULTS, Instant  # noqa: E402
from reliant import (  # noqa: E402
    ChatMessage,
    NoCapacityError,
    RateLimit,
    ReliableProvider,
    Routing,
    fallback_scope,
    take_last_request_record,
)
from reliant.providers import OpenAICompatible  # noqa: E402

CHUNKS = ll.CHUNKS


async def declare(client: httpx2.AsyncClient, url: str, name: str, **settings: Any) -> None:
    response = await client.post(f"{url}/_fake/deployments/{name}", json=settings)
    if response.status_code != 200:
        raise RuntimeError(f"fake server refused {name} {settings}: {response.text}")


async def server_stats(client: httpx2.AsyncClient, url: str, name: str) -> dict[str, Any]:
    response = await client.get(f"{url}/_fake/deployments/{name}")
    response.raise_for_status()
    return dict(response.json()["stats"])


class Record:
    __slots__ = ("deployment", "error", "index", "ttft")

    def __init__(self, index: int) -> None:
        self.index = index
        self.deployment: str | None = None
        self.ttft: float | None = None
        self.error: str | None = None


async def one_request(llm: ReliableProvider, messages: list[ChatMessage], record: Record) -> None:
    """Stream one answer through ``llm``; who served it comes from its request record."""
    start = time.perf_counter()
    pieces = 0
    with fallback_scope():
        try:
            async with llm.stream_chat_with_history(messages, "bench", 0.0) as chunks:
                async for chunk in chunks:
                    if chunk.delta:
                        if pieces == 0:
                            record.ttft = time.perf_counter() - start
                        pieces += 1
            if pieces != CHUNKS:
                record.error = f"short stream ({pieces} of {CHUNKS} pieces)"
        except NoCapacityError:
            record.error = "NoCapacityError"
        except Exception as exc:  # a failed request is a figure, not a crash
            status = getattr(exc, "status_code", None)
            record.error = type(exc).__name__ + (f" {status}" if status else "")
        taken = take_last_request_record()
    if taken is not None:
        record.deployment = taken.actual_provider


async def closed_loop(count: int, callers: int, request: Callable[[int], Awaitable[None]]) -> None:
    indices = iter(range(count))

    async def caller() -> None:
        for index in indices:
            await request(index)

    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)


async def open_loop(count: int, rate: float, request: Callable[[int], Awaitable[None]]) -> float:
    start = trio.current_time()
    late = 0.0
    async with trio.open_nursery() as nursery:
        for index in range(count):
            due = start + index / rate
            await trio.sleep_until(due)
            late = max(late, trio.current_time() - due)
            nursery.start_soon(request, index)
    return late


async def leaves(
    url: str, names: Sequence[str], stack: Any, *, anthropic: bool = False
) -> list[OpenAICompatible]:
    out = []
    for name in names:
        out.append(
            await stack.enter_async_context(
                OpenAICompatible(name=name, base_url=f"{url}/d/{name}/v1", api_key="sk-bench")
            )
        )
    return out


def reliable(
    providers: Sequence[OpenAICompatible],
    routing: Routing,
    rate_limits: dict[str, RateLimit] | None = None,
) -> ReliableProvider:
    # The same answer LiteLLM asks for: `ok:chunks=8` on every deployment.
    names = [p.name for p in providers]
    return ReliableProvider(
        providers,
        max_retries=0,
        model_aliases={n: {"bench": f"ok:chunks={CHUNKS}"} for n in names},
        routing=routing,
        rate_limits=rate_limits,
        rng=random.Random(22),
    )


def summary(
    records: Sequence[Record],
    names: Sequence[str],
    wall: float,
    cpu: float,
    server: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    ttfts = [r.ttft for r in records if r.error is None and r.ttft is not None]
    errors = Counter(r.error for r in records if r.error is not None)
    served = Counter(r.deployment for r in records if r.error is None)
    total = sum(served.values())
    return {
        "requests": len(records),
        "completed": len(records) - sum(errors.values()),
        "failed": sum(errors.values()),
        "errors": dict(errors),
        "server_429s": sum(s["rate_limited"] for s in server.values()),
        "share": {n: served[n] / total if total else 0.0 for n in names},
        "server_requests": {n: server[n]["requests"] for n in names},
        "ttft_p50_s": ll.percentile(ttfts, 0.5),
        "ttft_p99_s": ll.percentile(ttfts, 0.99),
        "wall_s": wall,
        "throughput_rps": len(records) / wall if wall > 0 else None,
        "client_cpu_ms_per_request": 1000 * cpu / len(records) if records else None,
    }


def fresh(case: str, label: str, count: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"rl-{case[:4]}-{label}-{chr(97 + i)}-{run}" for i in range(count)]


# -- the cases ------------------------------------------------------------------------------


async def latency_case(url: str, label: str, routing_for: Callable[[list[str]], Routing],
                       scale: float, *, only_first: bool = False) -> dict[str, Any]:  # fmt: skip
    from contextlib import AsyncExitStack

    p = ll.scaled("latency", scale)
    names = fresh("latency", label, len(p["ttfts"]))
    async with httpx2.AsyncClient(timeout=30) as control, AsyncExitStack() as stack:
        for name, ttft in zip(names, p["ttfts"], strict=True):
            await declare(control, url, name, ttft=ttft)
        providers = await leaves(url, names, stack)
        llm = reliable(providers[:1] if only_first else providers, routing_for(names))
        records = [Record(i) for i in range(p["requests"])]
        messages = [ChatMessage.user("hi")]
        start, cpu0 = time.perf_counter(), time.process_time()
        await closed_loop(
            p["requests"], p["callers"], lambda i: one_request(llm, messages, records[i])
        )
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        server = {n: await server_stats(control, url, n) for n in names}
    out = summary(records, names, wall, cpu, server)
    out["slow_share"] = out["share"][names[-1]]
    return {"case": "latency", "strategy": label, "deployments": names, **out}


async def degradation_case(url: str, scale: float, decay: float) -> dict[str, Any]:
    from contextlib import AsyncExitStack

    p = ll.scaled("degradation", scale)
    names = fresh("degradation", "latency", len(p["ttfts"]))
    count = p["requests"]
    slow_at, fast_at = round(count * p["slow_from"]), round(count * p["slow_until"])
    switched: dict[str, float] = {}
    async with httpx2.AsyncClient(timeout=30) as control, AsyncExitStack() as stack:
        for name, ttft in zip(names, p["ttfts"], strict=True):
            await declare(control, url, name, ttft=ttft)
        providers = await leaves(url, names, stack)
        llm = reliable(providers, Routing(tiers=[names], strategy="latency", decay=decay))
        records = [Record(i) for i in range(count)]
        messages = [ChatMessage.user("hi")]

        async def request(index: int) -> None:
            if index == slow_at:
                await declare(control, url, names[0], ttft=p["slow_ttft"])
                switched["slow_at_s"] = time.perf_counter() - start
            elif index == fast_at:
                await declare(control, url, names[0], ttft=p["ttfts"][0])
                switched["fast_at_s"] = time.perf_counter() - start
            await one_request(llm, messages, records[index])

        start, cpu0 = time.perf_counter(), time.process_time()
        await closed_loop(count, p["callers"], request)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        server = {n: await server_stats(control, url, n) for n in names}
    out = summary(records, names, wall, cpu, server)
    slow_phase = records[slow_at:fast_at]
    on_slow = [r.index for r in slow_phase if r.deployment == names[0]]
    # "Moves away within N requests": the slow deployment's requests started
    # after it slowed, and the last of them counted from the switch.
    out["degraded_requests_in_slow_phase"] = len(on_slow)
    out["last_degraded_request_after_switch"] = (on_slow[-1] - slow_at) if on_slow else 0
    after = records[fast_at:]
    out["came_back"] = any(r.deployment == names[0] for r in after)
    phases = {}
    for phase, chunk in (("before", records[:slow_at]), ("slow", slow_phase), ("after", after)):
        served = [r for r in chunk if r.error is None]
        ttfts = [r.ttft for r in served if r.ttft is not None]
        phases[phase] = {
            "requests": len(chunk),
            "degraded_share": sum(r.deployment == names[0] for r in served) / max(1, len(served)),
            "ttft_p50_s": ll.percentile(ttfts, 0.5),
            "ttft_p99_s": ll.percentile(ttfts, 0.99),
        }
    out["phases"] = phases
    return {"case": "degradation", "strategy": "latency", "deployments": names, **switched, **out}


async def rate_limit_case(url: str, label: str, scale: float, rpm: list[int],
                          configured: bool) -> dict[str, Any]:  # fmt: skip
    from contextlib import AsyncExitStack

    p = ll.scaled("rate_limits", scale, {"rpm": rpm} if rpm else None)
    names = fresh("rate_limits", label, len(p["rpm"]))
    async with httpx2.AsyncClient(timeout=30) as control, AsyncExitStack() as stack:
        for name, limit in zip(names, p["rpm"], strict=True):
            await declare(control, url, name, rpm=limit)
        providers = await leaves(url, names, stack)
        limits = {n: RateLimit(rpm=r) for n, r in zip(names, p["rpm"], strict=True)}
        llm = reliable(
            providers,
            Routing(tiers=[names], strategy="least_busy", max_wait=5.0),
            limits if configured else None,
        )
        records = [Record(i) for i in range(p["requests"])]
        messages = [ChatMessage.user("hi")]
        start, cpu0 = time.perf_counter(), time.process_time()
        late = await open_loop(
            p["requests"], p["rate"], lambda i: one_request(llm, messages, records[i])
        )
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        server = {n: await server_stats(control, url, n) for n in names}
    out = summary(records, names, wall, cpu, server)
    out["server_429s_per_deployment"] = {n: server[n]["rate_limited"] for n in names}
    out["latest_start_behind_schedule_s"] = late
    return {"case": "rate_limits", "strategy": label, "config": p, "deployments": names, **out}


async def affinity_case(url: str, label: str, scale: float, affinity: bool) -> dict[str, Any]:
    from contextlib import AsyncExitStack

    p = ll.scaled("affinity", scale)
    names = fresh("affinity", label, p["deployments"])
    prompts = ll.system_prompts(p["prefixes"], p["system_chars"])
    order = [k for k in range(p["prefixes"]) for _ in range(p["per_prefix"])]
    random.Random(p["seed"]).shuffle(order)
    async with httpx2.AsyncClient(timeout=30) as control, AsyncExitStack() as stack:
        for name in names:
            await declare(control, url, name, prefix_cache=True, cache_size=p["cache_size"])
        providers = await leaves(url, names, stack)
        routing = Routing(
            tiers=[names], strategy="least_busy", affinity="prefix" if affinity else None
        )
        llm = reliable(providers, routing)
        records = [Record(i) for i in range(len(order))]

        async def request(index: int) -> None:
            messages = [
                ChatMessage.system(prompts[order[index]]),
                ChatMessage.user(f"question {index}"),
            ]
            await one_request(llm, messages, records[index])

        start, cpu0 = time.perf_counter(), time.process_time()
        await closed_loop(len(order), p["callers"], request)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        server = {n: await server_stats(control, url, n) for n in names}
    out = summary(records, names, wall, cpu, server)
    hits = sum(s["cache_hits"] for s in server.values())
    misses = sum(s["cache_misses"] for s in server.values())
    loads = [server[n]["requests"] for n in names]
    fair = sum(loads) / len(loads)
    out["cache_hit_ratio"] = hits / (hits + misses) if hits + misses else None
    out["max_load_over_fair"] = max(loads) / fair if fair else None
    out["cache_hit_ratio_ideal"] = 1 - p["prefixes"] / len(order)
    return {"case": "affinity", "strategy": label, "deployments": names, **out}


class _Named(Instant):
    """An instant in-process provider with a name (as deployments have)."""

    def __init__(self, name: str) -> None:
        self.name = name


async def decision_cost(inner: int) -> dict[str, Any]:
    """Microseconds routing adds to one request in process, by strategy.

    A non-streaming call through ``ReliableProvider`` over three instant
    in-process deployments, with routing and without (the plain chain), in
    interleaved runs; the figure is the difference of the medians: the
    decision, the attempt's start and latency sample, its end.
    """
    messages = [ChatMessage.system("You are brief."), ChatMessage.user("hi")]
    deployments = [_Named(n) for n in "abc"]
    variants: dict[str, ReliableProvider] = {"plain chain": ReliableProvider(deployments)}
    for strategy in ("priority", "weighted", "least_busy", "latency"):
        for affinity in (None, "prefix"):
            routing = Routing(tiers=[["a", "b", "c"]], strategy=strategy, affinity=affinity)  # type: ignore[arg-type]
            label = f"{strategy}{' + prefix affinity' if affinity else ''}"
            variants[label] = ReliableProvider(deployments, routing=routing, rng=random.Random(1))
    runs: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(9):
        for label, llm in variants.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                await llm.chat_with_history(messages, "m", 0.0)
            runs[label].append((time.perf_counter() - t0) / inner * 1e6)
    medians = {label: sorted(v)[len(v) // 2] for label, v in runs.items()}
    plain = medians.pop("plain chain")
    figures: dict[str, Any] = {"plain chain: one whole call, us": plain}
    for label, value in medians.items():
        figures[label] = value - plain
    return figures


# -- main ---------------------------------------------------------------------------------


async def reliant_side(url: str, scale: float) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def fastest_only(names: list[str]) -> Routing:
        return Routing(tiers=[names[:1]])

    def progress(text: str) -> None:
        print(f"  reliant: {text}", file=sys.stderr, flush=True)

    progress("latency")
    results["latency"] = {
        "latency": await latency_case(
            url, "latency", lambda n: Routing(tiers=[n], strategy="latency"), scale
        ),
        "least_busy": await latency_case(
            url, "least_busy", lambda n: Routing(tiers=[n], strategy="least_busy"), scale
        ),
        "oracle": await latency_case(url, "oracle", fastest_only, scale, only_first=True),
    }
    progress("degradation")
    results["degradation"] = {"latency": await degradation_case(url, scale, decay=1.0)}
    progress("rate limits")
    results["rate_limits"] = {
        "configured": await rate_limit_case(url, "configured", scale, [], True),
        "learned": await rate_limit_case(url, "learned", scale, [], False),
    }
    tight = [max(1, round(150 * scale))] * 2
    results["rate_limits_tight"] = {
        "configured": await rate_limit_case(url, "tight-configured", scale, tight, True),
        "learned": await rate_limit_case(url, "tight-learned", scale, tight, False),
    }
    progress("affinity")
    results["affinity"] = {
        "prefix": await affinity_case(url, "prefix", scale, True),
        "none": await affinity_case(url, "none", scale, False),
    }
    return results


def ms(seconds: float | None) -> str:
    return "     -" if seconds is None else f"{seconds * 1000:6.0f}"


def render(reliant: dict[str, Any], litellm: dict[str, Any] | None, cost: dict[str, Any]) -> str:
    lines = []
    for case, by in reliant.items():
        lines.append(f"== {case}")
        rows = [(f"reliant {k}", v) for k, v in by.items()]
        if litellm is not None:
            source = litellm["results"].get("rate_limits" if case == "rate_limits_tight" else case)
            if case == "rate_limits_tight":
                source = litellm.get("tight")
            for k, v in (source or {}).items():
                rows.append((f"LiteLLM {k}", v))
        for label, r in rows:
            share = " ".join(f"{v:.2f}" for v in r["share"].values())
            line = (
                f"  {label:34} {r['completed']:>5}/{r['requests']:<5} 429s {r['server_429s']:>4}"
                f"  p50 {ms(r['ttft_p50_s'])} p99 {ms(r['ttft_p99_s'])} ms"
                f"  {r['throughput_rps'] or 0:5.0f} req/s  share {share}"
            )
            if case == "affinity":
                line += f"  hits {r['cache_hit_ratio'] or 0:.2f}"
                line += f"  max/fair {r['max_load_over_fair'] or 0:.2f}"
            if case == "degradation":
                line += "  degraded " + " / ".join(
                    f"{ph} {v['degraded_share']:.2f}" for ph, v in r["phases"].items()
                )
            if r["failed"]:
                line += f"  errors {r['errors']}"
            lines.append(line)
    lines.append("== decision cost: us routing adds per request (difference of medians of 9)")
    for k, v in cost.items():
        lines.append(f"  {k:40} {v:6.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"counts x {ll.QUICK}")
    parser.add_argument("--litellm-python", help="interpreter with litellm (omit: reliant only)")
    parser.add_argument("--out", default=str(RESULTS / "routing.json"))
    args = parser.parse_args()
    scale = ll.QUICK if args.quick else 1.0
    proc, url = ll.start_server(sys.executable)
    try:
        print(f"fake server {url}; scale {scale}", file=sys.stderr)
        reliant = trio.run(reliant_side, url, scale)
        cost = trio.run(decision_cost, 2000 if args.quick else 20000)
        litellm = None
        if args.litellm_python:
            print("  LiteLLM: every case (takes a while)", file=sys.stderr, flush=True)
            litellm = ll.run_subprocess(
                args.litellm_python,
                url,
                quick=args.quick,
                strategies=("latency-based-routing", "least-busy", "usage-based-routing-v2"),
            )
            tight = [max(1, round(150 * scale))] * 2
            litellm["tight"] = ll.run_subprocess(
                args.litellm_python,
                url,
                quick=args.quick,
                cases=("rate_limits",),
                strategies=("usage-based-routing-v2", "simple-shuffle"),
                prefix="lt",
                overrides={"rpm": tight},
            )["results"]["rate_limits"]
    finally:
        proc.terminate()
        proc.wait(10)
    print(render(reliant, litellm, cost))
    data = {
        "benchmark": "routing",
        "scale": scale,
        "reliant": reliant,
        "litellm": litellm,
        "decision_cost_us": cost,
    }
    Path(args.out).write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
