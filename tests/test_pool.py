"""Cancelled requests must not leak connection-pool slots (httpcore issue 1093)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
import pytest

from reliant import ChatMessage, ChatRequest, ProviderError, StreamChunk
from reliant.providers import Anthropic, OpenAICompatible
from reliant.testing.fake_server import FakeLLMServer

pytestmark = pytest.mark.anyio

KEY = "pool-test-key-123456"
MAX_CONNECTIONS = 4
SLOW_MODELS = [
    "hang_headers",
    "hang_body:after=1",
    "ok:ttft=0.004",
    "ok:delay=0.003",
    "ok:chunks=40:gap=0.0005",
    "ok",
]


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    limits = httpx2.Limits(
        max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
    )
    async with httpx2.AsyncClient(limits=limits, timeout=httpx2.Timeout(5.0)) as c:
        yield c


def providers(server: FakeLLMServer, client: httpx2.AsyncClient) -> list[Any]:
    return [
        OpenAICompatible(base_url=server.openai_base_url, api_key=KEY, client=client),
        Anthropic(base_url=server.anthropic_base_url, api_key=KEY, client=client),
    ]


async def use(provider: Any, how: int, model: str) -> None:
    """One call of one of four kinds, read to its end."""
    if how == 0:
        await provider.simple_chat("q", model, 0)
        return
    if how == 1:
        stream = provider.stream_chat_with_system(None, "q", model, 0)
    elif how == 2:
        stream = provider.stream_chat_with_history([ChatMessage.user("q")], model, 0)
    else:
        stream = provider.stream_chat(ChatRequest([ChatMessage.user("q")]), model, 0)
    async with stream as items:
        async for _ in items:
            pass


async def hold_all_slots(provider: Any) -> None:
    """Open MAX_CONNECTIONS streams at once and read a chunk of each: needs every slot."""
    async with AsyncExitStack() as stack:
        for _ in range(MAX_CONNECTIONS):
            items = await stack.enter_async_context(
                provider.stream_chat_with_system(None, "q", "hang_body:after=1", 0)
            )
            assert await items.__anext__() == StreamChunk("tok0 ")


# Real time, on both loops: the random deadlines must land in every phase of a
# call (connect, send, headers, body, release); on a virtual clock they would
# land only where every task waits on one of the server's timers.
@pytest.mark.parametrize("anyio_backend", ["trio", "asyncio"])
async def test_randomly_cancelled_requests_leak_no_slots(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """After 2,000 randomly cancelled calls on a 4-connection pool, every slot is free at once."""
    rng = random.Random(1093)
    both = providers(server, client)
    failures: list[ProviderError] = []

    async def one() -> None:
        provider = rng.choice(both)
        how = rng.randrange(4)
        model = rng.choice(SLOW_MODELS)
        with anyio.move_on_after(rng.uniform(0.0, 0.02)):
            try:
                await use(provider, how, model)
            except ProviderError as exc:  # a pool timeout here would mean a leak
                failures.append(exc)

    for _ in range(50):
        async with anyio.create_task_group() as nursery:
            for _ in range(40):
                nursery.start_soon(one)

    assert failures == []
    # Real time: how many calls get as far as the server depends on the
    # machine's load, so this only checks that cancellation hit all phases.
    assert len(server.requests) >= 20
    assert server.aborted
    with anyio.fail_after(2):
        for provider in both:
            await hold_all_slots(provider)
        assert await both[0].simple_chat("q", "ok", 0) == "tok0 tok1 tok2 tok3 tok4 "
        assert await both[1].simple_chat("q", "ok", 0) == "tok0 tok1 tok2 tok3 tok4 "


async def test_cancelled_pool_waiter_frees_its_place(server: FakeLLMServer) -> None:
    """A call cancelled while queued for a pool slot does not keep the slot when it frees up."""
    limits = httpx2.Limits(max_connections=1)
    async with httpx2.AsyncClient(limits=limits) as client:
        provider = OpenAICompatible(base_url=server.openai_base_url, api_key=KEY, client=client)
        async with provider.stream_chat_with_system(None, "q", "ok:chunks=3:gap=5", 0) as items:
            assert await items.__anext__() == StreamChunk("tok0 ")
            with anyio.move_on_after(1):
                await provider.simple_chat("q", "ok", 0)
            assert len(server.requests) == 1
        with anyio.fail_after(1):
            assert await provider.simple_chat("q", "ok", 0) == "tok0 tok1 tok2 tok3 tok4 "


async def test_cancelled_mid_body_releases_the_connection(server: FakeLLMServer) -> None:
    """Cancelling a one-connection pool's stream mid-body lets the next call through."""
    limits = httpx2.Limits(max_connections=1)
    async with httpx2.AsyncClient(limits=limits) as client:
        for provider in providers(server, client):
            for how in (0, 1, 2, 3):
                with anyio.move_on_after(0.5):
                    await use(provider, how, "ok:chunks=10:ttft=0.2:gap=0.2")
            with anyio.fail_after(1):
                await use(provider, 3, "ok")
