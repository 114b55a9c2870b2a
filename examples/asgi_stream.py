"""Streaming an LLM answer from an ASGI app on asyncio (Starlette), through ReliableProvider.

``GET /chat?q=...`` streams the answer as plain text. The primary fails, the
backup answers: the client sees one answer. When the client goes away
mid-answer, Starlette cancels the response's task, which leaves the
stream's ``async with``: reliant stops at once and closes the upstream
connection, so a user who closes the tab stops paying for tokens.

Needs ``starlette`` and ``uvicorn`` (``pip install starlette uvicorn``; both
are in reliant's ``test`` extra only). Run as a program, it checks itself
with no keys and no network: it serves the app on loopback in front of the
fake LLM server, reads the first words of an answer, hangs up, and shows
that the upstream connection was closed::

    python examples/asgi_stream.py
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from reliant import ChatMessage, ReliableProvider
from reliant.providers import Anthropic, OpenAICompatible
from reliant.testing import serve_fake_llm


def make_app(llm: ReliableProvider, model: str = "chat") -> Starlette:
    """The ASGI app: one streaming route in front of ``llm``."""

    async def chat(request: Request) -> StreamingResponse:
        question = request.query_params.get("q", "Hello")

        async def answer() -> AsyncIterator[str]:
            messages = [ChatMessage.user(question)]
            async with llm.stream_chat_with_history(messages, model, 0.2) as chunks:
                async for chunk in chunks:
                    yield chunk.delta

        return StreamingResponse(answer(), media_type="text/plain")

    return Starlette(routes=[Route("/chat", chat)])


async def serve(app: Starlette) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """Serve ``app`` on a free loopback port; the server, its task and the port."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn.Server has a flag, no event
        await asyncio.sleep(0.01)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return server, task, port


async def hang_up_after_the_first_words(port: int) -> str:
    """Read the start of an answer from the app, then close the connection."""
    async with (
        httpx2.AsyncClient() as client,
        client.stream("GET", f"http://127.0.0.1:{port}/chat?q=hi") as response,
    ):
        async for text in response.aiter_text():
            return text
    return ""


async def main() -> None:
    async with (
        serve_fake_llm() as server,
        OpenAICompatible(name="primary", base_url=server.openai_base_url, api_key="k") as primary,
        Anthropic(name="backup", base_url=server.anthropic_base_url, api_key="k") as backup,
    ):
        llm = ReliableProvider(
            [primary, backup],
            max_retries=0,
            # Fake-server behaviours: the primary fails, the backup streams
            # 200 words, 20 ms apart (four seconds in all).
            model_aliases={
                "primary": {"chat": "status:500"},
                "backup": {"chat": "ok:chunks=200:gap=0.02"},
            },
        )
        app_server, task, port = await serve(make_app(llm))
        try:
            first = await hang_up_after_the_first_words(port)
            print(f"client read {first!r} and hung up")
            upstream = len(server.requests) - 1
            closed_at = await asyncio.wait_for(server.wait_for_disconnect(upstream), 5.0)
            answered = server.requests[upstream].received_at
            print(f"the upstream stream was closed {closed_at - answered:.2f} s after it began")
            assert upstream in server.aborted, "the upstream answer was not cut short"
        finally:
            app_server.should_exit = True
            await task


if __name__ == "__main__":
    asyncio.run(main())
