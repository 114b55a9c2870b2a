"""Overhead of ReliableProvider on non-streaming calls, in process.

Prints (and writes results/core.json):
- a successful call through ReliableProvider vs the same provider called directly;
- one retry-then-fallback sequence (primary fails twice with a retryable error,
  the fallback serves) — the backoff sleeps run on trio's MockClock with
  autojump, so the figure is reliant's own CPU cost, not the waiting.

Ratios are from one run on the same machine state.

    python benchmarks/bench_core.py
"""

from __future__ import annotations

import trio
import trio.testing

from _util import best_of, row, write_json
from reliant import ChatMessage, Provider, ReliableProvider


class Instant(Provider):
    """Answers at once; fails the first `fail` calls of each round with a 503."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.calls = 0

    async def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> str:
        self.calls += 1
        if self.calls <= self.fail:
            raise RuntimeError("503 Service Unavailable")
        return "ok"


MESSAGES = [ChatMessage.system("s"), ChatMessage.user("hello")]


async def main() -> None:
    direct = Instant()
    reliable = ReliableProvider([("p", Instant())])

    async def call_direct() -> None:
        await direct.chat_with_history(MESSAGES, "m", 0.0)

    async def call_reliable() -> None:
        await reliable.chat_with_history(MESSAGES, "m", 0.0)

    primary = Instant(fail=10**12)
    backup = Instant()
    # health=None: measure the retry ladder itself; with health the open
    # breaker would skip the primary after the first round.
    chain = ReliableProvider([("primary", primary), ("backup", backup)], max_retries=1, health=None)

    async def call_failover() -> None:
        await chain.chat_with_history(MESSAGES, "m", 0.0)

    t_direct = await best_of(call_direct, repeat=15, inner=4000)
    t_reliable = await best_of(call_reliable, repeat=15, inner=4000)
    t_failover = await best_of(call_failover, repeat=15, inner=1000)

    print("non-streaming call, in process (median of 15 runs)")
    print(row("provider called directly", t_direct, t_direct))
    print(row("through ReliableProvider (success)", t_reliable, t_direct))
    print(row("retry, retry, fallback (3 attempts, CPU only)", t_failover, t_direct))
    print(f"  added by ReliableProvider on success: {(t_reliable - t_direct) * 1e6:.2f} us/call")
    path = write_json(
        "core.json",
        {
            "direct_us": t_direct * 1e6,
            "reliable_us": t_reliable * 1e6,
            "retry_retry_fallback_us": t_failover * 1e6,
            "reliable_ratio": t_reliable / t_direct,
            "failover_ratio": t_failover / t_direct,
        },
    )
    print(f"  wrote {path}")


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
