"""Cost of the streaming bridge, in process (no sockets).

Prints (and writes results/stream.json):
- per-item cost of reading a 1,000-item stream through ReliableProvider vs
  reading the same in-process upstream directly, for two upstreams: one that
  yields items back to back (worst case for the bridge: the upstream costs
  nothing, so the hand-off is all there is) and one that checkpoints before
  each item, as a network read does;
- the time from leaving the `async with` of a committed stream whose upstream
  is waiting for data to the bridge having stopped and closed the upstream
  (p50/p99 over 2,000 streams).

The HTTP benchmark (bench_http.py) measures the same on real sockets, which
is where the 1.10x target applies.

    python benchmarks/bench_stream.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncGenerator, Sequence

import trio

from _util import best_of, row, write_json
from reliant import ChatMessage, Provider, ReliableProvider, StreamChunk, StreamOptions
from reliant._provider import stream_from_generator

N_ITEMS = 1000
HI = [ChatMessage.user("hi")]
CHUNKS = [StreamChunk(delta=f"tok{i} ") for i in range(N_ITEMS)] + [StreamChunk.final()]


class Upstream(Provider):
    def __init__(self, *, checkpoint: bool, hang_after: int | None = None) -> None:
        self.checkpoint = checkpoint
        self.hang_after = hang_after

    @property
    def supports_streaming(self) -> bool:
        return True

    async def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> str:
        return ""

    @stream_from_generator
    async def stream_chat_with_history(  # type: ignore[override]
        self,
        messages: Sequence[ChatMessage],
        model: str,
        temperature: float,
        options: StreamOptions = StreamOptions(),  # noqa: B008
    ) -> AsyncGenerator[StreamChunk, None]:
        checkpoint = trio.lowlevel.checkpoint
        for i, chunk in enumerate(CHUNKS):
            if self.hang_after is not None and i == self.hang_after:
                await trio.sleep_forever()
            if self.checkpoint:
                await checkpoint()
            yield chunk


async def read_all(provider: Provider) -> None:
    async with provider.stream_chat_with_history(HI, "m", 0.0) as chunks:
        async for _ in chunks:
            pass


async def stop_latency(samples: int) -> list[float]:
    reliable = ReliableProvider([("p", Upstream(checkpoint=False, hang_after=3))])
    out = []
    for _ in range(samples):
        cm = reliable.stream_chat_with_history(HI, "m", 0.0)
        chunks = await cm.__aenter__()
        for _ in range(3):
            await chunks.__anext__()
        await trio.lowlevel.checkpoint()  # let the bridge reach the hung read
        start = time.perf_counter()
        await cm.__aexit__(None, None, None)
        out.append(time.perf_counter() - start)
    return out


async def main() -> None:
    results: dict[str, object] = {"items": N_ITEMS}
    print(f"reading a {N_ITEMS}-item stream, in process (median of 15 runs), per item")
    for label, checkpoint in (("back-to-back upstream", False), ("checkpointing upstream", True)):
        direct = Upstream(checkpoint=checkpoint)
        reliable = ReliableProvider([("p", Upstream(checkpoint=checkpoint))])
        t_direct = await best_of(lambda p=direct: read_all(p), repeat=15, inner=5) / N_ITEMS
        t_rel = await best_of(lambda p=reliable: read_all(p), repeat=15, inner=5) / N_ITEMS
        print(f" {label}")
        print(row("upstream read directly", t_direct, t_direct))
        print(row("through ReliableProvider", t_rel, t_direct))
        key = "checkpointing" if checkpoint else "back_to_back"
        results[key] = {
            "direct_us_per_item": t_direct * 1e6,
            "reliable_us_per_item": t_rel * 1e6,
            "ratio": t_rel / t_direct,
        }
    stops = await stop_latency(2000)
    p50 = statistics.median(stops)
    p99 = statistics.quantiles(stops, n=100)[98]
    print("leaving a committed stream until the bridge stopped and the upstream closed")
    print(f"  p50 {p50 * 1e6:8.1f} us   p99 {p99 * 1e6:8.1f} us   (2000 streams)")
    results["stop_latency_us"] = {"p50": p50 * 1e6, "p99": p99 * 1e6}
    print(f"  wrote {write_json('stream.json', results)}")


if __name__ == "__main__":
    trio.run(main)
