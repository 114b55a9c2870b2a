"""Mid-stream recovery latency: from the break to the first recovered chunk.

Over real loopback HTTP against the project's fake server: the primary
(OpenAI-compatible) streams 3 pieces and then its connection is cut; the
backup (Anthropic) answers with a server TTFT of 20 ms. For each mode the
figure is the time from the last chunk before the break (the cut follows it
in the same write) to the first chunk of the recovered answer, next to the
backup's own TTFT for the same request sent directly (the original request
for a restart, the request with the prefill for a continuation). Goal: the
recovery costs at most 1.10x the fallback's own TTFT. Medians of 40
repetitions, interleaved so machine noise hits every variant alike.

    python benchmarks/bench_recovery.py
"""

from __future__ import annotations

import statistics
import time

import trio

from _util import write_json
from reliant import ChatMessage, Provider, ReliableProvider
from reliant.providers import Anthropic, OpenAICompatible
from reliant.testing.fake_server import serve_fake_llm

REPS = 40
HI = [ChatMessage.user("hi")]
PRIMARY = "cut:after=3:chunks=12"
BACKUP = "ok:chunks=12:ttft=0.02"
DELIVERED = "tok0 tok1 tok2 "


async def recovery_gap(llm: ReliableProvider) -> float:
    """Seconds from the last chunk before the break to the first recovered one."""
    last_before = first_after = 0.0
    n = 0
    async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
        async for chunk in chunks:
            now = time.perf_counter()
            if chunk.delta:
                n += 1
                if n <= 3:
                    last_before = now
                elif not first_after:
                    first_after = now
    return first_after - last_before


async def direct_ttft(backup: Provider, messages: list[ChatMessage]) -> float:
    start = time.perf_counter()
    first = 0.0
    async with backup.stream_chat_with_history(messages, BACKUP, 0.0) as chunks:
        async for chunk in chunks:
            if chunk.delta and not first:
                first = time.perf_counter() - start
    return first


async def main() -> None:
    async with (
        serve_fake_llm() as server,
        OpenAICompatible(name="primary", base_url=server.openai_base_url, api_key="k") as primary,
        Anthropic(name="backup", base_url=server.anthropic_base_url, api_key="k") as backup,
    ):
        aliases = {"primary": {"m": PRIMARY}, "backup": {"m": BACKUP}}
        llms = {
            mode: ReliableProvider(
                [("primary", primary), ("backup", backup)],
                max_retries=0,
                mid_stream=mode,  # type: ignore[arg-type]
                model_aliases=aliases,
                health=None,  # every repetition meets the break afresh
            )
            for mode in ("restart", "continue")
        }
        prefill = [*HI, ChatMessage.assistant(DELIVERED)]
        samples: dict[str, list[float]] = {
            k: [] for k in ("restart", "continue", "direct", "direct_prefill")
        }
        for _ in range(3):  # warm the connections
            await recovery_gap(llms["continue"])
        for _ in range(REPS):
            samples["restart"].append(await recovery_gap(llms["restart"]))
            samples["direct"].append(await direct_ttft(backup, HI))
            samples["continue"].append(await recovery_gap(llms["continue"]))
            samples["direct_prefill"].append(await direct_ttft(backup, prefill))
    med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    ratio_restart = med["restart"] / med["direct"]
    ratio_continue = med["continue"] / med["direct_prefill"]
    print(f"mid-stream recovery over loopback, backup server TTFT 20 ms (median of {REPS})")
    print(f"  restart:  break -> first new chunk     {med['restart']:7.2f} ms")
    direct = med["direct"]
    print(f"            backup TTFT, direct          {direct:7.2f} ms   ratio {ratio_restart:.3f}x")
    print(f"  continue: break -> first continued     {med['continue']:7.2f} ms")
    print(
        f"            backup TTFT with prefill     {med['direct_prefill']:7.2f} ms   "
        f"ratio {ratio_continue:.3f}x"
    )
    print("  target: at most 1.10x the fallback's own TTFT")
    path = write_json(
        "recovery.json",
        {
            "reps": REPS,
            "median_ms": med,
            "restart_ratio": ratio_restart,
            "continue_ratio": ratio_continue,
            "samples_ms": {k: [x * 1e3 for x in v] for k, v in samples.items()},
        },
    )
    print(f"  wrote {path}")


if __name__ == "__main__":
    trio.run(main)
