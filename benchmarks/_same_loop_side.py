"""The same-loop half of compare_litellm.py: reliant and LiteLLM on one asyncio loop.

Runs in a virtualenv that has both litellm and reliant (this checkout,
``pip install -e``), prints JSON. compare_litellm.py starts it with
``--litellm-python`` and the URL of the fake server it already runs; by hand::

    LITELLM_LOCAL_MODEL_COST_MAP=True /tmp/litellm-venv/bin/python \\
        benchmarks/_same_loop_side.py --url http://127.0.0.1:PORT --reps 30

One ``asyncio.run``, one process, one loop, one HTTP floor: raw httpx2 (the
``_util`` loop reliant's own benchmarks use) and, for reference, raw httpx
(LiteLLM's client). The variants take turns on that loop: reliant's
``OpenAICompatible`` and ``ReliableProvider`` (the same code as the trio
column, on its asyncio backend) and ``litellm.acompletion`` and
``litellm.Router`` (as in _litellm_side.py). The tasks a call leaves running
are awaited, untimed, after every call of every variant, so none is billed
to the next turn. Every piece is the trio column's or _litellm_side.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import sys
from typing import Any

import httpx  # type: ignore[import-not-found]
import httpx2
import litellm  # type: ignore[import-not-found]

import _litellm_side as ll  # first: sets LiteLLM's environment before importing it
import compare_litellm as cl
import reliant
from _turns import Samples, take_turns
from reliant import ReliableProvider

# The floor both libraries are compared with: raw httpx2 on this loop.
SHARED = ("raw", "raw_failover")


def per_chunk(samples: dict[str, Samples], chunks: int) -> dict[str, dict[str, float]]:
    """Per variant: wall and CPU per chunk, tasks left behind and the time they took."""
    return {
        name: {
            "s": s.median("wall") / chunks,
            "cpu_s": s.median("cpu") / chunks,
            "background_tasks": s.median("tasks"),
            "background_s": s.median("settle"),
        }
        for name, s in samples.items()
    }


def side(per: dict[str, dict[str, float]], lib: str) -> dict[str, float]:
    """One library's figures under the names of the trio column (raw_s, leaf_s,
    wrapper_s...), the shared floor as its raw_*, so ratios() and the tables of
    compare_litellm read them as they read a side of the cross-loop run."""
    out = {}
    for name, figures in per.items():
        if name in SHARED:
            short = name
        elif name.startswith(f"{lib}_"):
            short = name.removeprefix(f"{lib}_")
        else:
            continue  # the other library's, or raw httpx
        out.update({f"{short}_{metric}": value for metric, value in figures.items()})
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url, reps, warmup = args.url, args.reps, args.warmup
    router = ll.make_router(url, cl.CHUNKS)
    out: dict[str, Any] = {"reliant": {"per_chunk": {}}, "litellm": {"per_chunk": {}}}
    out["raw_httpx"] = {"per_chunk": {}}
    async with (
        httpx2.AsyncClient(timeout=30) as client,
        httpx.AsyncClient(timeout=30) as hclient,
        cl.openai("direct", url) as direct,
        cl.openai("inner", url) as inner,
        cl.openai("bad", url) as bad,
        cl.openai("good", url) as good,
    ):
        reliable = ReliableProvider([("inner", inner)], max_retries=0, base_backoff=0.05)
        for label, model in cl.MODES:
            rel = cl.per_chunk_variants(client, url, direct, reliable, model)
            variants = {
                "raw": rel["raw"],
                "raw_httpx": lambda f, m=model: ll.raw_stream(hclient, url, m, f),
                "reliant_leaf": rel["leaf"],
                "reliant_wrapper": rel["wrapper"],
                "litellm_leaf": lambda f, m=model: ll.leaf(url, m, f),
                "litellm_wrapper": lambda f, g=label: ll.routed(router, g, f),
            }
            samples = await take_turns(
                variants, reps=reps, warmup=warmup, expect=cl.CHUNKS, what=label, settle=ll.drain
            )
            per = per_chunk(samples, cl.CHUNKS)
            for lib in ("reliant", "litellm"):
                out[lib]["per_chunk"][label] = side(per, lib)
            out["raw_httpx"]["per_chunk"][label] = per["raw_httpx"]

        rel = cl.ttft_variants(client, url, bad, good)
        variants = {
            "raw": rel["raw"],
            "raw_failover": rel["raw_failover"],
            "reliant_leaf": rel["leaf"],
            "reliant_wrapper_healthy": rel["wrapper_healthy"],
            "reliant_wrapper_failover": rel["wrapper_failover"],
            "litellm_leaf": lambda f: ll.leaf(url, ll.TTFT_MODEL, f),
            "litellm_wrapper_healthy": lambda f: ll.routed(router, "backup", f),
            "litellm_wrapper_failover": lambda f: ll.routed(router, "primary", f),
        }
        samples = await take_turns(
            variants, reps=reps, warmup=warmup, expect=cl.TTFT_CHUNKS, what="ttft", settle=ll.drain
        )
        ttft = {name: {"s": s.median("ttft")} for name, s in samples.items()}
        for lib in ("reliant", "litellm"):
            out[lib]["ttft"] = side(ttft, lib)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="same-loop half of compare_litellm.py")
    parser.add_argument("--url", required=True, help="fake server base URL (no /v1)")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    results = asyncio.run(run(args))
    versions = {}
    for dist in ("reliant", "litellm", "httpx2", "httpx", "anyio", "openai"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    results["versions"] = versions
    results["reliant_path"] = reliant.__file__
    results["loop"] = "asyncio"
    results["python"] = sys.version.split()[0]
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
