"""Real recorded provider responses replayed over loopback (see tests/recorded/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reliant import (
    ChatMessage,
    ChatRequest,
    Final,
    ReliableProvider,
    StreamChunk,
    TextDelta,
    TokenUsage,
    UsageEvent,
)
from reliant.providers import OpenAICompatible
from reliant.testing import FakeLLMServer
from reliant.testing.fake_server import RawResponse, http_response

pytestmark = pytest.mark.anyio

RECORDED = Path(__file__).parent / "recorded"
SSE = {"content-type": "text/event-stream"}
HI = [ChatMessage.user("hi")]


def replay(server: FakeLLMServer, model: str, name: str) -> None:
    """Answer every request for ``model`` with the recorded file ``name``, as sent."""
    body = (RECORDED / name).read_bytes()
    server.script_raw(model, [RawResponse([http_response(body, headers=SSE)], then="close")])


async def test_openrouter_usage_beside_a_null_finish_reason_is_read(server: FakeLLMServer) -> None:
    """OpenRouter's trailing usage chunk (empty delta, null finish) reaches events and chunks."""
    replay(server, "qwen/qwen3", "openrouter_usage_null_finish.sse")
    usage = TokenUsage(input_tokens=14, output_tokens=2)
    async with OpenAICompatible(name="openrouter", base_url=server.openai_base_url) as p:
        llm = ReliableProvider([("openrouter", p)])
        async with llm.stream_chat(ChatRequest(HI), "qwen/qwen3", 0.0) as events:
            got = [e async for e in events]
        async with p.stream_chat_with_history(HI, "qwen/qwen3", 0.0) as chunks:
            last: StreamChunk = [c async for c in chunks][-1]
    assert [e.text for e in got if isinstance(e, TextDelta)] == ["你好", "\uff01"]
    assert [e for e in got if isinstance(e, UsageEvent)] == [UsageEvent(usage)]
    final = got[-1]
    assert isinstance(final, Final)
    assert (final.finish_reason, final.usage, final.model) == ("stop", usage, "qwen/qwen3")
    assert last.is_final and last.usage == usage
