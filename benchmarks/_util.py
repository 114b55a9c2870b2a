"""Small helpers shared by the benchmark scripts (timing, printing, JSON)."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


async def best_of(fn: Callable[[], Awaitable[None]], *, repeat: int, inner: int) -> float:
    """Median over `repeat` runs of the seconds per call of `fn`, each run calling it `inner` times.

    The median (not the minimum) is reported because the machine is shared:
    it is robust to the odd preempted run without flattering the code.
    """
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            await fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def write_json(name: str, data: dict[str, object]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    data = {"python": os.sys.version.split()[0], **data}  # type: ignore[attr-defined]
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def row(label: str, seconds: float, base: float | None = None) -> str:
    ratio = f"{seconds / base:6.2f}x" if base else "      "
    return f"  {label:<44} {seconds * 1e6:10.2f} us  {ratio}"
