"""The same figures on trio and on asyncio, in one run, against one fake server.

reliant binds each loop's own primitives (trio's on trio, anyio's on
asyncio: see ``reliant._backend``), so each backend is compared with its
own baseline on the same loop, never across loops:

1. Per chunk, a 200-chunk stream over loopback, client CPU (the server is a
   separate process): ``ReliableProvider`` vs ``OpenAICompatible`` called
   directly, in a burst and paced 0.5 ms apart. Target on asyncio: at most
   1.10x the leaf (the same target as on trio).
2. Time to first token over loopback: a healthy stream through
   ``ReliableProvider`` vs the provider directly (target on asyncio <= 1.15x),
   and a 500 then fallback vs raw httpx2 sending the same two requests on
   the same loop (target on asyncio <= 1.20x).

The variants of each figure are interleaved (``bench_http.per_chunk`` and
``bench_overhead.over_http``, the functions behind the trio figures, run
unchanged on each loop), and the two loops take turns, so a noisy moment of
this shared machine hurts both alike. Prints, and writes
``results/backends.json``.

    python benchmarks/bench_backends.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from _util import write_json
from bench_http import per_chunk, start_server
from bench_overhead import over_http

LOOPS: dict[str, Callable[[Callable[[], Awaitable[Any]]], Any]] = {
    "trio": lambda fn: trio.run(fn),
    "asyncio": lambda fn: asyncio.run(fn()),
}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main(quick: bool) -> None:
    rounds, chunk_reps, ttft_reps = (1, 3, 20) if quick else (3, 5, 100)
    chunk_runs: dict[str, list[dict[str, float]]] = {name: [] for name in LOOPS}
    ttft_runs: dict[str, list[dict[str, float]]] = {name: [] for name in LOOPS}
    proc, url = start_server()
    try:
        for _ in range(rounds):
            for name, run in LOOPS.items():
                figures = run(lambda: per_chunk(url, chunk_reps))
                flat = {
                    f"{label}_{variant}": seconds * 1e6
                    for label, by_variant in figures.items()
                    for variant, seconds in by_variant.items()
                }
                chunk_runs[name].append(flat)
                ttft_runs[name].append(run(lambda: over_http(ttft_reps)))
    finally:
        proc.terminate()
        proc.wait()
    result: dict[str, object] = {}
    print("per chunk, 200-chunk stream over loopback (client CPU; median of rounds)")
    print(
        f"  {'loop':<8} {'burst direct':>13} {'burst reliable':>15} {'ratio':>7}"
        f" {'paced direct':>13} {'paced reliable':>15} {'ratio':>7}"
    )
    for name in LOOPS:
        c = median_of(chunk_runs[name])
        burst = c["burst_cpu_reliable"] / c["burst_cpu_direct"]
        paced = c["paced_cpu_reliable"] / c["paced_cpu_direct"]
        print(
            f"  {name:<8} {c['burst_cpu_direct']:10.2f} us {c['burst_cpu_reliable']:12.2f} us "
            f"{burst:6.3f}x {c['paced_cpu_direct']:10.2f} us {c['paced_cpu_reliable']:12.2f} us "
            f"{paced:6.3f}x"
        )
        t = median_of(ttft_runs[name])
        result[name] = {
            "per_chunk_us": c,
            "per_chunk_burst_ratio": burst,
            "per_chunk_paced_ratio": paced,
            "ttft": t,
        }
    print("time to first token over loopback (median of rounds of interleaved repetitions)")
    for name in LOOPS:
        t = median_of(ttft_runs[name])
        print(
            f"  {name:<8} healthy: direct {t['direct_ttft_ms']:.3f} ms, reliable "
            f"{t['reliable_ttft_ms']:.3f} ms -> {t['healthy_ratio']:.3f}x   "
            f"500 then fallback: raw two {t['raw_two_ttft_ms']:.3f} ms, reliable "
            f"{t['failover_ttft_ms']:.3f} ms -> {t['failover_ratio']:.3f}x"
        )
    print("targets on asyncio: per chunk <= 1.10x, healthy TTFT <= 1.15x, failover <= 1.20x")
    path = write_json("backends.json", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    main(parser.parse_args().quick)
