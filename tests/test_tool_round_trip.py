"""A tool call made on one provider, continued on another: each wire's shape, ids mapped."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reliant import ChatMessage, ChatRequest, ToolCall, ToolCallEvent, ToolSpec
from reliant.providers import Anthropic, AzureOpenAI, Gemini, OpenAICompatible, OpenAIResponses
from reliant.providers._wire import tool_call_id
from reliant.testing import FakeLLMServer

pytestmark = pytest.mark.anyio

WEATHER = ToolSpec("get_weather", "Weather for a city.", {"type": "object"})
KEY = "round-trip-key-0001"


def conversation(call: ToolCall) -> list[ChatMessage]:
    return [
        ChatMessage.system("Use tools."),
        ChatMessage.user("Weather in Lyon?"),
        ChatMessage.assistant("Checking.", [call]),
        ChatMessage.tool('{"temperature": 21}', call.id),
    ]


async def sent(server: FakeLLMServer, provider: Any, history: list[ChatMessage]) -> Any:
    async with provider:
        await provider.chat(ChatRequest(history, [WEATHER]), "ok:chunks=1", 0.0)
    return server.requests[-1].json


async def test_gemini_call_continued_on_every_other_wire(server: FakeLLMServer) -> None:
    """A call Gemini made (id call_0) and its result reach each wire in that wire's shape."""
    request = ChatRequest([ChatMessage.user("q")], [WEATHER])
    async with (
        Gemini(base_url=server.gemini_base_url, api_key=KEY) as gemini,
        gemini.stream_chat(request, "tools", 0) as events,
    ):
        (call,) = [e.call async for e in events if isinstance(e, ToolCallEvent)]
    assert call.id == "call_0"
    history = conversation(call)
    args = json.loads(call.arguments)

    body = await sent(
        server, OpenAIResponses(base_url=server.responses_base_url, api_key=KEY), history
    )
    assert body["instructions"] == "Use tools."
    assert body["input"][1:] == [
        {"role": "assistant", "content": "Checking."},
        {
            "type": "function_call",
            "call_id": "call_0",
            "name": "get_weather",
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": "call_0", "output": '{"temperature": 21}'},
    ]

    body = await sent(server, Anthropic(base_url=server.anthropic_base_url, api_key=KEY), history)
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_0", "name": "get_weather", "input": args},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_0", "content": '{"temperature": 21}'}
            ],
        },
    ]

    for provider in (
        OpenAICompatible(base_url=server.openai_base_url, api_key=KEY),
        AzureOpenAI(base_url=server.azure_base_url, api_key=KEY),
    ):
        body = await sent(server, provider, history)
        assert body["messages"][2:] == [
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": call.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_0", "content": '{"temperature": 21}'},
        ]


async def test_responses_call_continued_on_gemini(server: FakeLLMServer) -> None:
    """A Responses API call_id becomes the functionCall id, and its result a functionResponse
    carrying the call's function name and the result's JSON object."""
    call = ToolCall("call_abc123", "get_weather", '{"city": "Lyon"}')
    body = await sent(
        server, Gemini(base_url=server.gemini_base_url, api_key=KEY), conversation(call)
    )
    assert body["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"text": "Checking."},
                {
                    "functionCall": {
                        "id": "call_abc123",
                        "name": "get_weather",
                        "args": {"city": "Lyon"},
                    }
                },
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "id": "call_abc123",
                        "name": "get_weather",
                        "response": {"temperature": 21},
                    }
                }
            ],
        },
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("toolu_01A09q90qw90lq917835lq9", "toolu_01A09q90qw90lq917835lq9"),
        ("call:7/x y", "call_7_x_y"),
        ("a" * 41, None),  # too long for OpenAI: a hash
        ("", None),
    ],
)
def test_ids_mapped_where_a_format_is_required(raw: str, expected: str | None) -> None:
    """Ids outside [A-Za-z0-9_-]{1,40} are mapped deterministically; valid ones are kept."""
    mapped = tool_call_id(raw)
    assert mapped == tool_call_id(raw)  # a call and its result map alike
    assert 0 < len(mapped) <= 40 and all(c.isalnum() or c in "_-" for c in mapped)
    if expected is not None:
        assert mapped == expected
    else:
        assert mapped.startswith("call_") and len(mapped) == 40


async def test_mapped_ids_match_between_call_and_result(server: FakeLLMServer) -> None:
    """An id Anthropic would refuse is mapped the same in the tool_use and its tool_result."""
    call = ToolCall("fc:7/🙂", "get_weather", "not json")
    body = await sent(
        server, Anthropic(base_url=server.anthropic_base_url, api_key=KEY), conversation(call)
    )
    use = body["messages"][1]["content"][1]
    result = body["messages"][2]["content"][0]
    assert use["id"] == result["tool_use_id"] == "fc_7__"
    assert use["input"] == {"arguments": "not json"}


def test_plain_messages_are_unchanged() -> None:
    """Messages without tool fields are the same records as before (role and content)."""
    assert ChatMessage.tool("t") == ChatMessage("tool", "t")
    assert ChatMessage.assistant("a").tool_calls == ()
    assert ChatMessage("assistant", "a", [ToolCall("c", "f", "{}")]).tool_calls == (
        ToolCall("c", "f", "{}"),
    )
