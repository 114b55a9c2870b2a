"""The ``balance`` benchmark: how routing shares traffic while one deployment degrades.

Shared by ``reliant bench --scenario balance`` and ``benchmarks/bench_routing.py``.

What is measured
----------------
Three OpenAI-compatible deployments of one model (``east``, ``west``,
``north``) on the embedded fake server, each answering with a time to first
token of 50 ms. ``concurrency`` callers send ``requests`` streaming requests
through one ``ReliableProvider`` with ``Routing(strategy=...)``. When a
third of the requests have started, ``west`` slows to 500 ms (its fake-server
script is replaced while the run goes on); when two thirds have, it
recovers. For every request the run records when it started, which
deployment served it (the request record of ``fallback_scope``) and its
time to first token, so a report can tell how fast traffic moved away from
the slow deployment and came back.

Real time, real sockets: nothing here uses a virtual clock.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from ._fallback_info import fallback_scope, take_last_request_record
from ._reliable import ReliableProvider
from ._routing import Routing
from ._types import ChatMessage

__all__ = ["BalanceReport", "BalanceSample", "format_balance", "plot_balance", "run_balance"]

DEPLOYMENTS = ("east", "west", "north")
SLOW = "west"
FAST_TTFT = 0.05
SLOW_TTFT = 0.5


@dataclass(frozen=True, slots=True)
class BalanceSample:
    """One request: when it started (s from the run's start), who served, its TTFT (ms)."""

    index: int
    started: float
    served_by: str | None
    ttft_ms: float | None
    phase: str


@dataclass(slots=True)
class BalanceReport:
    """A whole balance run."""

    strategy: str
    requests: int
    concurrency: int
    samples: list[BalanceSample] = field(default_factory=list)

    def phases(self) -> dict[str, dict[str, Any]]:
        """Per phase (before, degraded, recovered): traffic share and TTFT percentiles."""
        out: dict[str, dict[str, Any]] = {}
        for phase in ("before", "degraded", "recovered"):
            chosen = [s for s in self.samples if s.phase == phase]
            ttfts = sorted(s.ttft_ms for s in chosen if s.ttft_ms is not None)
            out[phase] = {
                "requests": len(chosen),
                "share": {
                    d: sum(1 for s in chosen if s.served_by == d) / max(1, len(chosen))
                    for d in DEPLOYMENTS
                },
                "ttft_p50_ms": _pct(ttfts, 50),
                "ttft_p99_ms": _pct(ttfts, 99),
            }
        return out

    def moved_away_after(self) -> int | None:
        """Requests the slow deployment served while degraded (None: no degraded phase)."""
        degraded = [s for s in self.samples if s.phase == "degraded"]
        if not degraded:
            return None
        return sum(1 for s in degraded if s.served_by == SLOW)

    def came_back(self) -> bool:
        """True when the recovered deployment served again in the last phase."""
        return any(s.served_by == SLOW for s in self.samples if s.phase == "recovered")

    def summary(self) -> dict[str, Any]:
        """The figures, JSON-ready."""
        return {
            "strategy": self.strategy,
            "requests": self.requests,
            "concurrency": self.concurrency,
            "phases": self.phases(),
            "slow_deployment_requests_while_degraded": self.moved_away_after(),
            "came_back_after_recovery": self.came_back(),
        }

    def write_json(self, path: str | Path) -> None:
        """The summary and every sample, as JSON."""
        data = {**self.summary(), "samples": [asdict(s) for s in self.samples]}
        Path(path).write_text(json.dumps(data, indent=2) + "\n")


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    k = min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))
    return values[k]


async def run_balance(
    *, strategy: str = "latency", requests: int = 900, concurrency: int = 10, decay: float = 1.0
) -> BalanceReport:
    """Run the balance benchmark on a fresh embedded fake server (see the module comment)."""
    from .providers import OpenAICompatible
    from .testing.fake_server import serve_fake_llm

    if requests < 3 or concurrency < 1:
        raise ValueError("balance needs at least 3 requests and 1 caller")
    report = BalanceReport(strategy, requests, concurrency)
    fast = f"ok:chunks=5:ttft={FAST_TTFT}"
    async with serve_fake_llm() as server, AsyncExitStack() as stack:
        leaves = []
        for name in DEPLOYMENTS:
            server.script(f"bal-{name}", [fast])
            leaves.append(
                await stack.enter_async_context(
                    OpenAICompatible(name=name, base_url=server.openai_base_url, api_key="bench")
                )
            )
        llm = ReliableProvider(
            leaves,
            max_retries=0,
            model_aliases={name: {"bench": f"bal-{name}"} for name in DEPLOYMENTS},
            routing=Routing(tiers=[list(DEPLOYMENTS)], strategy=strategy, decay=decay),  # type: ignore[arg-type]
        )
        started = trio.current_time()
        counter = iter(range(requests))
        third = requests // 3
        messages = [ChatMessage.user("Say something.")]

        async def one(index: int) -> None:
            if index == third:
                server.script(f"bal-{SLOW}", [f"ok:chunks=5:ttft={SLOW_TTFT}"])
            elif index == 2 * third:
                server.script(f"bal-{SLOW}", [fast])
            phase = "before" if index < third else "degraded" if index < 2 * third else "recovered"
            t0 = trio.current_time()
            ttft: float | None = None
            served: str | None = None
            with fallback_scope():
                try:
                    async with llm.stream_chat_with_history(messages, "bench", 0.0) as chunks:
                        async for chunk in chunks:
                            if ttft is None and chunk.delta:
                                ttft = (trio.current_time() - t0) * 1000
                except Exception:
                    pass
                record = take_last_request_record()
                if record is not None:
                    served = record.actual_provider
            report.samples.append(BalanceSample(index, t0 - started, served, ttft, phase))

        async def caller() -> None:
            for index in counter:
                await one(index)

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(caller)
    report.samples.sort(key=lambda s: s.index)
    return report


def format_balance(report: BalanceReport) -> str:
    """The per-phase table as plain text."""
    lines = [
        f"balance: {report.requests} streams, {report.concurrency} callers, "
        f"strategy {report.strategy}; {SLOW} goes from {FAST_TTFT * 1000:.0f} to "
        f"{SLOW_TTFT * 1000:.0f} ms TTFT for the middle third",
        f"{'phase':<10} {'requests':>8} "
        + " ".join(f"{d:>7}" for d in DEPLOYMENTS)
        + f" {'p50 ms':>7} {'p99 ms':>7}",
    ]
    for phase, figures in report.phases().items():
        share = " ".join(f"{figures['share'][d] * 100:6.1f}%" for d in DEPLOYMENTS)
        p50, p99 = figures["ttft_p50_ms"], figures["ttft_p99_ms"]
        lines.append(f"{phase:<10} {figures['requests']:>8} {share} {_num(p50):>7} {_num(p99):>7}")
    lines.append(
        f"{SLOW} served {report.moved_away_after()} of the degraded third; "
        f"{'back' if report.came_back() else 'not back'} after it recovered"
    )
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def plot_balance(report: BalanceReport, path: str | Path, window: int = 30) -> None:
    """Traffic share (rolling over ``window`` requests) and TTFT over time, to PNG or SVG."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise ValueError(f"plot file must end in .png or .svg, not {suffix or '(none)'!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report.samples
    fig, (share_ax, ttft_ax) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    xs = [s.started for s in samples]
    colors = {"east": "#3182bd", "west": "#e6550d", "north": "#31a354"}
    for name in DEPLOYMENTS:
        flags = [1.0 if s.served_by == name else 0.0 for s in samples]
        rolling = [
            statistics.fmean(flags[max(0, i - window + 1) : i + 1]) * 100 for i in range(len(flags))
        ]
        share_ax.plot(xs, rolling, label=name, color=colors[name])
        points = [(s.started, s.ttft_ms) for s in samples if s.served_by == name and s.ttft_ms]
        if points:
            ttft_ax.scatter(*zip(*points, strict=True), s=6, color=colors[name], label=name)
    for s in samples:
        if s.index in (report.requests // 3, 2 * (report.requests // 3)):
            for ax in (share_ax, ttft_ax):
                ax.axvline(s.started, color="grey", linestyle="--", linewidth=0.8)
    share_ax.set_ylabel(f"share of the last {window} requests (%)")
    share_ax.set_title(
        f"routing ({report.strategy}): {SLOW} at {SLOW_TTFT * 1000:.0f} ms between the dashed lines"
    )
    share_ax.legend(loc="upper right")
    ttft_ax.set_yscale("log")
    ttft_ax.set_ylabel("time to first token (ms)")
    ttft_ax.set_xlabel("seconds from the start")
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, format=suffix[1:])
    plt.close(fig)
