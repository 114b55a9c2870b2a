"""Interleaved timing shared by compare_litellm.py and its subprocess halves.

Only the standard library: _litellm_side.py imports it in a virtualenv that
has neither reliant nor trio, and it runs on any event loop.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

# A variant streams once and returns its number of content chunks; it appends
# the time (perf_counter) of the first one to the list it is given.
Variant = Callable[[list[float]], Awaitable[int]]
# Awaited, untimed, after every call: (tasks left behind, seconds to finish them).
Settle = Callable[[], Awaitable[tuple[int, float]]]


@dataclass
class Samples:
    """One variant's measured calls (warm-up excluded), in seconds."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # this process's CPU (the client's)
    ttft: list[float] = field(default_factory=list)
    tasks: list[int] = field(default_factory=list)
    settle: list[float] = field(default_factory=list)

    def median(self, what: str) -> float:
        return statistics.median(getattr(self, what))


async def take_turns(
    variants: dict[str, Variant],
    *,
    reps: int,
    warmup: int,
    expect: int,
    what: str,
    settle: Settle | None = None,
) -> dict[str, Samples]:
    """Call every variant once per round, `warmup + reps` rounds, in turns, so
    noise hits them alike; the first `warmup` rounds are not kept. Each round
    starts one variant later than the last, so none always follows the same
    one (what a call leaves behind, in caches or the collector's counts, is
    met by every variant in turn)."""
    samples = {name: Samples() for name in variants}
    names = list(variants)
    for i in range(warmup + reps):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            fn = variants[name]
            first: list[float] = []
            wall, cpu = time.perf_counter(), time.process_time()
            got = await fn(first)
            cpu, end = time.process_time() - cpu, time.perf_counter()
            left, settled = await settle() if settle is not None else (0, 0.0)
            if got != expect or not first:
                raise RuntimeError(f"{what}/{name}: {got} chunks, expected {expect}")
            if i >= warmup:
                s = samples[name]
                s.wall.append(end - wall)
                s.cpu.append(cpu)
                s.ttft.append(first[0] - wall)
                s.tasks.append(left)
                s.settle.append(settled)
    return samples
