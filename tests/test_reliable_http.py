"""ReliableProvider across two real HTTP providers on the fake server, over loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from reliant import (
    ChatMessage,
    FailoverError,
    ReliableProvider,
    StreamError,
    fallback_scope,
    take_last_provider_fallback,
)
from reliant.providers import Anthropic, OpenAICompatible
from reliant.testing import FakeLLMServer

HI = [ChatMessage.user("hi")]


@pytest.fixture
async def pair(server: FakeLLMServer) -> AsyncIterator[tuple[OpenAICompatible, Anthropic]]:
    """An OpenAI-compatible primary and an Anthropic backup, both on the fake server."""
    async with (
        OpenAICompatible(name="primary", base_url=server.openai_base_url, api_key="sk-test-1") as a,
        Anthropic(name="backup", base_url=server.anthropic_base_url, api_key="sk-ant-test-2") as b,
    ):
        yield a, b


def chain(
    pair: tuple[OpenAICompatible, Anthropic], primary_model: str, backup_model: str, **kw: object
) -> ReliableProvider:
    a, b = pair
    return ReliableProvider(
        [("primary", a), ("backup", b)],
        kw.pop("max_retries", 2),  # type: ignore[arg-type]
        0.5,
        model_aliases={"primary": {"m": primary_model}, "backup": {"m": backup_model}},
        **kw,  # type: ignore[arg-type]
    )


def paths(server: FakeLLMServer) -> list[tuple[str, str | None]]:
    return [(r.path, r.model) for r in server.requests]


async def test_500_is_retried_then_falls_back(
    server: FakeLLMServer,
    pair: tuple[OpenAICompatible, Anthropic],
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 500 is retried max_retries times on the primary, then the backup serves."""
    rp = chain(pair, "status:500", "ok:chunks=2", max_retries=1)
    with fallback_scope():
        assert await rp.chat_with_history(HI, "m", 0.0) == "tok0 tok1 "
        info = take_last_provider_fallback()
    assert paths(server) == [
        ("/v1/chat/completions", "status:500"),
        ("/v1/chat/completions", "status:500"),
        ("/v1/messages", "ok:chunks=2"),
    ]
    assert info is not None and (info.actual_provider, info.actual_model) == (
        "backup",
        "ok:chunks=2",
    )


async def test_401_is_not_retried(
    server: FakeLLMServer, pair: tuple[OpenAICompatible, Anthropic]
) -> None:
    """A 401 moves to the backup at once, with no retry and no backoff."""
    rp = chain(pair, "status:401", "ok:chunks=1", max_retries=3)
    start = trio.current_time()
    assert await rp.simple_chat("hi", "m", 0.0) == "tok0 "
    assert [m for _, m in paths(server)] == ["status:401", "ok:chunks=1"]
    assert trio.current_time() - start < 0.5


async def test_429_waits_its_retry_after(
    server: FakeLLMServer,
    pair: tuple[OpenAICompatible, Anthropic],
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 429 with retry-after: 3 is retried on the same provider exactly 3 s later."""
    a, _ = pair
    server.script("m", ["status:429:retry_after=3", "ok:chunks=1"])
    rp = ReliableProvider([("primary", a)], 2, 0.5)
    assert await rp.simple_chat("hi", "m", 0.0) == "tok0 "
    first, second = server.requests
    assert second.received_at - first.received_at == pytest.approx(3.0, abs=0.01)


async def test_all_fail_lists_every_attempt_with_status(
    server: FakeLLMServer, pair: tuple[OpenAICompatible, Anthropic]
) -> None:
    """When both providers fail, the trail names each with its HTTP status and no key."""
    rp = chain(pair, "status:403", "status:404", max_retries=0)
    with pytest.raises(FailoverError) as info:
        await rp.simple_chat("hi", "m", 0.0)
    lines = str(info.value).splitlines()
    assert lines[0] == "All providers/models failed. Attempts:"
    assert lines[1].startswith("provider=primary model=status:403 attempt 1/1: non_retryable; ")
    assert "primary API error (403 Forbidden)" in lines[1]
    assert lines[2].startswith("provider=backup model=status:404 attempt 1/1: non_retryable; ")
    assert "sk-test-1" not in str(info.value) and "sk-ant-test-2" not in str(info.value)


async def test_hung_upstream_fails_over_at_first_chunk_timeout(
    server: FakeLLMServer,
    pair: tuple[OpenAICompatible, Anthropic],
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A primary that never sends headers is dropped at first_chunk_timeout; the backup streams."""
    rp = chain(pair, "hang_headers", "ok:chunks=3", max_retries=0, first_chunk_timeout=2.0)
    start = trio.current_time()
    async with rp.stream_chat_with_history(HI, "m", 0.0) as chunks:
        text = "".join([c.delta async for c in chunks])
    assert text == "tok0 tok1 tok2 "
    hung, served = server.requests
    assert served.received_at - start == pytest.approx(2.0, abs=0.01)
    assert await server.wait_for_disconnect(hung.index) - start == pytest.approx(2.0, abs=0.01)


async def test_cut_stream_raises_after_commit(
    server: FakeLLMServer, pair: tuple[OpenAICompatible, Anthropic]
) -> None:
    """A stream cut after its first chunks raises StreamError and is not replayed elsewhere."""
    rp = chain(pair, "cut:after=2", "ok:chunks=3")
    seen: list[str] = []
    with pytest.raises(StreamError):
        async with rp.stream_chat_with_history(HI, "m", 0.0) as chunks:
            async for chunk in chunks:
                seen.append(chunk.delta)
    assert seen == ["tok0 ", "tok1 "]
    assert [m for _, m in paths(server)] == ["cut:after=2"]


async def test_cut_before_commit_fails_over(
    server: FakeLLMServer,
    pair: tuple[OpenAICompatible, Anthropic],
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A stream cut before its first chunk is retried, then served by the backup."""
    rp = chain(pair, "cut:after=0", "ok:chunks=2", max_retries=1)
    async with rp.stream_chat_with_history(HI, "m", 0.0) as chunks:
        assert "".join([c.delta async for c in chunks]) == "tok0 tok1 "
    assert [m for _, m in paths(server)] == ["cut:after=0", "cut:after=0", "ok:chunks=2"]


async def test_leaving_a_stream_closes_the_upstream_connection(
    server: FakeLLMServer, pair: tuple[OpenAICompatible, Anthropic]
) -> None:
    """Leaving the block mid-stream closes the connection; the server sees it at once."""
    rp = chain(pair, "ok:chunks=100000:gap=0.001", "ok:chunks=1")
    async with rp.stream_chat_with_history(HI, "m", 0.0) as chunks:
        for _ in range(3):
            await chunks.__anext__()
        left = trio.current_time()
    with trio.fail_after(1):
        closed = await server.wait_for_disconnect(0)
    assert closed - left < 0.05
    assert server.aborted == [0]
    assert len(server.requests) == 1


async def test_cancelling_the_caller_closes_the_upstream_connection(
    server: FakeLLMServer,
    pair: tuple[OpenAICompatible, Anthropic],
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The caller's deadline expiring during a hung request closes it; nothing else is sent."""
    rp = chain(pair, "hang_headers", "ok:chunks=1", first_chunk_timeout=None)
    with trio.move_on_after(5):
        async with rp.stream_chat_with_history(HI, "m", 0.0) as chunks:
            async for _ in chunks:
                pass
    assert await server.wait_for_disconnect(0) == pytest.approx(5.0, abs=0.01)
    assert len(server.requests) == 1


async def test_streamed_failover_records_fallback_info(
    server: FakeLLMServer, pair: tuple[OpenAICompatible, Anthropic]
) -> None:
    """A stream served by the backup after a 401 reports it through fallback_scope."""
    rp = chain(pair, "status:401", "ok:chunks=2")
    with fallback_scope():
        async with rp.stream_chat_with_history(HI, "m", 0.0) as chunks:
            assert [c.delta async for c in chunks] == ["tok0 ", "tok1 ", ""]
        info = take_last_provider_fallback()
    assert info is not None and info.actual_provider == "backup"
