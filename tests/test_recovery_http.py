"""Mid-stream recovery over real loopback HTTP: both protocols, both stream APIs, every mode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from reliant import (
    ChatMessage,
    ChatRequest,
    ContentFilterError,
    FailoverError,
    Final,
    Provider,
    ProviderError,
    ReliableProvider,
    StreamChunk,
    StreamError,
    StreamEvent,
    StreamRestart,
    TextDelta,
    ToolSpec,
    fallback_scope,
    take_last_provider_fallback,
)
from reliant.providers import Anthropic, OpenAICompatible
from reliant.testing import FakeLLMServer
from reliant.testing.fake_server import RawResponse, http_response

pytestmark = pytest.mark.anyio

HI = [ChatMessage.user("hi")]
CANON = "".join(f"tok{i} " for i in range(6))
FAULTS = {
    "cut": "cut:after=2:chunks=6",
    "stall": "hang_body:after=2:chunks=6",
    "malformed": "malformed:after=2:chunks=6",
}
Three = tuple[OpenAICompatible, Anthropic, OpenAICompatible]
WEATHER = ToolSpec("get_weather", "Weather for a place.", {"type": "object"})


@pytest.fixture(params=["openai-first", "anthropic-first"])
async def providers(
    request: pytest.FixtureRequest, server: FakeLLMServer
) -> AsyncIterator[tuple[Provider, Provider, str]]:
    """(faulty primary, prefill-capable backup, backup's healthy model spec), both protocols."""
    async with (
        OpenAICompatible(
            name="oa", base_url=server.openai_base_url, api_key="sk-test-1", supports_prefill=True
        ) as oa,
        Anthropic(name="an", base_url=server.anthropic_base_url, api_key="sk-ant-test-2") as an,
    ):
        if request.param == "openai-first":
            yield oa, an, "ok:chunks=6"
        else:
            yield an, oa, "ok:prefill:chunks=6"


@pytest.fixture
async def three(server: FakeLLMServer) -> AsyncIterator[Three]:
    """An OpenAI-compatible primary, an Anthropic backup and a second OpenAI-compatible one."""
    async with (
        OpenAICompatible(name="oa", base_url=server.openai_base_url, api_key="k") as oa,
        Anthropic(name="an", base_url=server.anthropic_base_url, api_key="k") as an,
        OpenAICompatible(name="third", base_url=server.openai_base_url, api_key="k") as third,
    ):
        yield oa, an, third


def chain(
    providers: tuple[Provider, Provider, str], primary_model: str, mode: str, **kw: Any
) -> ReliableProvider:
    primary, backup, backup_model = providers
    return ReliableProvider(
        [("primary", primary), ("backup", backup)],
        kw.pop("max_retries", 0),
        idle_timeout=2.0,
        mid_stream=mode,  # type: ignore[arg-type]
        model_aliases={"primary": {"m": primary_model}, "backup": {"m": backup_model}},
        **kw,
    )


async def chunk_text(llm: ReliableProvider) -> tuple[str, list[StreamChunk]]:
    """The text a consumer that honours the restart signal ends up with."""
    got: list[StreamChunk] = []
    async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
        async for c in chunks:
            got.append(c)
    text = ""
    for c in got:
        text = c.delta if c.restarted else text + c.delta
    return text, got


async def event_text(llm: ReliableProvider) -> tuple[str, list[StreamEvent]]:
    got: list[StreamEvent] = []
    async with llm.stream_chat(ChatRequest(HI), "m", 0.0) as events:
        async for e in events:
            got.append(e)
    text = ""
    for e in got:
        if isinstance(e, StreamRestart):
            text = ""
        elif isinstance(e, TextDelta):
            text += e.text
    return text, got


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("api", ["chunks", "events"])
async def test_error_mode_surfaces_the_break(
    providers: tuple[Provider, Provider, str], server: FakeLLMServer, fault: str, api: str
) -> None:
    """mid_stream="error": a break after 2 chunks is a StreamError; the backup is never asked."""
    llm = chain(providers, FAULTS[fault], "error")
    with pytest.raises(StreamError):
        await (chunk_text(llm) if api == "chunks" else event_text(llm))
    assert [r.model for r in server.requests] == [FAULTS[fault]]


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("api", ["chunks", "events"])
async def test_restart_mode_delivers_the_whole_answer_after_the_signal(
    providers: tuple[Provider, Provider, str], server: FakeLLMServer, fault: str, api: str
) -> None:
    """mid_stream="restart": after the signal the text is exactly the canonical answer."""
    llm = chain(providers, FAULTS[fault], "restart")
    if api == "chunks":
        text, chunks = await chunk_text(llm)
        assert sum(c.restarted for c in chunks) == 1
        assert "".join(c.delta for c in chunks[:2]) == "tok0 tok1 "
        assert chunks[-1].is_final and chunks[-1].finish_reason == "stop"
    else:
        text, events = await event_text(llm)
        assert events.count(StreamRestart()) == 1
        final = events[-1]
        assert isinstance(final, Final) and final.finish_reason == "stop"
    assert text == CANON
    last = server.requests[-1].json
    roles = [m["role"] for m in last["messages"]]
    assert roles[-1] == "user"  # the original request, no prefill


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("api", ["chunks", "events"])
async def test_continue_mode_finishes_the_same_answer(
    providers: tuple[Provider, Provider, str], server: FakeLLMServer, fault: str, api: str
) -> None:
    """mid_stream="continue": one answer, no restart, the prefill is the delivered text."""
    llm = chain(providers, FAULTS[fault], "continue")
    with fallback_scope():
        if api == "chunks":
            text, chunks = await chunk_text(llm)
            assert not any(c.restarted for c in chunks)
            assert "".join(c.delta for c in chunks) == CANON
        else:
            text, events = await event_text(llm)
            assert StreamRestart() not in events
        info = take_last_provider_fallback()
    assert text == CANON
    last = server.requests[-1].json["messages"][-1]
    assert last["role"] == "assistant"
    content = last["content"]
    if isinstance(content, list):  # Anthropic content blocks
        content = "".join(block["text"] for block in content)
    assert content.rstrip() == "tok0 tok1"
    assert info is not None
    (rec,) = info.recoveries
    assert (rec.provider, rec.after_chars, rec.mode, rec.to_provider) == (
        "primary",
        len("tok0 tok1 "),
        "continue",
        "backup",
    )


async def test_continuation_overlap_is_trimmed(three: Three) -> None:
    """A continuation that repeats the last 9 characters of the prefill is trimmed."""
    oa, an, _ = three
    llm = chain((oa, an, "ok:chunks=6:overlap=9"), FAULTS["cut"], "continue")
    text, _chunks = await chunk_text(llm)
    assert text == CANON


async def test_rejected_prefill_restarts_with_the_signal(
    server: FakeLLMServer, three: Three
) -> None:
    """A backup that rejects prefill with a 400: the next candidate restarts; complete answer."""
    oa, an, third = three
    llm = ReliableProvider(
        [("primary", oa), ("backup", an), ("third", third)],
        max_retries=0,
        mid_stream="continue",
        model_aliases={
            "primary": {"m": FAULTS["cut"]},
            "backup": {"m": "reject_prefill:chunks=6"},
            "third": {"m": "ok:chunks=6"},
        },
    )
    with fallback_scope():
        text, chunks = await chunk_text(llm)
        info = take_last_provider_fallback()
    assert text == CANON and sum(c.restarted for c in chunks) == 1
    assert [r.model for r in server.requests] == [
        FAULTS["cut"],
        "reject_prefill:chunks=6",
        "ok:chunks=6",
    ]
    assert info is not None and info.actual_provider == "third"
    assert info.recoveries[0].mode == "restart"


async def test_tool_call_in_progress_restarts(server: FakeLLMServer, three: Three) -> None:
    """A cut inside a tool call's arguments restarts the answer even in continue mode."""
    oa, an, _ = three
    llm = chain((oa, an, "tools"), "cut:after=3:calls=1:chunks=2", "continue")
    async with llm.stream_chat(ChatRequest(HI, tools=[WEATHER]), "m", 0.0) as events:
        got = [e async for e in events]
    assert StreamRestart() in got
    assert server.requests[-1].json["messages"][-1]["role"] == "user"


async def test_recovery_limit_over_http(server: FakeLLMServer, three: Three) -> None:
    """max_stream_recoveries=1 and two breaking candidates: StreamError, third never asked."""
    a, b, c = three
    llm = ReliableProvider(
        [("a", a), ("b", b), ("c", c)],
        max_retries=0,
        mid_stream="restart",
        model_aliases={
            "a": {"m": "cut:after=1"},
            "b": {"m": "reset:after=1"},
            "c": {"m": "ok"},
        },
    )
    with pytest.raises(StreamError):
        await chunk_text(llm)
    assert [r.model for r in server.requests] == ["cut:after=1", "reset:after=1"]


@pytest.mark.parametrize("api", ["chunks", "events"])
async def test_finish_reason_without_done_completes(
    providers: tuple[Provider, Provider, str], server: FakeLLMServer, api: str
) -> None:
    """A clean end after a finish reason, without [DONE]/message_stop, is a complete answer."""
    llm = chain(providers, "no_done:chunks=3", "error")
    text, _ = await (chunk_text(llm) if api == "chunks" else event_text(llm))
    assert text == "tok0 tok1 tok2 "
    assert len(server.requests) == 1


async def test_no_finish_reason_and_no_done_is_an_error(
    providers: tuple[Provider, Provider, str], server: FakeLLMServer
) -> None:
    """A clean end without finish reason or terminator stays a StreamError."""
    llm = chain(providers, "no_terminator:chunks=3", "error")
    with pytest.raises(StreamError):
        await chunk_text(llm)


async def test_overflow_moves_to_a_larger_context_candidate(
    providers: tuple[Provider, Provider, str], server: FakeLLMServer
) -> None:
    """One huge message overflows a 500-char window, is never retried there, the backup serves."""
    primary, backup, _ = providers
    llm = ReliableProvider(
        [("primary", primary), ("backup", backup)],
        max_retries=3,
        model_aliases={"primary": {"m": "context:500"}, "backup": {"m": "context:100000"}},
    )
    huge = [ChatMessage.user("x" * 2000)]
    with fallback_scope():
        assert await llm.chat_with_history(huge, "m", 0.0) == CANON[: len("tok0 ") * 5]
        info = take_last_provider_fallback()
    assert info is not None and info.actual_provider == "backup"
    assert [r.model for r in server.requests] == ["context:500", "context:100000"]
    both = ReliableProvider(
        [("primary", primary), ("backup", backup)],
        model_aliases={"primary": {"m": "context:500"}, "backup": {"m": "context:600"}},
    )
    with pytest.raises(FailoverError, match="context window"):
        await both.chat_with_history(huge, "m", 0.0)


async def test_content_filter_is_final_over_http(
    providers: tuple[Provider, Provider, str], server: FakeLLMServer
) -> None:
    """A content-filter refusal is one call in total; the opt-in falls back."""
    llm = chain(providers, "content_filter", "error", max_retries=2)
    with pytest.raises(ContentFilterError):
        await llm.chat_with_history(HI, "m", 0.0)
    assert len(server.requests) == 1
    opt_in = chain(providers, "content_filter", "error", fallback_on_content_filter=True)
    assert await opt_in.chat_with_history(HI, "m", 0.0) == CANON[: len("tok0 ") * 6]
    assert len(server.requests) == 3


# -- the cause of a committed break reaches the caller (issue 20, item 1) ------------------

INBAND = "inband_error:after=2:chunks=6:status=529"  # Anthropic: overloaded_error


@pytest.mark.parametrize("mode", ["error", "restart", "continue"])
@pytest.mark.parametrize("api", ["chunks", "events"])
async def test_in_band_break_keeps_the_leafs_provider_error_as_cause(
    providers: tuple[Provider, Provider, str], server: FakeLLMServer, mode: str, api: str
) -> None:
    """Once recovery is spent, an in-band break's direct cause is the leaf's ProviderError."""
    primary, backup, _ = providers
    llm = chain((primary, backup, INBAND), INBAND, mode)
    with pytest.raises(StreamError) as caught:
        await (chunk_text(llm) if api == "chunks" else event_text(llm))
    cause = caught.value.__cause__
    assert type(cause) is ProviderError, repr(cause)
    assert cause.status_code == 529
    assert cause is not caught.value
    expected = 1 if mode == "error" else 2  # the backup breaks too; one recovery allowed
    assert len(server.requests) == expected


@pytest.mark.parametrize("api", ["chunks", "events"])
async def test_in_band_content_filter_after_text_is_final_with_its_cause(
    server: FakeLLMServer, api: str
) -> None:
    """A content-filter error event after text is never recovered; its cause is the filter."""
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"Hello "}}]}\n\n'
        b'data: {"error":{"message":"The response was filtered","type":"invalid_request_error",'
        b'"param":null,"code":"content_filter"}}\n\n'
    )
    server.script_raw(
        "filtered",
        [RawResponse([http_response(body, headers={"content-type": "text/event-stream"})])],
    )
    async with (
        OpenAICompatible(name="oa", base_url=server.openai_base_url, api_key="k") as oa,
        Anthropic(name="an", base_url=server.anthropic_base_url, api_key="k") as an,
    ):
        llm = ReliableProvider(
            [("primary", oa), ("backup", an)],
            0,
            mid_stream="restart",
            model_aliases={"primary": {"m": "filtered"}, "backup": {"m": "ok"}},
        )
        with pytest.raises(StreamError) as caught:
            await (chunk_text(llm) if api == "chunks" else event_text(llm))
    assert type(caught.value.__cause__) is ContentFilterError
    assert [r.model for r in server.requests] == ["filtered"]
