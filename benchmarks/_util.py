"""Small helpers shared by the benchmark scripts (timing, printing, JSON)."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from pathlib import Path

import httpx2

from reliant import ChatMessage, Provider, StreamChunk, StreamOptions, stream_from_generator

RESULTS = Path(__file__).parent / "results"

_CHUNKS = (StreamChunk("a"), StreamChunk("b"), StreamChunk.final())


class Instant(Provider):
    """Answers at once: two chunks and the final one, or "ok"."""

    @property
    def supports_streaming(self) -> bool:
        return True

    async def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> str:
        return "ok"

    async def chat_with_history(
        self, messages: Sequence[ChatMessage], model: str, temperature: float
    ) -> str:
        return "ok"

    @stream_from_generator
    async def stream_chat_with_history(  # type: ignore[override]
        self,
        messages: Sequence[ChatMessage],
        model: str,
        temperature: float,
        options: StreamOptions = StreamOptions(),  # noqa: B008
    ) -> AsyncGenerator[StreamChunk, None]:
        for chunk in _CHUNKS:
            yield chunk


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


async def raw_stream(
    client: httpx2.AsyncClient,
    url: str,
    model: str,
    first: list[float] | None = None,
    headers: dict[str, str] | None = None,
    body: dict[str, object] | None = None,
) -> int:
    """The floor every comparison uses: httpx2 streaming, SSE lines split by
    hand, every data line parsed with ``json.loads``. Returns the number of
    content chunks; appends the time of the first one to ``first``. ``body``
    replaces the minimal request body (its model is set to ``model``)."""
    if body is None:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    else:
        body = {**body, "model": model}
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
