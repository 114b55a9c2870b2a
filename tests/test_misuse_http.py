"""What a test author's mistakes look like over real HTTP: a fake-server spec typo, two names.

A typo in a fake-server behaviour must stop the test at once (never pass for
a working failover), and a provider named twice must not make the failure
trail mix the two names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from reliant import ChatMessage, FailoverError, FakeServerSpecError, ReliableProvider
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


def chain(pair: tuple[OpenAICompatible, Anthropic], primary_model: str) -> ReliableProvider:
    return ReliableProvider(
        list(pair), model_aliases={"primary": {"m": primary_model}, "backup": {"m": "ok"}}
    )


def paths(server: FakeLLMServer) -> list[tuple[str, str | None]]:
    return [(r.path, r.model) for r in server.requests]


async def test_fake_server_typo_is_raised_as_is_not_failed_over(
    server: FakeLLMServer, pair: tuple[OpenAICompatible, Anthropic]
) -> None:
    """A behaviour typo (``ok:chunk=2``) raises FakeServerSpecError at once: no retry, no backup."""
    rp = chain(pair, "ok:chunk=2")
    with pytest.raises(FakeServerSpecError) as caught:
        await rp.chat_with_history(HI, "m", 0.0)
    assert str(caught.value) == (
        "primary: reliant fake server: unknown behaviour argument 'chunk' in 'ok:chunk=2' "
        "(did you mean 'chunks'?)"
    )
    assert caught.value.kind == "fake_server_spec" and caught.value.status_code == 400
    assert paths(server) == [("/v1/chat/completions", "ok:chunk=2")]
    assert anyio.current_time() == 0.0


async def test_misread_behaviour_in_a_stream_is_raised_from_the_iteration(
    server: FakeLLMServer, pair: tuple[OpenAICompatible, Anthropic]
) -> None:
    """A failover test written with ``hang`` is not served by the primary nor the backup."""
    rp = chain(pair, "hang")
    with pytest.raises(FakeServerSpecError, match="did you mean 'hang_headers'"):
        async with rp.stream_chat_with_history(HI, "m", 0.0) as chunks:
            async for _ in chunks:
                pass
    assert paths(server) == [("/v1/chat/completions", "hang")]


async def test_provider_named_once_and_the_trail_uses_one_name(server: FakeLLMServer) -> None:
    """Bare providers take their own name; a pair's name wins, in the whole trail line."""
    async with (
        OpenAICompatible(name="openai", base_url=server.openai_base_url, api_key="sk-o-1") as a,
        Anthropic(name="anthropic", base_url=server.anthropic_base_url, api_key="sk-a-2") as b,
    ):
        named_once = ReliableProvider([a, b], max_retries=0)
        renamed = ReliableProvider([("primary", a), ("backup", b)], max_retries=0)
        for llm, first, second in (
            (named_once, "openai", "anthropic"),
            (renamed, "primary", "backup"),
        ):
            with pytest.raises(FailoverError) as caught:
                await llm.simple_chat("hi", "status:500", 0.0)
            lines = [str(x) for x in caught.value.attempts]
            assert len(lines) == 2
            for line, name in zip(lines, (first, second), strict=True):
                assert line.startswith(
                    f"provider={name} model=status:500 attempt 1/1: retryable; "
                    f"error={name} API error (500 Internal Server Error): "
                ), line
    with pytest.raises(TypeError, match="has no name"):
        ReliableProvider([ReliableProvider([a])])
