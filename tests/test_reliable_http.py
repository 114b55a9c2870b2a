"""ReliableProvider across two real HTTP providers on the fake server, over loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from reliant import (
    ChatMessage,
    ChatRequest,
    FailoverError,
    Final,
    ReliableProvider,
    StreamChunk,
    StreamError,
    TextDelta,
    fallback_scope,
    take_last_provider_fallback,
)
from reliant.providers import Anthropic, OpenAICompatible
from reliant.testing import FakeLLMServer

pytestmark = pytest.mark.anyio

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
    server: FakeLLMServer, pair: tuple[OpenAICompatible, Anthropic]
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
    start = anyio.current_time()
    assert await rp.simple_chat("hi", "m", 0.0) == "tok0 "
    assert [m for _, m in paths(server)] == ["status:401", "ok:chunks=1"]
    assert anyio.current_time() == start  # no backoff at all


async def test_429_waits_its_retry_after(
    server: FakeLLMServer, pair: tuple[OpenAICompatible, Anthropic]
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
    server: FakeLLMServer, pair: tuple[OpenAICompatible, Anthropic]
) -> None:
    """A primary that never sends headers is dropped at first_chunk_timeout; the backup streams."""
    rp = chain(pair, "hang_headers", "ok:chunks=3", max_retries=0, first_chunk_timeout=2.0)
    start = anyio.current_time()
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
    server: FakeLLMServer, pair: tuple[OpenAICompatible, Anthropic]
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
    rp = chain(pair, "ok:chunks=100:gap=1", "ok:chunks=1")
    async with rp.stream_chat_with_history(HI, "m", 0.0) as chunks:
        for _ in range(3):
            await chunks.__anext__()
        left = anyio.current_time()
    assert await server.wait_for_disconnect(0) == left
    assert server.aborted == [0]
    assert len(server.requests) == 1


async def test_cancelling_the_caller_closes_the_upstream_connection(
    server: FakeLLMServer, pair: tuple[OpenAICompatible, Anthropic]
) -> None:
    """The caller's deadline expiring during a hung request closes it; nothing else is sent."""
    rp = chain(pair, "hang_headers", "ok:chunks=1", first_chunk_timeout=None)
    with anyio.move_on_after(5):
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


@pytest.mark.parametrize("order", ["openai-first", "anthropic-first"])
@pytest.mark.parametrize("api", ["chunks", "events"])
async def test_a_stream_of_only_its_terminator_fails_over(
    server: FakeLLMServer, pair: tuple[OpenAICompatible, Anthropic], order: str, api: str
) -> None:
    """A primary that sends only [DONE] / message_stop is empty: the backup answers at once."""
    a, b = pair
    first, second = (a, b) if order == "openai-first" else (b, a)
    llm = ReliableProvider(
        [("primary", first), ("backup", second)],
        model_aliases={"primary": {"m": "empty"}, "backup": {"m": "ok:chunks=2"}},
    )
    with fallback_scope():
        if api == "chunks":
            async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
                got = [c async for c in chunks]
            text = "".join(c.delta for c in got)
            reason = got[-1].finish_reason
        else:
            async with llm.stream_chat(ChatRequest(HI), "m", 0.0) as events:
                items = [e async for e in events]
            text = "".join(e.text for e in items if isinstance(e, TextDelta))
            final = items[-1]
            assert isinstance(final, Final)
            reason = final.finish_reason
        info = take_last_provider_fallback()
    assert (text, reason) == ("tok0 tok1 ", "stop")
    assert info is not None and info.actual_provider == "backup"
    assert [r.model for r in server.requests] == ["empty", "ok:chunks=2"]
    assert anyio.current_time() == 0.0  # no backoff: an empty stream is not retried


@pytest.mark.parametrize("api", ["chunks", "events"])
async def test_every_candidate_only_a_terminator_is_a_clean_empty_answer(
    server: FakeLLMServer, pair: tuple[OpenAICompatible, Anthropic], api: str
) -> None:
    """When every candidate sends only its terminator, the caller gets one bare final, no error."""
    llm = chain(pair, "empty", "empty")
    if api == "chunks":
        async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
            got: list[object] = [c async for c in chunks]
        assert got == [StreamChunk(is_final=True)]
    else:
        async with llm.stream_chat(ChatRequest(HI), "m", 0.0) as events:
            got = [e async for e in events]
        assert got == [Final()]
    assert [r.model for r in server.requests] == ["empty", "empty"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_429_with_retry_after_2_is_waited_out_on_the_primary(
    server: FakeLLMServer, pair: tuple[OpenAICompatible, Anthropic], stream: bool
) -> None:
    """A real 429 with retry-after: 2 makes the request wait 2 s for its preferred route."""
    server.script("busy", ["status:429:retry_after=2", "ok:chunks=2"])
    llm = chain(pair, "busy", "ok:chunks=3")
    if stream:
        async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
            text = "".join([c.delta async for c in chunks])
    else:
        text = await llm.chat_with_history(HI, "m", 0.0)
    assert text == "tok0 tok1 "
    assert [(r.model, r.received_at) for r in server.requests] == [("busy", 0.0), ("busy", 2.0)]
