"""The LiteLLM half of the routing benchmark (issue #22): LiteLLM's Router over fake deployments.

Every case runs against ONE fake LLM server (``python -m
reliant.testing.fake_server``, its own process), whose deployments
(``/d/<name>/v1``) it declares, changes mid-run and reads over HTTP
(``/_fake/deployments``; see ``reliant.testing._fake_deployments``), so this
file imports neither reliant nor trio: only the standard library, httpx and
litellm (imported when a case runs, so the module itself imports anywhere).
Real time throughout. The cases (``CASES``; ``--quick`` scales counts and
limits by ``QUICK``):

- ``latency``: three deployments, ttft 0.05, 0.05 and 0.2 s; 50 concurrent
  callers, 2,000 streaming requests.
- ``degradation``: three deployments at 0.05 s; the first goes to 0.5 s when
  a third of the requests have started and back to 0.05 s at two thirds;
  traffic share per bucket of requests (by start order) and per phase.
- ``rate_limits``: two deployments at 600 RPM each, enforced by the server
  (token buckets that start full: see the server's docstring); 1,000
  requests started at 30/s (open loop). The deployments tell LiteLLM their
  ``rpm`` too (usage-based routing reads it).
- ``affinity``: 50 system prompts (about 1,100 tokens each) x 40 requests,
  shuffled (seeded), 50 callers, four deployments with ``prefix_cache`` and
  ``cache_size`` 20 (so a prefix spread over every deployment is evicted,
  while one kept on one deployment stays cached: with the server's default
  of 4,096, random routing already reaches 90 %). Cache hit ratio from the
  server's counters; max load / fair share from its request counts.

Each (case, strategy) gets fresh deployments (``<prefix>-<case>-<strategy>-<letter>``,
a run id appended), so runs never share buckets or caches. The Router uses
LiteLLM's defaults (``num_retries=2``, ``allowed_fails=3``,
``cooldown_time=5``) except the OpenAI SDK's own retries (``max_retries=0``
per deployment), so routing decisions are the Router's. The served
deployment of each request is LiteLLM's ``_hidden_params["model_id"]``
(the deployment's ``model_info.id``).

Importable (in a virtualenv with litellm and httpx)::

    import _routing_litellm as rl
    figures = asyncio.run(rl.run_all("http://127.0.0.1:PORT", quick=True))
    one = asyncio.run(rl.run_case("latency", "least-busy", url, scale=rl.QUICK))

or from any interpreter, through LiteLLM's (prints and returns the same JSON)::

    rl.run_subprocess("/tmp/litellm-venv/bin/python", url, quick=True)

By hand (starts its own fake server with ``--server-python`` if no ``--url``)::

    LITELLM_LOCAL_MODEL_COST_MAP=True /tmp/litellm-venv/bin/python \\
        benchmarks/_routing_litellm.py --url http://127.0.0.1:PORT --quick
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

# Before litellm is imported: no network fetch of the model cost map.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")

HERE = Path(__file__).parent
API_KEY = "sk-bench"
GROUP = "bench"
CHUNKS = 8  # content pieces per answer, sent at once after the ttft
STRATEGIES = ("latency-based-routing", "least-busy", "usage-based-routing-v2", "simple-shuffle")
SHORT = {
    "latency-based-routing": "lat",
    "least-busy": "busy",
    "usage-based-routing-v2": "usage",
    "simple-shuffle": "shuf",
}
QUICK = 0.2  # --quick: counts (and rate limits) scaled by this

# The cases at full scale: the reliant side of bench_routing.py reads the same numbers.
CASES: dict[str, dict[str, Any]] = {
    "latency": {"ttfts": [0.05, 0.05, 0.2], "callers": 50, "requests": 2000},
    "degradation": {
        "ttfts": [0.05, 0.05, 0.05],
        "slow_ttft": 0.5,
        "slow_from": 1 / 3,  # fraction of requests started when deployment a slows down
        "slow_until": 2 / 3,  # ... and when it recovers
        "callers": 50,
        "requests": 2000,
        "buckets": 20,
    },
    "rate_limits": {"rpm": [600, 600], "rate": 30.0, "requests": 1000},
    "affinity": {
        "deployments": 4,
        "prefixes": 50,
        "per_prefix": 40,
        "callers": 50,
        "cache_size": 20,
        "system_chars": 4400,
        "seed": 22,
    },
}


def scaled(
    case: str, scale: float = 1.0, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The parameters of ``case`` with its counts (and rate limits) multiplied by ``scale``.

    ``overrides`` replaces parameters after scaling (``{"callers": 10}``).
    """
    params = json.loads(json.dumps(CASES[case]))
    unknown = set(overrides or {}) - set(params)
    if unknown:
        raise ValueError(f"{case} has no parameter {sorted(unknown)[0]!r}: {sorted(params)}")
    if scale != 1.0:
        _scale(params, scale)
    params.update(overrides or {})
    return params


def _scale(params: dict[str, Any], scale: float) -> None:
    for key in ("requests", "per_prefix"):
        if key in params:
            params[key] = max(1, round(params[key] * scale))
    if "rpm" in params:
        # The same share of the bucket is used at the same offered rate.
        params["rpm"] = [max(1, round(r * scale)) for r in params["rpm"]]


# -- the fake server's controls -------------------------------------------------------------


async def declare(client: Any, url: str, name: str, **settings: Any) -> dict[str, Any]:
    """Declare deployment ``name`` on the fake server, or change it; its settings and stats."""
    response = await client.post(f"{url}/_fake/deployments/{name}", json=settings)
    if response.status_code != 200:
        raise RuntimeError(f"fake server refused {name} {settings}: {response.text}")
    return dict(response.json())


async def stats(client: Any, url: str, name: str) -> dict[str, Any]:
    """The server's counters of deployment ``name``."""
    response = await client.get(f"{url}/_fake/deployments/{name}")
    response.raise_for_status()
    return dict(response.json()["stats"])


# -- driving the Router ---------------------------------------------------------------------


def deployment(url: str, name: str, rpm: int | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": f"openai/ok:chunks={CHUNKS}",
        "api_base": f"{url}/d/{name}/v1",
        "api_key": API_KEY,
        "max_retries": 0,  # the OpenAI SDK's own retries: routing is the Router's
    }
    if rpm is not None:
        params["rpm"] = rpm
    return {"model_name": GROUP, "litellm_params": params, "model_info": {"id": name}}


def make_router(
    url: str, names: Sequence[str], strategy: str, rpms: Sequence[int] | None = None
) -> Any:
    import litellm  # type: ignore[import-not-found]

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    model_list = [
        deployment(url, name, rpms[i] if rpms is not None else None) for i, name in enumerate(names)
    ]
    return litellm.Router(model_list=model_list, routing_strategy=strategy)


class Record:
    """One request: when it started (index), where it went, its TTFT, how it ended."""

    __slots__ = ("deployment", "error", "index", "ttft")

    def __init__(self, index: int) -> None:
        self.index = index
        self.deployment: str | None = None
        self.ttft: float | None = None
        self.error: str | None = None


async def one_request(router: Any, messages: list[dict[str, str]], record: Record) -> None:
    """Stream one answer through the Router; fill in ``record``."""
    start = time.perf_counter()
    try:
        stream = await router.acompletion(model=GROUP, messages=messages, stream=True)
        record.deployment = (getattr(stream, "_hidden_params", None) or {}).get("model_id")
        pieces = 0
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                if pieces == 0:
                    record.ttft = time.perf_counter() - start
                pieces += 1
        if pieces != CHUNKS:
            record.error = f"short stream ({pieces} of {CHUNKS} pieces)"
    except Exception as exc:  # a failed request is a figure, not a crash
        status = getattr(exc, "status_code", None)
        record.error = f"{type(exc).__name__}" + (f" {status}" if status else "")


async def closed_loop(
    count: int,
    callers: int,
    request: Callable[[int], Awaitable[None]],
) -> None:
    """``callers`` tasks taking request indices 0..count-1 in turn, each as soon as it is free."""
    indices = iter(range(count))

    async def caller() -> None:
        for index in indices:
            await request(index)

    await asyncio.gather(*(caller() for _ in range(callers)))


async def open_loop(count: int, rate: float, request: Callable[[int], Awaitable[None]]) -> float:
    """Start request i at ``i / rate`` seconds (absolute schedule), whatever the others do.

    Returns the latest start behind its schedule, in seconds (a busy loop starts late).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    late = 0.0
    for index in range(count):
        due = start + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        late = max(late, loop.time() - due)
        tasks.append(asyncio.ensure_future(request(index)))
    await asyncio.gather(*tasks)
    return late


async def drain() -> None:
    """Wait (untimed) for what LiteLLM leaves running (logging, bookkeeping) after a run."""
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    if pending:
        await asyncio.wait(pending, timeout=5.0)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1), nearest rank; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def shares(records: Sequence[Record], names: Sequence[str]) -> dict[str, float]:
    """Fraction of the completed requests each deployment served."""
    served = Counter(r.deployment for r in records if r.error is None)
    total = sum(served.values())
    return {name: (served[name] / total if total else 0.0) for name in names}


def summary(
    records: Sequence[Record],
    names: Sequence[str],
    wall: float,
    cpu: float,
    server: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The figures every case reports (``cpu``: this process's CPU seconds during the run)."""
    ttfts = [r.ttft for r in records if r.error is None and r.ttft is not None]
    errors = Counter(r.error for r in records if r.error is not None)
    return {
        "requests": len(records),
        "completed": len(records) - sum(errors.values()),
        "failed": sum(errors.values()),
        "errors": dict(errors),
        "server_429s": sum(s["rate_limited"] for s in server.values()),
        "share": shares(records, names),
        "server_requests": {name: server[name]["requests"] for name in names},
        "ttft_p50_s": percentile(ttfts, 0.5),
        "ttft_p99_s": percentile(ttfts, 0.99),
        "ttft_mean_s": statistics.fmean(ttfts) if ttfts else None,
        "wall_s": wall,
        "throughput_rps": len(records) / wall if wall > 0 else None,
        # The client's own CPU: near 1 s per second of wall time, the Router is the bottleneck
        # and TTFT measures its queue more than the deployments.
        "client_cpu_s": cpu,
        "client_cpu_ms_per_request": 1000 * cpu / len(records) if records else None,
    }


def names_for(prefix: str, case: str, strategy: str, count: int, run: str) -> list[str]:
    return [
        f"{prefix}-{case[:4]}-{SHORT.get(strategy, strategy[:5])}-{chr(97 + i)}-{run}"
        for i in range(count)
    ]


# -- the cases ------------------------------------------------------------------------------


async def latency_case(
    url: str,
    strategy: str,
    *,
    scale: float = 1.0,
    prefix: str = "ll",
    run: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Three deployments, one slow (0.2 s): does the Router keep traffic on the fast ones?"""
    import httpx  # type: ignore[import-not-found]

    p = scaled("latency", scale, overrides)
    run = run or uuid.uuid4().hex[:6]
    names = names_for(prefix, "latency", strategy, len(p["ttfts"]), run)
    async with httpx.AsyncClient(timeout=30) as control:
        for name, ttft in zip(names, p["ttfts"], strict=True):
            await declare(control, url, name, ttft=ttft)
        router = make_router(url, names, strategy)
        records = [Record(i) for i in range(p["requests"])]
        messages = [{"role": "user", "content": "hi"}]
        start, cpu0 = time.perf_counter(), time.process_time()
        await closed_loop(
            p["requests"], p["callers"], lambda i: one_request(router, messages, records[i])
        )
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        await drain()
        server = {name: await stats(control, url, name) for name in names}
    out = summary(records, names, wall, cpu, server)
    out["slow_share"] = out["share"][names[-1]]
    return {"case": "latency", "strategy": strategy, "config": p, "deployments": names, **out}


async def degradation_case(
    url: str,
    strategy: str,
    *,
    scale: float = 1.0,
    prefix: str = "ll",
    run: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Deployment a slows from 0.05 to 0.5 s ttft mid-run and recovers: share over time."""
    import httpx

    p = scaled("degradation", scale, overrides)
    run = run or uuid.uuid4().hex[:6]
    names = names_for(prefix, "degradation", strategy, len(p["ttfts"]), run)
    count = p["requests"]
    slow_at, fast_at = round(count * p["slow_from"]), round(count * p["slow_until"])
    async with httpx.AsyncClient(timeout=30) as control:
        for name, ttft in zip(names, p["ttfts"], strict=True):
            await declare(control, url, name, ttft=ttft)
        router = make_router(url, names, strategy)
        records = [Record(i) for i in range(count)]
        messages = [{"role": "user", "content": "hi"}]
        switched: dict[str, float] = {}

        async def request(index: int) -> None:
            # The caller that starts request slow_at (fast_at) first changes the server.
            if index == slow_at:
                await declare(control, url, names[0], ttft=p["slow_ttft"])
                switched["slow_at_s"] = time.perf_counter() - start
            elif index == fast_at:
                await declare(control, url, names[0], ttft=p["ttfts"][0])
                switched["fast_at_s"] = time.perf_counter() - start
            await one_request(router, messages, records[index])

        start, cpu0 = time.perf_counter(), time.process_time()
        await closed_loop(count, p["callers"], request)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        await drain()
        server = {name: await stats(control, url, name) for name in names}
    out = summary(records, names, wall, cpu, server)
    size = max(1, count // p["buckets"])
    over_time = []
    for first in range(0, count, size):
        chunk = records[first : first + size]
        over_time.append({"from": first, "share": shares(chunk, names)})
    phases = {}
    for phase, (lo, hi) in {
        "before": (0, slow_at),
        "slow": (slow_at, fast_at),
        "after": (fast_at, count),
    }.items():
        chunk = records[lo:hi]
        ttfts = [r.ttft for r in chunk if r.ttft is not None and r.error is None]
        phases[phase] = {
            "requests": len(chunk),
            "degraded_share": shares(chunk, names)[names[0]],
            "ttft_p50_s": percentile(ttfts, 0.5),
            "ttft_p99_s": percentile(ttfts, 0.99),
        }
    return {
        "case": "degradation",
        "strategy": strategy,
        "config": p,
        "deployments": names,
        "bucket_size": size,
        "share_over_time": over_time,
        "phases": phases,
        **switched,
        **out,
    }


async def rate_limit_case(
    url: str,
    strategy: str,
    *,
    scale: float = 1.0,
    prefix: str = "ll",
    run: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Two deployments at 600 RPM enforced by the server; 1,000 requests at 30/s: 429s seen."""
    import httpx

    p = scaled("rate_limits", scale, overrides)
    run = run or uuid.uuid4().hex[:6]
    names = names_for(prefix, "rate_limits", strategy, len(p["rpm"]), run)
    async with httpx.AsyncClient(timeout=30) as control:
        for name, rpm in zip(names, p["rpm"], strict=True):
            await declare(control, url, name, rpm=rpm)
        router = make_router(url, names, strategy, p["rpm"])
        records = [Record(i) for i in range(p["requests"])]
        messages = [{"role": "user", "content": "hi"}]
        start, cpu0 = time.perf_counter(), time.process_time()
        late = await open_loop(
            p["requests"], p["rate"], lambda i: one_request(router, messages, records[i])
        )
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        await drain()
        server = {name: await stats(control, url, name) for name in names}
    out = summary(records, names, wall, cpu, server)
    out["server_429s_per_deployment"] = {name: server[name]["rate_limited"] for name in names}
    out["latest_start_behind_schedule_s"] = late
    return {"case": "rate_limits", "strategy": strategy, "config": p, "deployments": names, **out}


def system_prompts(count: int, chars: int) -> list[str]:
    """``count`` distinct system prompts of ``chars`` characters each."""
    filler = "Answer briefly and cite the relevant policy section when one applies. "
    prompts = []
    for k in range(count):
        head = f"You are support assistant number {k} for product line {k * 7919 % 1000}. "
        body = (head + filler * (chars // len(filler) + 1))[:chars]
        prompts.append(body)
    return prompts


async def affinity_case(
    url: str,
    strategy: str,
    *,
    scale: float = 1.0,
    prefix: str = "ll",
    run: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """50 system prompts x 40 requests over four prefix-caching deployments: hits and balance."""
    import httpx

    p = scaled("affinity", scale, overrides)
    run = run or uuid.uuid4().hex[:6]
    names = names_for(prefix, "affinity", strategy, p["deployments"], run)
    prompts = system_prompts(p["prefixes"], p["system_chars"])
    order = [k for k in range(p["prefixes"]) for _ in range(p["per_prefix"])]
    random.Random(p["seed"]).shuffle(order)
    async with httpx.AsyncClient(timeout=30) as control:
        for name in names:
            await declare(control, url, name, prefix_cache=True, cache_size=p["cache_size"])
        router = make_router(url, names, strategy)
        records = [Record(i) for i in range(len(order))]

        async def request(index: int) -> None:
            messages = [
                {"role": "system", "content": prompts[order[index]]},
                {"role": "user", "content": f"question {index}"},
            ]
            await one_request(router, messages, records[index])

        start, cpu0 = time.perf_counter(), time.process_time()
        await closed_loop(len(order), p["callers"], request)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        await drain()
        server = {name: await stats(control, url, name) for name in names}
    out = summary(records, names, wall, cpu, server)
    hits = sum(s["cache_hits"] for s in server.values())
    misses = sum(s["cache_misses"] for s in server.values())
    loads = [server[name]["requests"] for name in names]
    fair = sum(loads) / len(loads)
    out["cache_hits"] = hits
    out["cache_misses"] = misses
    out["cache_hit_ratio"] = hits / (hits + misses) if hits + misses else None
    out["max_load_over_fair"] = max(loads) / fair if fair else None
    # The best any router can do: each prefix misses once (one deployment each).
    out["cache_hit_ratio_ideal"] = 1 - p["prefixes"] / len(order)
    return {"case": "affinity", "strategy": strategy, "config": p, "deployments": names, **out}


RUNNERS = {
    "latency": latency_case,
    "degradation": degradation_case,
    "rate_limits": rate_limit_case,
    "affinity": affinity_case,
}


async def run_case(
    case: str,
    strategy: str,
    url: str,
    *,
    scale: float = 1.0,
    prefix: str = "ll",
    run: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One case under one LiteLLM routing strategy; a plain dict of figures.

    ``scale`` multiplies its counts (``QUICK`` for --quick), ``overrides``
    replaces parameters of ``CASES[case]`` (``{"callers": 10}``), ``prefix``
    and ``run`` make the deployment names (``<prefix>-<case>-<strategy>-<letter>-<run>``).
    """
    runner = RUNNERS[case]
    return await runner(url, strategy, scale=scale, prefix=prefix, run=run, overrides=overrides)


async def warm_up(url: str, prefix: str = "ll") -> None:
    """A few untimed requests first, so import and client set-up cost no case anything."""
    import httpx

    name = f"{prefix}-warm-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(timeout=30) as control:
        await declare(control, url, name)
    router = make_router(url, [name], "simple-shuffle")
    for _ in range(5):
        record = Record(0)
        await one_request(router, [{"role": "user", "content": "hi"}], record)
        if record.error is not None:
            raise RuntimeError(f"warm-up request failed: {record.error}")
    await drain()


async def run_all(
    url: str,
    *,
    quick: bool = False,
    cases: Sequence[str] = tuple(CASES),
    strategies: Sequence[str] = STRATEGIES,
    prefix: str = "ll",
    progress: Callable[[str], None] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every case under every strategy: ``{"results": {case: {strategy: figures}}, ...}``.

    ``overrides`` replaces parameters of every case run (after scaling).
    """
    scale = QUICK if quick else 1.0
    run = uuid.uuid4().hex[:6]
    await warm_up(url, prefix)
    results: dict[str, dict[str, Any]] = {}
    for case in cases:
        for strategy in strategies:
            if progress is not None:
                progress(f"litellm {case} {strategy}")
            figures = await run_case(
                case, strategy, url, scale=scale, prefix=prefix, run=run, overrides=overrides
            )
            results.setdefault(case, {})[strategy] = figures
    versions = {}
    for dist in ("litellm", "httpx", "openai"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "results": results,
        "scale": scale,
        "router_settings": {
            "num_retries": "LiteLLM default (2)",
            "allowed_fails": "LiteLLM default (3)",
            "cooldown_time": "LiteLLM default (5 s)",
            "openai_sdk_max_retries": 0,
        },
        "versions": versions,
        "python": sys.version.split()[0],
    }


def render(figures: dict[str, Any]) -> str:
    """:func:`run_all`'s figures as a short text table, one line per (case, strategy)."""
    lines = []
    for case, by_strategy in figures["results"].items():
        lines.append(f"== {case}")
        for strategy, r in by_strategy.items():
            share = " ".join(f"{v:.2f}" for v in r["share"].values())
            line = (
                f"{strategy:24} {r['completed']:>5}/{r['requests']:<5} 429s {r['server_429s']:>4}"
                f"  ttft p50 {r['ttft_p50_s'] or 0:.3f} p99 {r['ttft_p99_s'] or 0:.3f} s"
                f"  {r['throughput_rps'] or 0:.0f} req/s"
                f"  cpu {r['client_cpu_ms_per_request'] or 0:.0f} ms/req  share {share}"
            )
            if case == "affinity":
                hits, ideal = r["cache_hit_ratio"] or 0, r["cache_hit_ratio_ideal"]
                line += f"  hits {hits:.2f} (ideal {ideal:.2f})"
                line += f"  max/fair {r['max_load_over_fair'] or 0:.2f}"
            if case == "degradation":
                line += "  degraded share " + " / ".join(
                    f"{phase} {p['degraded_share']:.2f}" for phase, p in r["phases"].items()
                )
            lines.append(line)
    return "\n".join(lines)


# -- from another interpreter ---------------------------------------------------------------


def run_subprocess(
    python: str,
    url: str,
    *,
    quick: bool = False,
    cases: Sequence[str] = tuple(CASES),
    strategies: Sequence[str] = STRATEGIES,
    prefix: str = "ll",
    timeout: float = 3600,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`run_all` under LiteLLM's interpreter ``python``; its JSON as a dict."""
    env = {
        **os.environ,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
    }
    argv = [python, str(Path(__file__)), "--url", url, "--prefix", prefix]
    argv += ["--cases", ",".join(cases), "--strategies", ",".join(strategies)]
    if quick:
        argv.append("--quick")
    if overrides:
        argv += ["--overrides", json.dumps(overrides)]
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"LiteLLM routing side failed ({done.returncode}): {done.stderr[-2000:]}"
        )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def start_server(python: str) -> tuple[subprocess.Popen[str], str]:
    """``python -m reliant.testing.fake_server --port 0``; the process and its root URL."""
    proc = subprocess.Popen(
        [python, "-m", "reliant.testing.fake_server", "--port", "0", "--host", "127.0.0.1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    urls = [word for word in line.split() if word.startswith("http://127.0.0.1:")]
    if not urls:
        proc.terminate()
        proc.wait(timeout=10)
        raise RuntimeError(f"fake server did not print its URL: {line!r}")
    return proc, urls[0].rstrip("/").removesuffix("/v1")


def main() -> int:
    parser = argparse.ArgumentParser(description="LiteLLM side of the routing benchmark")
    parser.add_argument("--url", help="fake server root URL (no /v1); default: start one")
    parser.add_argument(
        "--server-python",
        default=os.environ.get("RELIANT_PYTHON", sys.executable),
        help="interpreter that can import reliant, to start the fake server without --url",
    )
    parser.add_argument("--quick", action="store_true", help=f"counts x {QUICK}")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--prefix", default="ll", help="deployment name prefix")
    parser.add_argument("--out", help="also write the JSON to this file")
    parser.add_argument(
        "--overrides", help='JSON: parameters replaced in every case, e.g. {"rpm": [30, 30]}'
    )
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    strategies = [s for s in args.strategies.split(",") if s]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; cases: {', '.join(CASES)}")
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(args.server_python)
    try:
        results = asyncio.run(
            run_all(
                url,
                quick=args.quick,
                cases=cases,
                strategies=strategies,
                prefix=args.prefix,
                progress=lambda text: print(text, file=sys.stderr, flush=True),
                overrides=json.loads(args.overrides) if args.overrides else None,
            )
        )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    print(render(results), file=sys.stderr)
    text = json.dumps(results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
