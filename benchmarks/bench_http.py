"""Streaming over real loopback sockets: overhead, failover latency, cancellation, scale.

Everything runs against reliant's fake LLM server. For the throughput figures
the server is a separate process (so its CPU is not billed to the client);
for the cancellation figure it runs in process, because the disconnect time
it records must be on the same clock as the client's.

Prints (and writes results/http.json), all from one run:

1. Client CPU per chunk, reading a 200-chunk stream: raw httpx2 (own SSE line split +
   ``json.loads``), ``OpenAICompatible`` called directly, and through
   ``ReliableProvider``; both when the server sends the stream in one burst
   and when it paces chunks 0.5 ms apart (each chunk its own network read).
   Target: ReliableProvider within 1.10x of the direct provider.
2. Failover: the first provider answers 500, the second streams; time to
   first token vs the second provider called directly, with the server's
   own time to first token at 0 (the worst case: the failed round trip is
   as long as the answer's) and 50 ms (still fast for an LLM), and vs raw
   httpx2 making the same two requests. Target: within 1.30x.
3. Cancellation: from leaving a stream mid-flight to the server seeing the
   disconnect, p50 and p99. Target: p99 within 5 ms.
4. 1,000 concurrent streams through one ReliableProvider in one process: all
   complete; wall time and peak RSS.

Figures are medians over interleaved repetitions (the variants take turns,
so a noisy moment hurts all of them alike).

    python benchmarks/bench_http.py [--quick]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import httpx2
import trio

from _util import raw_stream, write_json
from reliant import ChatMessage, ReliableProvider
from reliant.providers import OpenAICompatible, create_client
from reliant.testing import serve_fake_llm

HI = [ChatMessage.user("hi")]
CHUNKS = 200


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reliant.testing.fake_server", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    # It prints "openai:    http://HOST:PORT/v1", then the Anthropic (root) URL.
    line = proc.stdout.readline()
    url = next(word for word in line.split() if word.startswith("http://"))
    return proc, url.rstrip("/").removesuffix("/v1")


async def provider_stream(provider: OpenAICompatible | ReliableProvider, model: str) -> int:
    n = 0
    async with provider.stream_chat_with_history(HI, model, 0.0) as chunks:
        async for chunk in chunks:
            if chunk.delta:
                n += 1
    return n


async def timed(fn: Callable[[], Awaitable[int]], expect: int) -> tuple[float, float]:
    """Wall and CPU seconds of one stream.

    Wall time is what a caller waits; CPU time of this process is the
    client's own cost (the server runs in another process), unaffected by
    the pacing sleeps.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    got = await fn()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert got == expect, f"expected {expect} chunks, got {got}"
    return wall, cpu


async def per_chunk(url: str, reps: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    async with create_client() as client:
        direct = OpenAICompatible(
            name="direct", base_url=f"{url}/v1", api_key="sk-b", client=client
        )
        inner = OpenAICompatible(name="inner", base_url=f"{url}/v1", api_key="sk-b", client=client)
        reliable = ReliableProvider([("inner", inner)])
        for label, model in (
            ("burst", f"ok:chunks={CHUNKS}"),
            ("paced", f"ok:chunks={CHUNKS}:gap=0.0005"),
        ):
            variants: dict[str, Callable[[], Awaitable[int]]] = {
                "raw_httpx2": lambda m=model: raw_stream(client, url, m),
                "direct": lambda m=model: provider_stream(direct, m),
                "reliable": lambda m=model: provider_stream(reliable, m),
            }
            walls: dict[str, list[float]] = {k: [] for k in variants}
            cpus: dict[str, list[float]] = {k: [] for k in variants}
            for i in range(reps + 3):
                for name, fn in variants.items():
                    wall, cpu = await timed(fn, CHUNKS)
                    if i >= 3:  # warm-up
                        walls[name].append(wall / CHUNKS)
                        cpus[name].append(cpu / CHUNKS)
            out[f"{label}_wall"] = {k: statistics.median(v) for k, v in walls.items()}
            out[f"{label}_cpu"] = {k: statistics.median(v) for k, v in cpus.items()}
    return out


async def failover_ttft(url: str, reps: int, ttft: float) -> dict[str, float]:
    """Time to first token when the first provider answers 500 and the second streams.

    Compared with the second provider called directly, and with raw httpx2
    doing the same two requests (a 500, then the stream): the floor any
    failover has to pay. ``max_retries=0`` so the 500 fails over at once, as
    a load balancer set up for latency would.
    """

    # Each variant reads its stream to the end (untimed after the first
    # token), so every connection goes back to the pool: a variant that left
    # early would make the next one pay for a new TCP connection.
    async def first_token(provider: OpenAICompatible | ReliableProvider, model: str) -> float:
        start = time.perf_counter()
        ttft = 0.0
        async with provider.stream_chat_with_history(HI, model, 0.0) as chunks:
            async for chunk in chunks:
                if chunk.delta and not ttft:
                    ttft = time.perf_counter() - start
        return ttft

    async def raw_two(client: httpx2.AsyncClient, model: str) -> float:
        start = time.perf_counter()
        body = {"model": "status:500", "messages": [{"role": "user", "content": "hi"}]}
        r = await client.post(f"{url}/v1/chat/completions", json={**body, "stream": True})
        assert r.status_code == 500
        body["model"] = model
        ttft = 0.0
        async with client.stream(
            "POST", f"{url}/v1/chat/completions", json={**body, "stream": True}
        ) as response:
            async for data in response.aiter_bytes():
                if b"tok0" in data and not ttft:
                    ttft = time.perf_counter() - start
        return ttft

    serving = f"ok:chunks=20:ttft={ttft}"
    async with create_client() as client:
        good = OpenAICompatible(name="good", base_url=f"{url}/v1", api_key="sk-b", client=client)
        bad = OpenAICompatible(name="bad", base_url=f"{url}/v1", api_key="sk-b", client=client)
        reliable = ReliableProvider(
            [("bad", bad), ("good", good)],
            max_retries=0,
            health=None,  # every repetition meets the 500 afresh (no breaker skips it)
            model_aliases={"bad": {"m": "status:500"}, "good": {"m": serving}},
        )
        direct, failover, raw = [], [], []
        for i in range(reps + 3):
            d = await first_token(good, serving)
            f = await first_token(reliable, "m")
            r = await raw_two(client, serving)
            if i >= 3:
                direct.append(d)
                failover.append(f)
                raw.append(r)
    return {
        "server_ttft_s": ttft,
        "direct_ttft_s": statistics.median(direct),
        "failover_ttft_s": statistics.median(failover),
        "raw_500_then_stream_s": statistics.median(raw),
    }


async def cancellation(reps: int) -> dict[str, float]:
    latencies = []
    async with serve_fake_llm() as server, create_client() as client:
        provider = OpenAICompatible(
            name="p", base_url=server.openai_base_url, api_key="sk-b", client=client
        )
        reliable = ReliableProvider([("p", provider)])
        for _ in range(reps):
            index = len(server.requests)
            async with reliable.stream_chat_with_history(
                HI, "ok:chunks=100000:gap=0.001", 0.0
            ) as c:
                for _ in range(3):
                    await c.__anext__()
                left = trio.current_time()
            at = await server.wait_for_disconnect(index)
            latencies.append(at - left)
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": statistics.quantiles(latencies, n=100)[98] * 1e3,
        "max_ms": latencies[-1] * 1e3,
    }


async def concurrent(url: str, streams: int) -> dict[str, float]:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    done = 0
    async with create_client() as client:
        provider = OpenAICompatible(name="p", base_url=f"{url}/v1", api_key="sk-b", client=client)
        reliable = ReliableProvider([("p", provider)])

        async def one() -> None:
            nonlocal done
            n = await provider_stream(reliable, "ok:chunks=20:gap=0.05")
            assert n == 20
            done += 1

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(streams):
                nursery.start_soon(one)
        wall = time.perf_counter() - start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "streams": streams,
        "completed": done,
        "wall_s": wall,
        "peak_rss_mb": rss_after / 1024,
        "rss_growth_mb": (rss_after - rss_before) / 1024,
    }


async def main(quick: bool) -> None:
    proc, url = start_server()
    try:
        reps = 5 if quick else 30
        chunks = await per_chunk(url, reps)
        ttfts = [await failover_ttft(url, reps, t) for t in (0.0, 0.05)]
        conc = await concurrent(url, 100 if quick else 1000)
    finally:
        proc.terminate()
        proc.wait()
    cancel = await cancellation(20 if quick else 200)

    print(
        f"1. per chunk, {CHUNKS}-chunk stream over loopback (median of {reps}); "
        "burst = one write, paced = 0.5 ms apart; wall = caller's time, cpu = client CPU"
    )
    print("                 raw httpx2      direct  ReliableProvider  reliable/direct  direct/raw")
    for label, row in chunks.items():
        d = row["direct"]
        print(
            f"   {label:<11} {row['raw_httpx2'] * 1e6:9.2f} us {d * 1e6:9.2f} us "
            f"{row['reliable'] * 1e6:12.2f} us {row['reliable'] / d:12.3f}x "
            f"{d / row['raw_httpx2']:10.2f}x"
        )
    print("   target: reliable/direct <= 1.10")
    print("2. failover (500, then the second provider streams): time to first token")
    for ttft in ttfts:
        ttft["ratio"] = ttft["failover_ttft_s"] / ttft["direct_ttft_s"]
        ttft["ratio_vs_raw_two_requests"] = ttft["failover_ttft_s"] / ttft["raw_500_then_stream_s"]
        ms = {k: v * 1e3 for k, v in ttft.items() if k.endswith("_s")}
        print(
            f"   server TTFT {ms['server_ttft_s']:4.0f} ms: direct {ms['direct_ttft_s']:6.2f} ms"
            f"   failover {ms['failover_ttft_s']:6.2f} ms   {ttft['ratio']:5.3f}x (target <= 1.30)"
            f"   raw 500+stream {ms['raw_500_then_stream_s']:6.2f} ms"
            f" -> {ttft['ratio_vs_raw_two_requests']:5.3f}x"
        )
    print("3. leaving a stream -> server sees the disconnect")
    print(
        f"   p50 {cancel['p50_ms']:6.3f} ms   p99 {cancel['p99_ms']:6.3f} ms   "
        f"max {cancel['max_ms']:6.3f} ms (target p99 <= 5 ms)"
    )
    print(f"4. {conc['streams']:.0f} concurrent streams through one ReliableProvider")
    print(
        f"   completed {conc['completed']:.0f}   wall {conc['wall_s']:.2f} s   "
        f"peak RSS {conc['peak_rss_mb']:.0f} MB (+{conc['rss_growth_mb']:.0f} MB)"
    )
    path = write_json(
        "http.json",
        {
            "per_chunk_s": chunks,
            "reliable_over_direct": {k: v["reliable"] / v["direct"] for k, v in chunks.items()},
            "failover": ttfts,
            "cancellation": cancel,
            "concurrent": conc,
        },
    )
    print(f"   wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="reliant over real loopback sockets")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    trio.run(main, parser.parse_args().quick)
