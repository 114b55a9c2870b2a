"""The LiteLLM half of compare_litellm.py: run in LiteLLM's own virtualenv, prints JSON.

Not meant to be run by hand (compare_litellm.py starts it with ``--litellm-python``
and the URL of the fake server it already runs), but it can be::

    LITELLM_LOCAL_MODEL_COST_MAP=True /tmp/litellm-venv/bin/python \\
        benchmarks/_litellm_side.py --url http://127.0.0.1:PORT --reps 30

Everything runs under asyncio, LiteLLM's own loop: the raw baseline is plain
httpx (``AsyncClient.stream`` + the same SSE line split and ``json.loads`` as
reliant's raw httpx2 baseline), the leaf is ``litellm.acompletion`` with the
deployment's parameters, the wrapper is ``litellm.Router``. Only the standard
library (and _turns.py, which is stdlib only), httpx and litellm are imported,
so this file must not import reliant. _same_loop_side.py reuses its pieces on
the loop it shares with reliant.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import sys
import time
from typing import Any

# Before litellm is imported: no network fetch of the model cost map.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")

import httpx  # type: ignore[import-not-found]
import litellm  # type: ignore[import-not-found]

from _turns import Variant, take_turns

API_KEY = "sk-bench"
MESSAGES = [{"role": "user", "content": "hi"}]
TTFT_CHUNKS = 20
TTFT_MODEL = f"ok:chunks={TTFT_CHUNKS}"


async def drain() -> tuple[int, float]:
    """Wait (untimed) for the tasks LiteLLM leaves running after a stream (success logging,
    response caching, router bookkeeping), so their CPU is not billed to the next variant.

    Returns how many there were and how long they took to finish.
    """
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    if not pending:
        return 0, 0.0
    start = time.perf_counter()
    await asyncio.wait(pending, timeout=2.0)
    return len(pending), time.perf_counter() - start


async def raw_stream(client: Any, url: str, model: str, first: list[float] | None = None) -> int:
    """The floor: httpx streaming, SSE lines split by hand, every data line parsed."""
    body = {"model": model, "messages": MESSAGES, "stream": True}
    headers = {"authorization": f"Bearer {API_KEY}"}
    n = 0
    async with client.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=headers
    ) as response:
        response.raise_for_status()
        buffer = b""
        async for data in response.aiter_bytes():
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"data: "):
                    payload = line[6:]
                    if payload == b"[DONE]":
                        continue
                    event = json.loads(payload)
                    if event["choices"] and event["choices"][0]["delta"].get("content"):
                        if n == 0 and first is not None:
                            first.append(time.perf_counter())
                        n += 1
    return n


async def raw_failover(client: Any, url: str, model: str, first: list[float]) -> int:
    """The floor of a failover: one request answered 500 (body read), then the raw stream."""
    body = {"model": "status:500", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {API_KEY}"}
    response = await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
    if response.status_code != 500:
        raise RuntimeError(f"expected HTTP 500, got {response.status_code}")
    return await raw_stream(client, url, model, first)


async def consume(stream: Any, first: list[float] | None = None) -> int:
    n = 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if n == 0 and first is not None:
                first.append(time.perf_counter())
            n += 1
    return n


def deployment(name: str, model: str, url: str) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {
            "model": f"openai/{model}",
            "api_base": f"{url}/v1",
            "api_key": API_KEY,
            "max_retries": 0,  # the OpenAI SDK's own retries
        },
    }


def make_router(url: str, chunks: int) -> Any:
    return litellm.Router(
        model_list=[
            deployment("burst", f"ok:chunks={chunks}", url),
            deployment("paced", f"ok:chunks={chunks}:gap=0.0005", url),
            # The failover pair: one 500, then the second deployment streams.
            deployment("primary", "status:500", url),
            deployment("backup", TTFT_MODEL, url),
        ],
        fallbacks=[{"primary": ["backup"]}],
        num_retries=0,
        retry_after=0,
        disable_cooldowns=True,  # every run sees the same 500 then fallback
    )


async def leaf(url: str, model: str, first: list[float] | None = None) -> int:
    stream = await litellm.acompletion(
        model=f"openai/{model}",
        messages=MESSAGES,
        stream=True,
        api_base=f"{url}/v1",
        api_key=API_KEY,
        max_retries=0,
    )
    return await consume(stream, first)


async def routed(router: Any, group: str, first: list[float] | None = None) -> int:
    stream = await router.acompletion(model=group, messages=MESSAGES, stream=True)
    return await consume(stream, first)


async def per_chunk(url: str, router: Any, chunks: int, reps: int, warmup: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for label, model in (
            ("burst", f"ok:chunks={chunks}"),
            ("paced", f"ok:chunks={chunks}:gap=0.0005"),
        ):
            variants: dict[str, Variant] = {
                "raw": lambda f, m=model: raw_stream(client, url, m, f),
                "leaf": lambda f, m=model: leaf(url, m, f),
                "wrapper": lambda f, g=label: routed(router, g, f),
            }
            samples = await take_turns(
                variants, reps=reps, warmup=warmup, expect=chunks, what=label, settle=drain
            )
            out[label] = {f"{k}_s": s.median("wall") / chunks for k, s in samples.items()}
            for k, s in samples.items():
                out[label][f"{k}_background_tasks"] = s.median("tasks")
                out[label][f"{k}_background_s"] = s.median("settle")
    return out


async def ttft(url: str, router: Any, reps: int, warmup: int) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=30) as client:
        variants: dict[str, Variant] = {
            "raw": lambda f: raw_stream(client, url, TTFT_MODEL, f),
            "raw_failover": lambda f: raw_failover(client, url, TTFT_MODEL, f),
            "leaf": lambda f: leaf(url, TTFT_MODEL, f),
            "wrapper_healthy": lambda f: routed(router, "backup", f),
            "wrapper_failover": lambda f: routed(router, "primary", f),
        }
        # Every stream is read to the end, so the connection is reused.
        samples = await take_turns(
            variants, reps=reps, warmup=warmup, expect=TTFT_CHUNKS, what="ttft", settle=drain
        )
    return {f"{k}_s": s.median("ttft") for k, s in samples.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    router = make_router(args.url, args.chunks)
    return {
        "per_chunk": await per_chunk(args.url, router, args.chunks, args.reps, args.warmup),
        "ttft": await ttft(args.url, router, args.reps, args.warmup),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="LiteLLM side of compare_litellm.py")
    parser.add_argument("--url", required=True, help="fake server base URL (no /v1)")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=200)
    args = parser.parse_args()
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    results = asyncio.run(run(args))
    versions = {}
    for dist in ("litellm", "httpx", "openai", "aiohttp"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    results["versions"] = versions
    results["python"] = sys.version.split()[0]
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
