"""A/B on trio: this checkout against an earlier commit, in one process, interleaved.

The commit's ``src/reliant`` is extracted with ``git archive`` into a
temporary folder as the package ``reliant_base`` (reliant's modules import
each other relatively, so the copy is self-contained) and imported beside
``reliant``. Then, on trio, the variants take turns:

- in process: a two-chunk stream through ``ReliableProvider`` (health on,
  the default) and a non-streaming call, each over an instant in-process
  provider (as ``bench_overhead.py`` measures them);
- over loopback, against one fake server in a subprocess: the time to first
  token of a healthy stream through ``ReliableProvider``, and the same
  provider called directly, for each version.

In-process figures are the best of the rounds (noise only adds time);
the loopback ones are medians of interleaved repetitions. Prints each
figure for both and their ratio (this checkout / the base), and
writes ``results/ab_trio.json``. Used to check that the asyncio port
(issue #17) made nothing slower on trio:

    python benchmarks/ab_trio.py --base 9c89886
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import trio

from _util import write_json
from bench_http import start_server

ROOT = Path(__file__).resolve().parent.parent


def extract(rev: str, into: Path) -> ModuleType:
    """``src/reliant`` of ``rev`` as the importable package ``reliant_base``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "src/reliant"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "src" / "reliant").rename(into / "reliant_base")
    sys.path.insert(0, str(into))
    return importlib.import_module("reliant_base")


def instant(pkg: ModuleType) -> Any:
    """A provider of ``pkg`` that answers at once: two chunks, or a reply."""
    from contextlib import asynccontextmanager

    class Instant(pkg.Provider):  # type: ignore[name-defined,misc]
        @property
        def supports_streaming(self) -> bool:
            return True

        async def chat_with_system(
            self, system_prompt: Any, message: str, model: str, t: float
        ) -> str:
            return "ok"

        def stream_chat_with_history(
            self, messages: Any, model: str, t: float, options: Any = None
        ) -> Any:
            @asynccontextmanager
            async def opened() -> AsyncIterator[Any]:
                async def items() -> AsyncIterator[Any]:
                    yield pkg.StreamChunk("a")
                    yield pkg.StreamChunk("b")
                    yield pkg.StreamChunk.final()

                yield items()

            return opened()

    return Instant()


async def per_op(fn: Callable[[], Awaitable[None]], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - start) / n * 1e6


async def in_process(pkgs: dict[str, ModuleType], rounds: int, n: int) -> dict[str, float]:
    variants: dict[str, Callable[[], Awaitable[None]]] = {}
    for label, pkg in pkgs.items():
        llm = pkg.ReliableProvider([("p", instant(pkg))])
        hi = [pkg.ChatMessage.user("hi")]

        async def stream(llm: Any = llm, hi: Any = hi) -> None:
            async with llm.stream_chat_with_history(hi, "m", 0.0) as chunks:
                async for _ in chunks:
                    pass

        async def call(llm: Any = llm) -> None:
            await llm.simple_chat("hi", "m", 0.0)

        variants[f"{label}_stream_us"] = stream
        variants[f"{label}_call_us"] = call
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():
        await per_op(fn, n // 10)  # warm up
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(await per_op(fn, n))
    # The best round, as timeit reports: on this shared machine noise only
    # ever adds time, and the median of a noisy stretch swung 0.8-1.15x.
    return {k: min(v) for k, v in samples.items()}


async def over_http(pkgs: dict[str, ModuleType], url: str, reps: int) -> dict[str, float]:
    variants: dict[str, Callable[[], Awaitable[float]]] = {}
    closers = []
    for label, pkg in pkgs.items():
        providers = importlib.import_module(f"{pkg.__name__}.providers")
        leaf = providers.OpenAICompatible(name="p", base_url=f"{url}/v1", api_key="k")
        closers.append(leaf)
        llm = pkg.ReliableProvider([("p", leaf)])
        hi = [pkg.ChatMessage.user("hi")]

        def ttft(provider: Any, hi: Any = hi) -> Callable[[], Awaitable[float]]:
            async def go() -> float:
                start = time.perf_counter()
                first = 0.0
                async with provider.stream_chat_with_history(hi, "ok:chunks=20", 0.0) as chunks:
                    async for chunk in chunks:
                        if chunk.delta and not first:
                            first = time.perf_counter() - start
                return first

            return go

        variants[f"{label}_direct_ttft_ms"] = ttft(leaf)
        variants[f"{label}_reliable_ttft_ms"] = ttft(llm)
    samples: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for fn in variants.values():
            for _ in range(3):
                await fn()
        for _ in range(reps):
            for name, fn in variants.items():
                samples[name].append(await fn() * 1e3)
    finally:
        for leaf in closers:
            await leaf.aclose()
    return {k: statistics.median(v) for k, v in samples.items()}


def main(base: str, quick: bool) -> None:
    rounds, n, reps = (5, 1000, 50) if quick else (15, 3000, 200)
    with tempfile.TemporaryDirectory() as tmp:
        pkgs = {"head": importlib.import_module("reliant"), "base": extract(base, Path(tmp))}
        local = trio.run(in_process, pkgs, rounds, n)
        proc, url = start_server()
        try:
            http = trio.run(over_http, pkgs, url, reps)
        finally:
            proc.terminate()
            proc.wait()
    figures = {**local, **http}
    for label in ("head", "base"):
        figures[f"{label}_healthy_ratio"] = (
            figures[f"{label}_reliable_ttft_ms"] / figures[f"{label}_direct_ttft_ms"]
        )
    print(f"trio, this checkout (head) against {base} (base), interleaved")
    for key in ("stream_us", "call_us", "reliable_ttft_ms", "direct_ttft_ms", "healthy_ratio"):
        head, old = figures[f"head_{key}"], figures[f"base_{key}"]
        print(f"  {key:<18} head {head:9.3f}   base {old:9.3f}   head/base {head / old:6.3f}x")
    path = write_json("ab_trio.json", {"base": base, **figures})
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    main(args.base, args.quick)
