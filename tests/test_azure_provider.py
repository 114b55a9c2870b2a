"""Azure OpenAI against the fake server over real loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from reliant import (
    ChatMessage,
    ChatRequest,
    ContentFilterError,
    Final,
    ProviderError,
    ReliableProvider,
    TextDelta,
    TokenUsage,
    UsageEvent,
)
from reliant.classify import classify
from reliant.providers import AzureOpenAI, OpenAICompatible
from reliant.testing.fake_server import FakeLLMServer

pytestmark = pytest.mark.anyio

KEY = "azure-resource-key-0001"
TEXT = "tok0 tok1 tok2 tok3 tok4 "
HI = [ChatMessage.user("Hi")]


@pytest.fixture
async def provider(server: FakeLLMServer) -> AsyncIterator[AzureOpenAI]:
    async with AzureOpenAI(base_url=server.azure_base_url, api_key=KEY) as p:
        yield p


async def collect(stream: Any) -> list[Any]:
    async with stream as items:
        return [item async for item in items]


async def test_v1_api_url_and_key_header(server: FakeLLMServer, provider: AzureOpenAI) -> None:
    """The v1 API: /openai/v1/chat/completions, the deployment as model, the key as api-key."""
    assert await provider.simple_chat("x", "my-gpt-4o", 0.2) == TEXT
    (request,) = server.requests
    assert request.path == "/openai/v1/chat/completions"
    assert request.headers["api-key"] == KEY
    assert "authorization" not in request.headers
    assert request.json["model"] == "my-gpt-4o"
    assert isinstance(provider, OpenAICompatible)
    assert provider.api_version is None


async def test_v1_base_url_given_whole(server: FakeLLMServer) -> None:
    """A base_url ending in /openai/v1 is accepted as the resource endpoint plus the v1 path."""
    async with AzureOpenAI(base_url=server.azure_base_url + "/openai/v1/", api_key=KEY) as p:
        await p.simple_chat("x", "ok", 0)
    assert server.requests[0].path == "/openai/v1/chat/completions"


async def test_deployment_urls_with_api_version(server: FakeLLMServer) -> None:
    """With api_version, each call's model names the deployment in the URL."""
    async with AzureOpenAI(
        base_url=server.azure_base_url, api_key=KEY, api_version="2024-10-21"
    ) as p:
        assert await p.simple_chat("x", "prod-4o", 0) == TEXT
        await collect(p.stream_chat_with_history(HI, "prod 4o/eu", 0))
    first, second = server.requests
    assert first.path == "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
    assert second.path == (
        "/openai/deployments/prod%204o%2Feu/chat/completions?api-version=2024-10-21"
    )
    assert second.model == "prod 4o/eu"


async def test_deployment_url_without_api_version_is_refused_by_azure(
    server: FakeLLMServer,
) -> None:
    """The fake answers a deployment URL lacking api-version with Azure's 404, as Azure does."""
    async with OpenAICompatible(base_url=server.azure_base_url + "/openai/deployments/d") as p:
        with pytest.raises(ProviderError) as info:
            await p.simple_chat("x", "ok", 0)
    assert info.value.status_code == 404


@pytest.mark.parametrize("stream", [False, True])
async def test_prompt_content_filter_400(provider: AzureOpenAI, stream: bool) -> None:
    """Azure's 400 content_filter with innererror is a ContentFilterError, never retried."""
    with pytest.raises(ContentFilterError) as info:
        if stream:
            await collect(provider.stream_chat_with_history(HI, "content_filter", 0))
        else:
            await provider.simple_chat("x", "content_filter", 0)
    assert info.value.status_code == 400
    assert "ResponsibleAIPolicyViolation" in str(info.value)
    assert classify(info.value).reason == "content_filter"


async def test_completion_content_filter_finish(provider: AzureOpenAI) -> None:
    """finish_reason content_filter after text ends the stream with that reason."""
    events = await collect(provider.stream_chat(ChatRequest(HI), "content_filter:after=2", 0))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["tok0 ", "tok1 "]
    end = events[-1]
    assert isinstance(end, Final) and end.finish_reason == "content_filter"


async def test_prompt_filter_results_chunk_is_skipped(provider: AzureOpenAI) -> None:
    """Azure's first chunk (empty choices, prompt_filter_results) adds nothing; usage is read."""
    events = await collect(provider.stream_chat(ChatRequest(HI), "ok:chunks=2", 0))
    usage = TokenUsage(10, 2, 0)
    assert events == [
        TextDelta("tok0 "),
        TextDelta("tok1 "),
        UsageEvent(usage),
        Final("stop", "stop", "ok:chunks=2", usage),
    ]


async def test_stream_options_refused_then_dropped(server: FakeLLMServer) -> None:
    """A deployment refusing stream_options gets the stream again without it, and never again."""
    async with AzureOpenAI(
        base_url=server.azure_base_url, api_key=KEY, api_version="2024-02-01"
    ) as p:
        first = await collect(p.stream_chat_with_history(HI, "ok:reject_stream_options", 0))
        second = await collect(p.stream_chat_with_history(HI, "ok:reject_stream_options", 0))
    assert "".join(c.delta for c in first) == TEXT == "".join(c.delta for c in second)
    assert first[-1].usage is None
    assert [r.json.get("stream_options") for r in server.requests] == [
        {"include_usage": True},
        None,
        None,
    ]


async def test_stream_options_false_never_sent(server: FakeLLMServer) -> None:
    """stream_options=False never sends it; True sends it and leaves the refusal to the caller."""
    async with AzureOpenAI(base_url=server.azure_base_url, api_key=KEY, stream_options=False) as p:
        await collect(p.stream_chat_with_history(HI, "ok:reject_stream_options", 0))
    async with AzureOpenAI(base_url=server.azure_base_url, api_key=KEY, stream_options=True) as p:
        with pytest.raises(ProviderError) as info:
            await collect(p.stream_chat_with_history(HI, "ok:reject_stream_options", 0))
    assert info.value.status_code == 400
    assert [r.json.get("stream_options") for r in server.requests] == [
        None,
        {"include_usage": True},
    ]


async def test_other_400s_are_not_retried_without_stream_options(
    server: FakeLLMServer, provider: AzureOpenAI
) -> None:
    """Only a 400 naming stream_options triggers the resend."""
    with pytest.raises(ProviderError):
        await collect(provider.stream_chat_with_history(HI, "status:400", 0))
    assert len(server.requests) == 1


async def test_rate_limit_retry_after(server: FakeLLMServer) -> None:
    """Azure's 429 retry-after header is honoured exactly by ReliableProvider."""
    server.script("m", ["status:429:retry_after=4", "ok"])
    async with AzureOpenAI(base_url=server.azure_base_url, api_key=KEY) as p:
        llm = ReliableProvider([("azure", p)], max_retries=1, base_backoff=0.5)
        start = anyio.current_time()
        assert await llm.simple_chat("x", "m", 0) == TEXT
    assert anyio.current_time() - start == pytest.approx(4.0)


def test_configuration_errors_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """api_version must be a non-empty string; AZURE_OPENAI_API_KEY is read; prefill is off."""
    with pytest.raises(ValueError, match="api_version"):
        AzureOpenAI(base_url="https://r.openai.azure.com", api_key="k", api_version="")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "env-azure-key-1")
    p = AzureOpenAI(base_url="https://r.openai.azure.com")
    assert p._headers["api-key"] == "env-azure-key-1"
    assert p.supports_native_tools and p.supports_streaming and not p.supports_prefill
    assert p.name == "azure_openai"


async def test_warmup(server: FakeLLMServer, provider: AzureOpenAI) -> None:
    """warmup GETs the v1 model list and never raises."""
    await provider.warmup()
    assert server.requests[0].path == "/openai/v1/models"
