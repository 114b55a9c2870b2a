"""Failover latency measurement, shared by ``reliant bench`` and ``benchmarks/bench_failover.py``.

What is measured
----------------
For every repetition of a scenario, two streams are timed back to back in
the same trio run, on the same provider objects (same connection pools):

1. **reliant**: the request through ``ReliableProvider``; time to first token
   (TTFT) is from opening the stream to the first chunk carrying text, so it
   includes every retry, backoff, timeout and failover that happened first.
2. **direct**: the same request sent straight to the provider and model that
   ended up serving (known from step 1's ``fallback_scope``).

The difference of the two, paired per repetition, is the latency reliant
*added* by failing over. Retries and fallbacks are counted from reliant's
structured log records: a record with a ``backoff`` field is a retry of the
same candidate; a warning that gives a candidate up ("moving on") is a
fallback to the next one.

Built-in scenarios run against the embedded fake LLM server (in-process, on
loopback, real HTTP through the real providers): ``primary`` speaks the
OpenAI protocol and ``backup`` the Anthropic one. Scenario scripts are
re-applied before every repetition so each one starts from the same state.
One unmeasured warm-up repetition opens the connections first.

This module is library-private and imports neither rich nor matplotlib.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import random
import statistics
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from . import __version__
from ._fallback_info import fallback_scope, take_last_provider_fallback
from ._health import LocalHealth
from ._hedge import Hedge
from ._provider import Provider
from ._reliable import ReliableProvider
from ._types import ChatMessage

if TYPE_CHECKING:
    from .testing.fake_server import FakeLLMServer

__all__ = [
    "SCENARIOS",
    "SCENARIO_NAMES",
    "TABLE_COLUMNS",
    "TABLE_NOTE",
    "TABLE_TITLE",
    "BenchReport",
    "Sample",
    "Scenario",
    "ScenarioResult",
    "Target",
    "format_table",
    "percentile",
    "plot",
    "run_builtin",
    "run_targets",
    "scenario_target",
    "table_rows",
    "table_title",
]

PROMPT = [ChatMessage.user("Say something.")]
ANSWER = "ok:chunks=20"  # the serving answer on the fake server: 20 pieces, at once


@dataclass(frozen=True, slots=True)
class Scenario:
    """A built-in failover scenario on the fake server.

    Attributes:
        name: Short identifier used by ``--scenario``.
        description: One line saying what fails and what serves.
        chain: Provider names in priority order (``primary``, ``backup``).
        model: The model requested.
        script: model id -> behaviours, re-applied before each repetition.
        model_aliases: provider -> {requested model: model id on that provider}.
        model_fallbacks: model -> models to try after it.
        max_retries: Retries per (provider, model).
        base_backoff: First backoff (seconds).
        first_chunk_timeout: Seconds before a silent stream fails over.
        keep_health: False (most scenarios): every repetition starts with
            fresh provider health, so each measures the first encounter
            with the fault; True: health carries over, so repetitions
            measure the steady state (a breaker that is already open).
        tail: model -> (probability, behaviours): in that share of the
            repetitions (drawn from a seeded generator) the model behaves
            so instead of as ``script`` says, e.g. a heavy-tailed TTFT.
        hedge: The ``Hedge`` policy of the ``ReliableProvider``, if any.
    """

    name: str
    description: str
    chain: tuple[str, ...]
    model: str
    script: Mapping[str, Sequence[str]]
    model_aliases: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    model_fallbacks: Mapping[str, Sequence[str]] = field(default_factory=dict)
    max_retries: int = 0
    base_backoff: float = 0.05
    first_chunk_timeout: float = 5.0
    keep_health: bool = False
    tail: Mapping[str, tuple[float, Sequence[str]]] = field(default_factory=dict)
    hedge: Hedge | None = None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="healthy",
        description="primary streams at once; no failover (the overhead of the wrapper)",
        chain=("primary", "backup"),
        model="bench-ok",
        script={"bench-ok": [ANSWER]},
    ),
    Scenario(
        name="500-then-fallback",
        description="primary answers 500 (no retry), backup streams",
        chain=("primary", "backup"),
        model="bench-model",
        script={"bench-500": ["status:500"], "bench-ok": [ANSWER]},
        model_aliases={
            "primary": {"bench-model": "bench-500"},
            "backup": {"bench-model": "bench-ok"},
        },
    ),
    Scenario(
        name="429-retry-after",
        description="primary alone answers 429 with retry-after-ms: 100, then streams on the retry",
        chain=("primary",),
        model="bench-429",
        script={"bench-429": ["status:429:retry_after_ms=100", ANSWER]},
        max_retries=2,
    ),
    Scenario(
        name="hang-then-fallback",
        description="primary never sends headers; first_chunk_timeout 0.25 s, backup streams",
        chain=("primary", "backup"),
        model="bench-model",
        script={"bench-hang": ["hang_headers"], "bench-ok": [ANSWER]},
        model_aliases={
            "primary": {"bench-model": "bench-hang"},
            "backup": {"bench-model": "bench-ok"},
        },
        first_chunk_timeout=0.25,
    ),
    Scenario(
        name="model-fallback",
        description="bench-large is 404 on both providers; bench-small serves on primary",
        chain=("primary", "backup"),
        model="bench-large",
        script={"bench-large": ["status:404"], "bench-small": [ANSWER]},
        model_fallbacks={"bench-large": ["bench-small"]},
    ),
    Scenario(
        name="dead-primary",
        description="primary always 500 (2 retries); its breaker opens, later requests skip it",
        chain=("primary", "backup"),
        model="bench-model",
        script={"bench-dead": ["status:500"], "bench-ok": [ANSWER]},
        model_aliases={
            "primary": {"bench-model": "bench-dead"},
            "backup": {"bench-model": "bench-ok"},
        },
        max_retries=2,
        keep_health=True,
    ),
    Scenario(
        name="hedge",
        description="primary TTFT 50 ms, 2 s in 10 % of requests; hedged after 150 ms "
        "to backup (TTFT 100 ms)",
        chain=("primary", "backup"),
        model="bench-model",
        script={"bench-tail": ["ok:chunks=20:ttft=0.05"], "bench-ok": ["ok:chunks=20:ttft=0.1"]},
        tail={"bench-tail": (0.1, ["ok:chunks=20:ttft=2"])},
        model_aliases={
            "primary": {"bench-model": "bench-tail"},
            "backup": {"bench-model": "bench-ok"},
        },
        hedge=Hedge(after=0.15, budget=0.5),
    ),
)
SCENARIO_NAMES: tuple[str, ...] = tuple(s.name for s in SCENARIOS)


@dataclass(slots=True)
class Target:
    """Something to measure: a reliable provider, the leaves behind it, and a request.

    Attributes:
        name: Scenario name.
        description: One line for reports.
        reliable: The provider under test.
        providers: name -> leaf provider, for the direct baseline.
        primary: Name of the first provider of the chain.
        model: The model requested.
        model_aliases: provider -> {model: id}, to know the primary's model id.
        messages: The request.
        temperature: Sampling temperature.
        before_each: Called before every repetition (re-scripts the fake server).
    """

    name: str
    description: str
    reliable: ReliableProvider
    providers: Mapping[str, Provider]
    primary: str
    model: str
    model_aliases: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    messages: Sequence[ChatMessage] = field(default_factory=lambda: list(PROMPT))
    temperature: float = 0.0
    before_each: Callable[[], None] | None = None


@dataclass(slots=True)
class Sample:
    """One repetition: times in milliseconds; None where nothing arrived."""

    ttft_ms: float | None
    total_ms: float | None
    direct_ttft_ms: float | None
    retries: int
    fallbacks: int
    served_by: str | None
    model: str | None
    error: str | None = None
    skipped: int = 0

    @property
    def path(self) -> str:
        """The way the request went: ``skipped_open_breaker``, ``fallback``, ``retry``, ``direct``.

        A sample that skipped an open breaker measured the skip, not the
        failover it skipped: the bench's figures are read with this.
        """
        if self.skipped:
            return "skipped_open_breaker"
        if self.fallbacks:
            return "fallback"
        return "retry" if self.retries else "direct"

    @property
    def added_ms(self) -> float | None:
        """TTFT through reliant minus TTFT of the direct call, this repetition."""
        if self.ttft_ms is None or self.direct_ttft_ms is None:
            return None
        return self.ttft_ms - self.direct_ttft_ms


@dataclass(slots=True)
class ScenarioResult:
    """Every sample of one scenario, with the derived figures."""

    name: str
    description: str
    samples: list[Sample]

    def _values(self, attr: str) -> list[float]:
        values = (getattr(s, attr) for s in self.samples)
        return [v for v in values if v is not None]

    @property
    def ttft(self) -> list[float]:
        return self._values("ttft_ms")

    @property
    def direct(self) -> list[float]:
        return self._values("direct_ttft_ms")

    @property
    def added(self) -> list[float]:
        return self._values("added_ms")

    @property
    def errors(self) -> int:
        return sum(1 for s in self.samples if s.error is not None)

    @property
    def skipped(self) -> int:
        """Samples that skipped an open circuit breaker."""
        return sum(1 for s in self.samples if s.skipped)

    @property
    def served_by(self) -> str:
        """The serving ``provider/model``, or the distinct ones joined by ``, ``."""
        seen: list[str] = []
        for s in self.samples:
            if s.served_by is not None:
                label = f"{s.served_by}/{s.model}"
                if label not in seen:
                    seen.append(label)
        return ", ".join(seen) or "-"

    def summary(self) -> dict[str, Any]:
        """The figures of this scenario (milliseconds), JSON-ready."""
        n = len(self.samples)
        return {
            "name": self.name,
            "description": self.description,
            "n": n,
            "errors": self.errors,
            "served_by": self.served_by,
            "ttft_ms": _stats(self.ttft),
            "direct_ttft_ms": _stats(self.direct),
            "added_ms": _stats(self.added),
            "skipped_samples": self.skipped,
            "paths": {
                path: sum(1 for s in self.samples if s.path == path)
                for path in dict.fromkeys(s.path for s in self.samples)
            },
            "retries_total": sum(s.retries for s in self.samples),
            "fallbacks_total": sum(s.fallbacks for s in self.samples),
            "retries_per_request": sum(s.retries for s in self.samples) / n if n else 0.0,
            "fallbacks_per_request": sum(s.fallbacks for s in self.samples) / n if n else 0.0,
        }


@dataclass(slots=True)
class BenchReport:
    """A whole run: its settings and one result per scenario."""

    repetitions: int
    source: str
    results: list[ScenarioResult]
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> dict[str, Any]:
        """Every figure and every raw sample."""
        return {
            "reliant_version": __version__,
            "started_at": self.started_at,
            "source": self.source,
            "repetitions": self.repetitions,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "units": "milliseconds",
            "definitions": {
                "ttft_ms": "opening the stream through ReliableProvider -> first text chunk",
                "direct_ttft_ms": "the same request straight to the provider/model that served",
                "added_ms": "ttft_ms - direct_ttft_ms, paired per repetition",
                "retries": "retries of the same provider/model (log records with a backoff)",
                "fallbacks": "candidates given up for the next provider or model",
                "skipped": "routes skipped without a call because their breaker was open",
                "path": "skipped_open_breaker, fallback, retry or direct",
            },
            "scenarios": [
                {**r.summary(), "samples": [{**asdict(s), "path": s.path} for s in r.samples]}
                for r in self.results
            ],
        }

    def write_json(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path`` (parent directories are created)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys(("p50", "p95", "p99", "mean", "min", "max"))
    return {
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "p99": round(percentile(values, 99), 3),
        "mean": round(statistics.fmean(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


# -- measuring ------------------------------------------------------------------------------


class _Counts:
    __slots__ = ("fallbacks", "retries", "skipped")

    def __init__(self) -> None:
        self.retries = 0
        self.fallbacks = 0
        self.skipped = 0


_SKIPS = ("circuit_open", "retry_budget")


@contextmanager
def _count_failovers(counts: _Counts) -> Iterator[None]:
    class _Tap(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name != "reliant" or "attempt" not in record.__dict__:
                return
            if "backoff" in record.__dict__:
                counts.retries += 1
            elif "dropped" in record.__dict__:
                counts.retries += 1  # context-window truncation retries the same candidate
            elif record.levelno >= logging.WARNING or record.__dict__.get("reason") in _SKIPS:
                counts.fallbacks += 1  # gave a candidate up, or health skipped it
                if record.__dict__.get("reason") == "circuit_open":
                    counts.skipped += 1

    logger = logging.getLogger("reliant")
    tap = _Tap(logging.INFO)
    previous = logger.level
    logger.addHandler(tap)
    if previous == logging.NOTSET or previous > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(tap)
        logger.setLevel(previous)


async def _time_stream(
    provider: Provider, messages: Sequence[ChatMessage], model: str, temperature: float
) -> tuple[float | None, float]:
    """(seconds to the first text chunk, seconds to the end of the stream)."""
    start = trio.current_time()
    first: float | None = None
    async with provider.stream_chat_with_history(messages, model, temperature) as chunks:
        async for chunk in chunks:
            if first is None and (chunk.delta or chunk.reasoning):
                first = trio.current_time() - start
    return first, trio.current_time() - start


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _describe(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 500 else text[:497] + "..."


async def _one(target: Target) -> Sample:
    if target.before_each is not None:
        target.before_each()
    counts = _Counts()
    try:
        with fallback_scope(), _count_failovers(counts):
            ttft, total = await _time_stream(
                target.reliable, target.messages, target.model, target.temperature
            )
            info = take_last_provider_fallback()
    except Exception as err:
        return Sample(
            None,
            None,
            None,
            counts.retries,
            counts.fallbacks,
            None,
            None,
            _describe(err),
            counts.skipped,
        )
    if info is not None:
        served, model = info.actual_provider, info.actual_model
    else:
        served = target.primary
        model = target.model_aliases.get(served, {}).get(target.model, target.model)
    direct: float | None = None
    error: str | None = None
    try:
        direct, _ = await _time_stream(
            target.providers[served], target.messages, model, target.temperature
        )
    except Exception as err:
        error = "direct call failed: " + _describe(err)
    return Sample(
        _ms(ttft),
        _ms(total),
        _ms(direct),
        counts.retries,
        counts.fallbacks,
        served,
        model,
        error,
        counts.skipped,
    )


async def run_targets(
    targets: Sequence[Target],
    repetitions: int,
    *,
    on_sample: Callable[[str, Sample], None] | None = None,
    warmup: bool = True,
    source: str = "fake-server",
) -> BenchReport:
    """Measure every target ``repetitions`` times (after one unmeasured warm-up each)."""
    results: list[ScenarioResult] = []
    for target in targets:
        if warmup:
            await _one(target)
        samples: list[Sample] = []
        for _ in range(repetitions):
            sample = await _one(target)
            samples.append(sample)
            if on_sample is not None:
                on_sample(target.name, sample)
        results.append(ScenarioResult(target.name, target.description, samples))
    return BenchReport(repetitions, source, results)


def scenario_target(
    scenario: Scenario, server: FakeLLMServer, providers: Mapping[str, Provider]
) -> Target:
    """A :class:`Target` for a built-in scenario on ``server``."""

    health = LocalHealth()
    rng = random.Random(7)  # the same tail draws in every run

    def rescript() -> None:
        for model, behaviours in scenario.script.items():
            chance, instead = scenario.tail.get(model, (0.0, behaviours))
            server.script(model, instead if chance and rng.random() < chance else behaviours)
        if not scenario.keep_health:
            health.clear()

    reliable = ReliableProvider(
        [(name, providers[name]) for name in scenario.chain],
        max_retries=scenario.max_retries,
        base_backoff=scenario.base_backoff,
        model_fallbacks=scenario.model_fallbacks,
        model_aliases=scenario.model_aliases,
        first_chunk_timeout=scenario.first_chunk_timeout,
        idle_timeout=5.0,
        health=health,
        hedge=scenario.hedge,
    )
    return Target(
        name=scenario.name,
        description=scenario.description,
        reliable=reliable,
        providers=providers,
        primary=scenario.chain[0],
        model=scenario.model,
        model_aliases=scenario.model_aliases,
        before_each=rescript,
    )


async def run_builtin(
    names: Sequence[str] | None,
    repetitions: int,
    *,
    on_sample: Callable[[str, Sample], None] | None = None,
) -> BenchReport:
    """Run built-in scenarios (all when ``names`` is empty) on a fresh fake server."""
    from .providers import Anthropic, OpenAICompatible
    from .testing.fake_server import serve_fake_llm

    wanted = list(names) if names else list(SCENARIO_NAMES)
    unknown = [n for n in wanted if n not in SCENARIO_NAMES]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {list(SCENARIO_NAMES)}")
    selected = [s for s in SCENARIOS if s.name in wanted]
    async with serve_fake_llm() as server, AsyncExitStack() as stack:
        primary = await stack.enter_async_context(
            OpenAICompatible(name="primary", base_url=server.openai_base_url, api_key="bench")
        )
        backup = await stack.enter_async_context(
            Anthropic(name="backup", base_url=server.anthropic_base_url, api_key="bench")
        )
        providers: dict[str, Provider] = {"primary": primary, "backup": backup}
        targets = [scenario_target(s, server, providers) for s in selected]
        return await run_targets(targets, repetitions, on_sample=on_sample)


# -- reporting ------------------------------------------------------------------------------

TABLE_TITLE = "time to first token (ms)"
TABLE_COLUMNS: tuple[str, ...] = (
    "scenario",
    "served by",
    "p50",
    "p95",
    "p99",
    "direct",
    "added",
    "added p95",
    "retries",
    "fallbacks",
    "skipped",
)
TABLE_NOTE = (
    "p50/p95/p99: time to first token through reliant; direct: p50 of the same request "
    "sent straight to the provider that served; added: p50 (and p95) of the difference, "
    "paired per repetition; retries and fallbacks: per request; skipped: samples that "
    "skipped an open circuit breaker (they measure the skip, not a failover)."
)


def _fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def table_title(report: BenchReport) -> str:
    """The title line of the table."""
    n = report.repetitions
    return f"{TABLE_TITLE}, {n} repetition{'' if n == 1 else 's'} per scenario"


def table_rows(report: BenchReport) -> list[tuple[str, ...]]:
    """One row of formatted figures per scenario, in :data:`TABLE_COLUMNS` order."""
    rows: list[tuple[str, ...]] = []
    for r in report.results:
        s = r.summary()
        n = s["n"] or 1
        name = r.name if not r.errors else f"{r.name} ({r.errors} errors)"
        rows.append(
            (
                name,
                r.served_by,
                _fmt(s["ttft_ms"]["p50"]),
                _fmt(s["ttft_ms"]["p95"]),
                _fmt(s["ttft_ms"]["p99"]),
                _fmt(s["direct_ttft_ms"]["p50"]),
                _fmt(s["added_ms"]["p50"]),
                _fmt(s["added_ms"]["p95"]),
                f"{s['retries_total'] / n:.1f}",
                f"{s['fallbacks_total'] / n:.1f}",
                f"{r.skipped}/{s['n']}",
            )
        )
    return rows


def format_table(report: BenchReport) -> str:
    """The table of :func:`table_rows` as plain, aligned text under its title."""
    rows = [TABLE_COLUMNS, *table_rows(report)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = [table_title(report)]
    for k, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(report: BenchReport, path: str | Path) -> None:
    """Chart the TTFT distributions per scenario (reliant vs direct) to PNG or SVG.

    Raises:
        ImportError: matplotlib is not installed.
        ValueError: The file extension is neither ``.png`` nor ``.svg``.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise ValueError(f"plot file must end in .png or .svg, not {suffix or '(none)'!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report.results
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.9 * max(1, len(results))))
    data: list[list[float]] = []
    labels: list[str] = []
    positions: list[float] = []
    for i, r in enumerate(reversed(results)):
        base = i * 3.0
        for offset, values, label in ((0.0, r.direct, "direct"), (1.0, r.ttft, "reliant")):
            data.append(values or [math.nan])
            positions.append(base + offset)
            labels.append(f"{r.name} ({label})")
    # `orientation` replaced `vert` in matplotlib 3.10 (and `vert` warns from 3.11).
    major, minor = (int(part) for part in matplotlib.__version__.split(".")[:2])
    horizontal: dict[str, Any] = (
        {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}
    )
    boxes = ax.boxplot(
        data, positions=positions, widths=0.7, patch_artist=True, showfliers=False, **horizontal
    )
    for k, patch in enumerate(boxes["boxes"]):
        patch.set_facecolor("#9ecae1" if k % 2 == 0 else "#fdae6b")
    for pos, values in zip(positions, data, strict=True):
        if values and not math.isnan(values[0]):
            ax.plot(values, [pos] * len(values), "k.", alpha=0.35, markersize=3)
    ax.set_yticks(positions, labels)
    ax.set_xscale("log")
    ax.set_xlabel("time to first token (ms, log scale)")
    ax.set_title(f"reliant failover latency: {table_title(report)}")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, format=suffix[1:])
    plt.close(fig)
