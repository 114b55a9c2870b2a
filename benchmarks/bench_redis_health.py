"""RedisHealth: what one shared decision costs, against a local redis-server it starts.

Prints (and writes results/redis_health.json):

1. Per-decision latency, p50/p99 over many sequential calls: ``admit`` of a
   new request on a healthy route (budget counted, breaker read) and
   ``record`` of a success. Each is one EVALSHA round trip. Target: p99
   under 1 ms on loopback.
2. Added latency of a healthy request through ``ReliableProvider`` with
   RedisHealth vs LocalHealth, on an instant ScriptedProvider: time to the
   first chunk of a stream and the whole of a non-streaming call. Both pay
   one round trip (the admit); the success of a healthy route is not sent.

Needs ``redis-server`` on PATH and the ``redis`` extra.

    python benchmarks/bench_redis_health.py [--n N]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import trio

from _util import write_json
from reliant import ChatMessage, HealthStore, LocalHealth, RedisHealth, ReliableProvider
from reliant._health import Outcome
from reliant.testing import Reply, ScriptedProvider, Stream

MESSAGES = [ChatMessage.user("hello")]


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found (apt-get install redis-server / brew install redis)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp]
        proc = subprocess.Popen([*args, "--appendonly", "no"], stdout=subprocess.DEVNULL)
        try:
            for _ in range(500):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
                        c.sendall(b"PING\r\n")
                        if c.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    time.sleep(0.01)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait()


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    for _ in range(min(200, n)):
        await fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return samples


async def request_latency(store: HealthStore, n: int) -> tuple[list[float], list[float]]:
    streamer = ScriptedProvider([Stream(["a", "b"])], name="p")
    replier = ScriptedProvider([Reply("a")], name="p")
    stream_llm = ReliableProvider([("p", streamer)], health=store)
    reply_llm = ReliableProvider([("p", replier)], health=store)

    async def first_chunk() -> float:
        start = time.perf_counter()
        async with stream_llm.stream_chat_with_history(MESSAGES, "m", 0.0) as chunks:
            async for _ in chunks:
                return time.perf_counter() - start
        raise AssertionError("no chunk")

    for _ in range(min(200, n)):
        await first_chunk()
    ttft = [await first_chunk() for _ in range(n)]
    whole = await timed(lambda: reply_llm.chat_with_history(MESSAGES, "m", 0.0), n)
    return ttft, whole


def us(seconds: float) -> float:
    return round(seconds * 1e6, 1)


async def main(n: int) -> None:
    with redis_server() as url:
        async with RedisHealth(url, prefix=f"bench-{uuid.uuid4().hex[:8]}:") as redis:
            key = ("p", "m")
            admit = await timed(lambda: redis.admit(key, new_request=True), n)
            # A failure that does not count keeps the route closed: one round trip.
            failure = Outcome(ok=False, counts=False, error="bad request")
            record = await timed(lambda: redis.record(key, failure), n)
            await redis.admit(key)  # the mirror sees the route closed, no failures
            skipped = await timed(lambda: redis.record(key, Outcome(ok=True)), n)
            redis_ttft, redis_whole = await request_latency(redis, n)
            assert redis.shared
        local_ttft, local_whole = await request_latency(LocalHealth(), n)

    results: dict[str, object] = {"n": n}
    print(f"RedisHealth on loopback, {n} sequential samples each (us)")
    print(f"  {'':44} {'p50':>9} {'p99':>9}")
    for label, samples in (
        ("admit (new request, healthy route)", admit),
        ("record (failure)", record),
        ("record (success, healthy route: not sent)", skipped),
        ("stream TTFT, LocalHealth", local_ttft),
        ("stream TTFT, RedisHealth", redis_ttft),
        ("non-streaming call, LocalHealth", local_whole),
        ("non-streaming call, RedisHealth", redis_whole),
    ):
        p50, p99 = pct(samples, 0.5), pct(samples, 0.99)
        print(f"  {label:44} {us(p50):9.1f} {us(p99):9.1f}")
        results[label] = {"p50_us": us(p50), "p99_us": us(p99)}
    added_ttft = statistics.median(redis_ttft) - statistics.median(local_ttft)
    added_whole = statistics.median(redis_whole) - statistics.median(local_whole)
    print(f"  added TTFT (p50):                        {us(added_ttft):9.1f} us")
    print(f"  added to a non-streaming call (p50):     {us(added_whole):9.1f} us")
    verdict = "met" if max(pct(admit, 0.99), pct(record, 0.99)) < 1e-3 else "MISSED"
    print(f"  target p99 < 1 ms per decision: {verdict}")
    results["added_ttft_p50_us"] = us(added_ttft)
    results["added_call_p50_us"] = us(added_whole)
    results["target_p99_under_1ms"] = verdict == "met"
    path = write_json("redis_health.json", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    trio.run(main, parser.parse_args().n)
