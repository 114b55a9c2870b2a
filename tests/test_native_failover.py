"""Gemini, Responses API and Azure OpenAI through ReliableProvider: every fault kind, on sockets.

Each fault is played by the fake server in the provider's own protocol
(chosen by the model name) on a primary; a healthy backup of the same kind
answers. Before the first item a fault fails over; after it, the caller
gets a StreamError; a content-filter refusal is final unless
``fallback_on_content_filter``. The last test chains the three clouds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx2
import pytest

from reliant import (
    ChatMessage,
    ChatRequest,
    ContentFilterError,
    FailoverError,
    Final,
    ReliableProvider,
    StreamError,
    TextDelta,
    fallback_scope,
    take_last_provider_fallback,
)
from reliant._provider import Provider
from reliant.providers import AzureOpenAI, Gemini, OpenAIResponses, create_client
from reliant.testing import FakeLLMServer, serve_fake_llm

pytestmark = pytest.mark.anyio

HI = [ChatMessage.user("hi")]
KINDS = ["gemini", "responses", "azure"]
ANSWER = "tok0 tok1 "


_CLIENT: list[httpx2.AsyncClient] = []


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    """The fake server, and one client for every provider a test builds, closed with it
    (all its sockets) when the test ends. (pytest-trio starts fixtures a test does not
    name concurrently with it, so the client comes with the fixture every test names.)"""
    async with serve_fake_llm() as fake, create_client() as client:
        _CLIENT[:] = [client]
        try:
            yield fake
        finally:
            _CLIENT.clear()


def build(kind: str, server: FakeLLMServer, name: str) -> Provider:
    key = f"{kind}-secret-key-0001"
    client = _CLIENT[0]
    if kind == "gemini":
        return Gemini(
            name=name,
            base_url=server.gemini_base_url,
            api_key=key,
            request_timeout=10.0,
            client=client,
        )
    if kind == "responses":
        return OpenAIResponses(
            name=name,
            base_url=server.responses_base_url,
            api_key=key,
            request_timeout=10.0,
            client=client,
        )
    return AzureOpenAI(
        name=name, base_url=server.azure_base_url, api_key=key, request_timeout=10.0, client=client
    )


def pair(kind: str, server: FakeLLMServer, fault: str, **kw: object) -> ReliableProvider:
    return ReliableProvider(
        [("primary", build(kind, server, "primary")), ("backup", build(kind, server, "backup"))],
        max_retries=0,
        first_chunk_timeout=5.0,
        model_aliases={"primary": {"m": fault}, "backup": {"m": "ok:chunks=2"}},
        **kw,  # type: ignore[arg-type]
    )


async def stream_text(llm: ReliableProvider, events: bool) -> str:
    if events:
        async with llm.stream_chat(ChatRequest(HI), "m", 0.0) as items:
            got = [e async for e in items]
        assert isinstance(got[-1], Final)
        return "".join(e.text for e in got if isinstance(e, TextDelta))
    async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
        return "".join([c.delta async for c in chunks])


BEFORE_FIRST_ITEM = [
    "status:500",
    "status:503",
    "status:429:retry_after=1",
    "inband_error",
    "inband_error:status=429",
    "cut:after=0",
    "reset:after=0",
    "hang_headers",
    "hang_body",
    "malformed",
    "empty",
    "no_terminator:chunks=0",
]


@pytest.mark.parametrize("events", [False, True], ids=["chunks", "events"])
@pytest.mark.parametrize("fault", BEFORE_FIRST_ITEM)
@pytest.mark.parametrize("kind", KINDS)
async def test_stream_fault_before_first_item_fails_over(
    server: FakeLLMServer, kind: str, fault: str, events: bool
) -> None:
    """A fault before the first item moves to the backup, which answers; one request each."""
    llm = pair(kind, server, fault)
    with fallback_scope():
        assert await stream_text(llm, events) == ANSWER
        info = take_last_provider_fallback()
    assert info is not None and info.actual_provider == "backup"
    assert [r.model for r in server.requests] == [fault, "ok:chunks=2"]
    hung = fault.startswith("hang")
    assert anyio.current_time() == pytest.approx(5.0 if hung else 0.0)


AFTER_FIRST_ITEM = [
    "cut:after=2",
    "reset:after=2",
    "malformed:after=2",
    "inband_error:after=2",
    "no_terminator",
]


@pytest.mark.parametrize("fault", AFTER_FIRST_ITEM)
@pytest.mark.parametrize("kind", KINDS)
async def test_stream_fault_after_first_item_is_a_stream_error(
    server: FakeLLMServer, kind: str, fault: str
) -> None:
    """After the first item the stream is committed: the caller gets a StreamError, no failover."""
    llm = pair(kind, server, fault)
    seen: list[str] = []
    with pytest.raises(StreamError):
        async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
            async for chunk in chunks:
                seen.append(chunk.delta)
    assert "".join(seen).startswith("tok0 ")
    assert [r.model for r in server.requests] == [fault]


async def test_hang_after_first_item_hits_the_idle_timeout(server: FakeLLMServer) -> None:
    """A stream stalling after its first items breaks at idle_timeout exactly, for each kind."""
    for kind in KINDS:
        llm = pair(kind, server, "hang_body:after=1", idle_timeout=3.0)
        with pytest.raises(StreamError, match="no data for 3 s"):
            async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
                async for _ in chunks:
                    start = anyio.current_time()
        assert anyio.current_time() - start == pytest.approx(3.0)


NON_STREAMING = [
    "status:500",
    "status:429:retry_after=1",
    "inband_error",
    "cut",
    "reset",
    "hang_headers",
    "hang_body",
    "malformed",
]


@pytest.mark.parametrize("fault", NON_STREAMING)
@pytest.mark.parametrize("kind", KINDS)
async def test_non_streaming_fault_fails_over(server: FakeLLMServer, kind: str, fault: str) -> None:
    """Non-streaming: each fault (a hang at request_timeout, 10 s) moves to the backup."""
    llm = pair(kind, server, fault)
    assert await llm.chat_with_history(HI, "m", 0.0) == ANSWER
    assert [r.model for r in server.requests] == [fault, "ok:chunks=2"]
    assert anyio.current_time() == pytest.approx(10.0 if fault.startswith("hang") else 0.0)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", KINDS)
async def test_content_filter_is_final_unless_fallback_is_asked_for(
    server: FakeLLMServer, kind: str, stream: bool
) -> None:
    """A refusal is a ContentFilterError with no fallback; fallback_on_content_filter moves on."""
    fault = "content_filter" if kind != "responses" else "content_filter:status=200"
    for fallback in (False, True):
        llm = pair(kind, server, fault, fallback_on_content_filter=fallback)
        if fallback:
            text = (
                await stream_text(llm, False)
                if stream
                else await llm.chat_with_history(HI, "m", 0.0)
            )
            assert text == ANSWER
        else:
            with pytest.raises(ContentFilterError):
                if stream:
                    await stream_text(llm, False)
                else:
                    await llm.chat_with_history(HI, "m", 0.0)
    assert [r.model for r in server.requests] == [fault, fault, "ok:chunks=2"]


@pytest.mark.parametrize("kind", KINDS)
async def test_every_candidate_failing_lists_both_attempts(
    server: FakeLLMServer, kind: str
) -> None:
    """When both candidates fail the trail names both, with their status."""
    llm = ReliableProvider(
        [("primary", build(kind, server, "primary")), ("backup", build(kind, server, "backup"))],
        max_retries=0,
    )
    with pytest.raises(FailoverError) as info:
        await llm.simple_chat("x", "status:503", 0.0)
    assert [a.provider for a in info.value.attempts] == ["primary", "backup"]
    assert "503" in str(info.value)


async def test_failover_across_gemini_responses_and_azure(server: FakeLLMServer) -> None:
    """AI Studio (429) -> Responses (response.failed after 200) -> Azure answers, streamed."""
    llm = ReliableProvider(
        [
            ("gemini", build("gemini", server, "gemini")),
            ("responses", build("responses", server, "responses")),
            ("azure", build("azure", server, "azure")),
        ],
        max_retries=0,
        model_aliases={
            "gemini": {"m": "status:429:retry_after=30"},
            "responses": {"m": "inband_error:status=500"},
            "azure": {"m": "ok:chunks=2"},
        },
    )
    with fallback_scope():
        assert await stream_text(llm, True) == ANSWER
        info = take_last_provider_fallback()
    assert info is not None and (info.actual_provider, info.actual_model) == (
        "azure",
        "ok:chunks=2",
    )
    assert [r.path.split("?")[0] for r in server.requests] == [
        "/v1beta/models/status:429:retry_after=30:streamGenerateContent",
        "/v1/responses",
        "/openai/v1/chat/completions",
    ]


async def test_tool_result_history_crosses_providers(server: FakeLLMServer) -> None:
    """A conversation holding a tool call's result is accepted by each provider's wire."""
    history = [
        ChatMessage.system("Use tools."),
        ChatMessage.user("Weather in Paris?"),
        ChatMessage.assistant('{"name": "get_weather", "arguments": {"location": "Paris"}}'),
        ChatMessage.tool('{"temperature": 21}'),
    ]
    for kind in KINDS:
        provider = build(kind, server, kind)
        assert await provider.chat_with_history(history, "ok:chunks=2", 0.0) == ANSWER
    gemini, responses, azure = (r.json for r in server.requests)
    assert gemini["contents"][-1] == {"role": "user", "parts": [{"text": '{"temperature": 21}'}]}
    assert responses["input"][-1] == {"role": "user", "content": '{"temperature": 21}'}
    assert azure["messages"][-1] == {"role": "tool", "content": '{"temperature": 21}'}
