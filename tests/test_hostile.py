"""Hostile and broken upstreams: bounded memory, deadlines, lying fields, secrets.

Every test plays one kind of misbehaving server against both HTTP providers
(through the fake server's raw-response hooks, or straight into the parser)
and checks that the caller sees a typed result or a reliant error, in
bounded memory and time, with no secret in any text.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import random
import time
import traceback
import tracemalloc
from typing import Any
from urllib.parse import quote, quote_plus

import anyio
import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends_support import BACKENDS, run_on
from hostile_support import (
    bomb,
    call,
    drain_stream,
    lied_to,
    outcome_of,
    paths,
    raw_body,
    replaced,
)
from reliant import (
    ChatMessage,
    ChatRequest,
    FailoverError,
    Final,
    Provider,
    ProviderError,
    ReliableProvider,
    StreamError,
    TextDelta,
    ToolCallEvent,
)
from reliant._sanitize import register_secret
from reliant.backoff import MAX_RETRY_AFTER, next_backoff
from reliant.classify import parse_retry_after as classify_retry_after
from reliant.providers import Anthropic, OpenAICompatible, create_client, parse_retry_after
from reliant.providers._http import HTTPProvider, SSELineDecoder
from reliant.providers._limits import ResponseTooLarge
from reliant.testing.fake_server import (
    Behavior,
    FakeLLMServer,
    RawResponse,
    http_response,
    trickle,
)

pytestmark = pytest.mark.anyio

NAMES = ["openai", "anthropic"]
KEY = "k3y/with+odd=chars&more-0123456789"
MiB = 2**20
SSE = {"content-type": "text/event-stream"}


def build(name: str, server: FakeLLMServer, **kwargs: Any) -> HTTPProvider:
    if name == "openai":
        return OpenAICompatible(base_url=server.openai_base_url, **{"api_key": KEY, **kwargs})
    return Anthropic(base_url=server.anthropic_base_url, **{"api_key": KEY, **kwargs})


def sse_event(name: str, data: dict[str, Any]) -> str:
    if name == "openai":
        return f"data: {json.dumps(data)}\n\n"
    return f"event: {data.get('type')}\ndata: {json.dumps(data)}\n\n"


OPENAI_HI = {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
ANTHROPIC_HI = {
    "type": "content_block_delta",
    "index": 0,
    "delta": {"type": "text_delta", "text": "hi"},
}


def first_event(name: str) -> str:
    return sse_event(name, OPENAI_HI if name == "openai" else ANTHROPIC_HI)


# -- bounded memory -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", NAMES)
async def test_gzip_bomb_refused_at_cap_in_bounded_memory(
    server: FakeLLMServer, name: str, stream: bool
) -> None:
    """A gzip bomb (64 KiB -> 64 MiB) is refused at max_response_bytes, memory far below 2x cap.

    httpx2 inflates in pieces of at most 1 MiB; a non-streaming body holds the
    cap plus two or three pieces at the peak, a stream only a few pieces.
    """
    cap = 16 * MiB
    pad = b"p" * 4000  # long events: few of them, so tracemalloc's cost stays small
    unit = b'data: {"type":"ping","choices":[],"pad":"' + pad + b'"}\n\n' if stream else b"a"
    body = bomb(64 * MiB, unit)
    headers = {**(SSE if stream else {"content-type": "application/json"})}
    headers["content-encoding"] = "gzip"
    server.script_raw("bomb", [RawResponse([http_response(body, headers=headers)])])
    async with build(name, server, max_response_bytes=cap) as provider:
        gc.collect()
        tracemalloc.start()
        try:
            with pytest.raises(ProviderError) as info:
                await call(provider, "bomb", stream)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert info.value.kind == "response_too_large"
    assert f"larger than {cap} bytes" in str(info.value)
    assert peak < (1.3 if not stream else 0.5) * cap


@pytest.mark.parametrize("name", NAMES)
async def test_huge_line_refused_at_cap_quickly(server: FakeLLMServer, name: str) -> None:
    """A 200 MB line (gzip, decoded in 1 MiB pieces) is refused at max_event_bytes in < 4 s CPU.

    Quadratic buffering took about 20 s; the bound leaves room for a slow machine.
    """
    headers = {**SSE, "content-encoding": "gzip"}
    line = bomb(200 * MiB, b"dddddddd")
    server.script_raw("line", [RawResponse([http_response(line, headers=headers)])])
    async with build(name, server) as provider:
        started = time.process_time()
        with pytest.raises(ProviderError) as info:
            await call(provider, "line", True)
        spent = time.process_time() - started
    assert info.value.kind == "response_too_large"
    assert "SSE line longer than 4194304 bytes" in str(info.value)
    assert spent < 4.0


def test_line_decoder_is_linear() -> None:
    """20 MB of one line in 1 KiB reads is held without quadratic copying and refused at the cap."""
    decoder = SSELineDecoder(max_line_bytes=16 * MiB)
    piece = b"y" * 1024
    started = time.process_time()
    with pytest.raises(ResponseTooLarge):
        for _ in range(20 * 1024):
            assert decoder.decode(piece) == []
    assert time.process_time() - started < 2.0  # quadratic copying: minutes
    decoder = SSELineDecoder(max_line_bytes=4 * MiB)
    for _ in range(1000):
        decoder.decode(piece)
    assert decoder.decode(b"\nnext\r\nlast\rx") == ["y" * 1024 * 1000, "next", "last"]
    assert decoder.flush() == ["x"]


@pytest.mark.parametrize("name", NAMES)
async def test_multi_line_event_capped(server: FakeLLMServer, name: str) -> None:
    """An event of many data lines is refused when their total passes max_event_bytes."""
    lines = "".join("data: " + "z" * 1000 + "\n" for _ in range(100))
    server.script("ev", [raw_body(lines + "\n")])
    async with build(name, server, max_event_bytes=50_000) as provider:
        with pytest.raises(ProviderError) as info:
            await call(provider, "ev", True)
    assert info.value.kind == "response_too_large"
    assert "SSE event larger than 50000 bytes" in str(info.value)


def tool_argument_events(name: str, pieces: int) -> str:
    if name == "openai":
        head = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}
        out = [sse_event(name, {"choices": [{"index": 0, "delta": {"tool_calls": [head]}}]})]
        for _ in range(pieces):
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": "a" * 1000}}]}
            out.append(sse_event(name, {"choices": [{"index": 0, "delta": delta}]}))
        return "".join(out) + "data: [DONE]\n\n"
    block = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    out = [sse_event(name, {"type": "content_block_start", "index": 0, "content_block": block})]
    for _ in range(pieces):
        delta = {"type": "input_json_delta", "partial_json": "a" * 1000}
        out.append(sse_event(name, {"type": "content_block_delta", "index": 0, "delta": delta}))
    return "".join(out) + sse_event(name, {"type": "message_stop"})


@pytest.mark.parametrize("name", NAMES)
async def test_tool_arguments_capped(server: FakeLLMServer, name: str) -> None:
    """A tool call whose accumulated arguments pass max_tool_arguments_bytes is refused."""
    server.script("tools", [raw_body(tool_argument_events(name, 20))])
    async with build(name, server, max_tool_arguments_bytes=10_000) as provider:
        with pytest.raises(ProviderError) as info:
            await call(provider, "tools", True)
        assert info.value.kind == "response_too_large"
        assert "tool call arguments larger than 10000 bytes" in str(info.value)
    async with build(name, server, max_tool_arguments_bytes=30_000) as provider:
        items = await call(provider, "tools", True)
    calls = [i.call for i in items if isinstance(i, ToolCallEvent)]
    assert len(calls) == 1 and len(calls[0].arguments) == 20_000


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", NAMES)
async def test_response_cap_uncompressed(server: FakeLLMServer, name: str, stream: bool) -> None:
    """A plain body larger than max_response_bytes is refused before it is all read."""
    block = b"data: {}\n\n" * 6000 if stream else b" " * 60_000
    head = http_response(b"", headers=SSE if stream else {"content-type": "application/json"})
    head = head.replace(b"content-length: 0", b"content-length: 60000000")
    server.script_raw("big", [RawResponse([head] + [block] * 1000, then="hang")])
    async with build(name, server, max_response_bytes=MiB) as provider:
        with pytest.raises(ProviderError) as info:
            await call(provider, "big", stream)
    assert info.value.kind == "response_too_large"


# -- time -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
async def test_trickled_answer_hits_request_timeout(server: FakeLLMServer, name: str) -> None:
    """A non-streaming answer trickled a byte a second ends at request_timeout exactly."""
    answer = http_response(b'{"choices": [], "content": []}' + b" " * 200)
    server.script_raw("slow", [trickle(answer, gap=1.0)])
    async with build(name, server, request_timeout=30) as provider:
        start = anyio.current_time()
        with pytest.raises(ProviderError) as info:
            await call(provider, "slow", False)
        assert anyio.current_time() - start == pytest.approx(30.0)
    assert info.value.kind == "timeout"
    assert "request_timeout" in str(info.value)


def trickle_after_first(name: str) -> RawResponse:
    """Headers and one complete event, then one byte of an endless line per second."""
    head = http_response(first_event(name).encode(), headers=SSE, chunked=True)
    head = head[: -len(b"0\r\n\r\n")] + b"6\r\ndata: \r\n"
    return RawResponse([head] + [b"1\r\n{\r\n"] * 600, gap=1.0)


@pytest.mark.parametrize("name", NAMES)
async def test_idle_timeout_fires_under_a_byte_trickle(server: FakeLLMServer, name: str) -> None:
    """Bytes that never complete an event do not reset the idle timer: it fires at idle exactly."""
    server.script_raw("trickle", [trickle_after_first(name)])
    async with build(name, server) as provider:
        llm = ReliableProvider([("p", provider)], max_retries=0, idle_timeout=5.0)
        seen: list[float] = []
        with pytest.raises(StreamError, match="no data for 5 s"):
            async with llm.stream_chat_with_history([ChatMessage.user("q")], "trickle", 0) as s:
                async for chunk in s:
                    assert chunk.delta == "hi"
                    seen.append(anyio.current_time())
        assert len(seen) == 1
        assert anyio.current_time() - seen[0] == pytest.approx(5.0)


@pytest.mark.parametrize("name", NAMES)
async def test_first_chunk_timeout_fires_under_a_byte_trickle(
    server: FakeLLMServer, name: str
) -> None:
    """A stream trickling bytes without an event fails over at first_chunk_timeout exactly."""
    head = http_response(b"", headers=SSE, chunked=True)[: -len(b"0\r\n\r\n")]
    server.script_raw("trickle", [RawResponse([head] + [b"1\r\n:\r\n"] * 600, gap=0.5)])
    async with build(name, server) as provider:
        llm = ReliableProvider([("p", provider)], max_retries=0, first_chunk_timeout=5.0)
        start = anyio.current_time()
        with pytest.raises(FailoverError, match="no first chunk within 5 s"):
            await drain_stream(llm, "trickle")
        assert anyio.current_time() - start == pytest.approx(5.0)


def test_max_retries_bounded() -> None:
    """max_retries above 100 is a ValueError naming it, so a typo cannot retry for hours."""
    with pytest.raises(ValueError, match="max_retries must be at most 100"):
        ReliableProvider([("p", OpenAICompatible(api_key="x"))], max_retries=10**9)


# -- lying responses ----------------------------------------------------------------------------


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


OPENAI_JSON_LIES = [
    ({"choices": [{"message": {"content": 5}}]}, "choices[0].message.content is int"),
    ({"choices": [{"message": {"content": [1]}}]}, "choices[0].message.content is a list"),
    ({"choices": [{"message": {"content": {}}}]}, "choices[0].message.content is an object"),
    ({"choices": None}, "response without choices"),
    ({"choices": {"0": {}}}, "choices is an object"),
    ({"id": "x"}, "response without choices"),
    ({"choices": ["x"]}, "choices[0] is a string"),
    (
        {"choices": [{"message": {"tool_calls": [{"id": 7, "function": {"name": "f"}}]}}]},
        "tool_calls[0].id is int",
    ),
    (
        {"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": 7}}]}}]},
        "tool_calls[0].function.name is int",
    ),
    (
        {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "3"}},
        "usage.prompt_tokens is a string",
    ),
    (
        {"choices": [{"message": {"content": "x"}}], "usage": {"completion_tokens": [3]}},
        "usage.completion_tokens is a list",
    ),
]
ANTHROPIC_JSON_LIES = [
    ({"content": [{"type": "text", "text": 5}]}, "content[0].text is int"),
    ({"content": 5}, "content is int"),
    ({"content": ["x"]}, "content[0] is a string"),
    ({"content": [{"type": "tool_use", "id": 7, "name": "f"}]}, "content[0].id is int"),
    ({"content": [{"type": "tool_use", "id": "t", "name": [1]}]}, "content[0].name is a list"),
    ({"content": [], "usage": {"input_tokens": "3"}}, "usage.input_tokens is a string"),
]


@pytest.mark.parametrize(
    ("name", "payload", "field"),
    [("openai", p, f) for p, f in OPENAI_JSON_LIES]
    + [("anthropic", p, f) for p, f in ANTHROPIC_JSON_LIES],
)
async def test_lying_json_answer(
    server: FakeLLMServer, name: str, payload: dict[str, Any], field: str
) -> None:
    """A non-streaming answer with a wrong-typed field is malformed_response naming the field."""
    server.script("lie", [raw_body(json.dumps(payload), "application/json")])
    async with build(name, server) as provider:
        with pytest.raises(ProviderError) as info:
            await call(provider, "lie", False)
    assert info.value.kind == "malformed_response"
    assert field in str(info.value)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", NAMES)
async def test_deeply_nested_json(server: FakeLLMServer, name: str, stream: bool) -> None:
    """JSON nested past the recursion limit is malformed_response, never a RecursionError."""
    body = deep(100_000)
    if stream:
        server.script("deep", [raw_body(f"data: {body}\n\n")])
    else:
        server.script("deep", [raw_body(body, "application/json")])
    async with build(name, server) as provider:
        with pytest.raises(ProviderError) as info:
            await call(provider, "deep", stream)
    assert info.value.kind == "malformed_response"
    assert "nested too deeply" in str(info.value)


OPENAI_STREAM_LIES = [
    ({"choices": [{"delta": {"content": 5}}]}, "choices[0].delta.content is int"),
    ({"choices": [{"delta": {"content": ["a"]}}]}, "choices[0].delta.content is a list"),
    ({"choices": [{"delta": {"content": {"a": 1}}}]}, "choices[0].delta.content is an object"),
    ({"choices": {"a": 1}}, "choices is an object"),
    ({"choices": [{"delta": "x"}]}, "choices[0].delta is a string"),
    (
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": 5}]}}]},
        "tool_calls[].id is int",
    ),
    (
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": 5}}]}}]},
        "tool_calls[].function.name is int",
    ),
    ({"choices": [], "usage": {"prompt_tokens": "1"}}, "usage.prompt_tokens is a string"),
]
ANTHROPIC_STREAM_LIES = [
    (
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}},
        "delta.text is int",
    ),
    (
        {"type": "message_start", "message": {"usage": {"input_tokens": [1]}}},
        "usage.input_tokens is a list",
    ),
    (
        {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": 1}},
        "content_block.id is int",
    ),
    ({"type": "content_block_stop", "index": "0"}, "index is a string"),
    ({"type": "message_delta", "usage": {"output_tokens": "9"}}, "usage.output_tokens is a string"),
]


@pytest.mark.parametrize(
    ("name", "event", "field"),
    [("openai", e, f) for e, f in OPENAI_STREAM_LIES]
    + [("anthropic", e, f) for e, f in ANTHROPIC_STREAM_LIES],
)
async def test_lying_stream_event(
    server: FakeLLMServer, name: str, event: dict[str, Any], field: str
) -> None:
    """A wrong-typed field is a malformed_response ProviderError before the first item, and a
    StreamError with that ProviderError as __cause__ after it."""
    lie = sse_event(name, event)
    server.script("early", [raw_body(lie)])
    server.script("late", [raw_body(first_event(name) + lie)])
    async with build(name, server) as provider:
        with pytest.raises(ProviderError) as info:
            await call(provider, "early", True)
        assert info.value.kind == "malformed_response"
        assert field in str(info.value)
        seen: list[Any] = []
        with pytest.raises(StreamError) as broken:
            async with provider.stream_chat(ChatRequest([]), "late", 0.0) as items:
                async for item in items:
                    seen.append(item)
    assert seen == [TextDelta("hi")]
    cause = broken.value.__cause__
    assert isinstance(cause, ProviderError) and cause.kind == "malformed_response"
    assert field in str(broken.value)


async def test_choices_missing_in_every_event(server: FakeLLMServer) -> None:
    """An OpenAI stream whose events never carry choices is malformed, not an empty answer."""
    server.script(
        "bare", [raw_body('data: {"id": 1}\n\ndata: {"choices": null}\n\ndata: [DONE]\n\n')]
    )
    async with build("openai", server) as provider:
        with pytest.raises(ProviderError, match="choices missing in every event") as info:
            await call(provider, "bare", True)
    assert info.value.kind == "malformed_response"


@pytest.mark.parametrize("name", NAMES)
async def test_terminator_only_is_an_empty_answer(server: FakeLLMServer, name: str) -> None:
    """A stream with only its terminator stays a valid (typed) empty answer."""
    async with build(name, server) as provider:
        assert await call(provider, "empty", True) == [Final()]


@pytest.mark.parametrize("name", NAMES)
async def test_bytes_past_content_length_never_read_as_next_response(
    server: FakeLLMServer, name: str
) -> None:
    """Bytes after Content-Length close the connection: the next call gets a real answer."""
    answer = {
        "choices": [{"message": {"content": "real"}}],
        "content": [{"type": "text", "text": "real"}],
    }
    forged = {
        "choices": [{"message": {"content": "forged"}}],
        "content": [{"type": "text", "text": "forged"}],
    }
    data = http_response(json.dumps(answer).encode()) + http_response(json.dumps(forged).encode())
    server.script_raw("smuggle", [RawResponse([data], then="keep")])
    async with build(name, server) as provider:
        first = await provider.chat_with_system(None, "q", "smuggle", 0)
        second = await provider.chat_with_system(None, "q", "ok:chunks=1", 0)
    assert (first, second) == ("real", "tok0 ")
    assert server.requests[0].connection != server.requests[1].connection


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", NAMES)
async def test_undecodable_body_closes_everything(
    server: FakeLLMServer, name: str, stream: bool
) -> None:
    """A body that is not the gzip it claims is malformed_response; the pool slot comes back."""
    headers = {**(SSE if stream else {"content-type": "application/json"})}
    headers["content-encoding"] = "gzip"
    server.script_raw(
        "junk", [RawResponse([http_response(b"\x1f\x8bnot gzip at all", headers=headers)])]
    )
    async with create_client(limits=httpx2.Limits(max_connections=1)) as client:
        provider = build(name, server, client=client)
        for _ in range(3):  # one connection: a lost slot would hang the next call
            with anyio.fail_after(5), pytest.raises(ProviderError) as info:
                await call(provider, "junk", stream)
            assert info.value.kind == "malformed_response"
        with anyio.fail_after(5):
            assert await provider.chat_with_system(None, "q", "ok:chunks=1", 0) == "tok0 "


# -- property: random JSON in every wire field ----------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)

OPENAI_TEMPLATE: dict[str, Any] = {
    "choices": [
        {
            "index": 0,
            "delta": {
                "content": "hi",
                "reasoning_content": "r",
                "tool_calls": [
                    {"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            "message": {
                "content": "hi",
                "reasoning_content": "r",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
            },
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "prompt_tokens_details": {"cached_tokens": 0},
    },
}
ANTHROPIC_TEMPLATES: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {"usage": {"input_tokens": 1, "cache_read_input_tokens": 0}},
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "a"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "t"},
    },
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": "{}"},
    },
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "usage": {"output_tokens": 3}},
]
ANTHROPIC_JSON_TEMPLATE: dict[str, Any] = {
    "content": [
        {"type": "text", "text": "hi"},
        {"type": "thinking", "thinking": "t"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}},
    ],
    "usage": {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 0},
}


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), value=JSON, events=st.booleans())
def test_random_json_in_every_wire_field(
    backend: str, data: st.DataObject, value: Any, events: bool
) -> None:
    """Any JSON value in any wire field gives a well-typed result or a reliant error, only."""
    name = data.draw(st.sampled_from(NAMES))
    stream = data.draw(st.booleans())
    if name == "openai":
        template: Any = OPENAI_TEMPLATE
    elif stream:
        template = data.draw(st.sampled_from(ANTHROPIC_TEMPLATES))
    else:
        template = ANTHROPIC_JSON_TEMPLATE
    path = data.draw(st.sampled_from(paths(template)))
    lie = replaced(template, path, value)
    provider: HTTPProvider = (
        OpenAICompatible(api_key=KEY) if name == "openai" else Anthropic(api_key=KEY)
    )
    end = "data: [DONE]\n\n" if name == "openai" else 'data: {"type": "message_stop"}\n\n'
    body = f"data: {json.dumps(lie)}\n\n{end}".encode() if stream else None
    run_on(backend, outcome_of, lied_to(provider, lie, body, events))


# -- Retry-After --------------------------------------------------------------------------------

HOSTILE_RETRY_AFTER = [
    "Fri, 31 Dec 99999 23:59:59 GMT",
    "Sat, 01 Jan 10000 00:00:00 GMT",
    "-5",
    "NaN",
    "nan",
    "inf",
    "1e12",
    "1e400",
    "Mon, 01 Jan 1990 00:00:00 GMT",
    "garbage",
    "",
    "  ",
    "Wed, 32 Foo 2024 99:99:99 GMT",
    "\x00\xff",
]


@pytest.mark.parametrize("value", HOSTILE_RETRY_AFTER)
def test_hostile_retry_after_header(value: str) -> None:
    """Any Retry-After header value parses without raising, to None or a clamped number."""
    for headers in (
        {"retry-after": value},
        {"retry-after-ms": value},
        {"retry-after": value, "date": value},
    ):
        seconds = parse_retry_after(headers)
        assert seconds is None or (math.isfinite(seconds) and 0 <= seconds <= 1e9)


@given(
    st.one_of(st.floats(), st.integers(min_value=-(10**30), max_value=10**30), st.text(max_size=20))
)
def test_hostile_retry_after_values(value: Any) -> None:
    """classify and next_backoff clamp any retry_after (NaN, -1, 1e12, garbage) to [base, 30]."""
    err = ProviderError("x", retry_after=value)
    seconds = classify_retry_after(err)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)
    wait = next_backoff(0.5, err, rng=random.Random(1))
    assert 0.25 <= wait <= MAX_RETRY_AFTER
    text = ProviderError(f"busy; retry-after: {value}")
    assert 0.25 <= next_backoff(0.5, text, rng=random.Random(1)) <= MAX_RETRY_AFTER


# -- bad arguments ---------------------------------------------------------------------------------


def one() -> list[tuple[str, Provider]]:
    return [("p", OpenAICompatible(api_key="x"))]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rng": 42}, TypeError, "rng must be a random.Random"),
        ({"model_aliases": {"p": ["a"]}}, TypeError, r"model_aliases\['p'\] must be a mapping"),
        ({"model_aliases": {"p": {"a": 5}}}, TypeError, r"model_aliases\['p'\] must map"),
        ({"model_fallbacks": {"a": ["b", "b"]}}, ValueError, r"model_fallbacks\['a'\] repeats"),
        ({"model_fallbacks": {"a": ["b", "a"]}}, ValueError, "names the model itself"),
        ({"model_fallbacks": {"a": [5]}}, TypeError, "must hold model names"),
        ({"model_fallbacks": {5: ["a"]}}, TypeError, "model_fallbacks keys must be model names"),
        ({"max_retries": 101}, ValueError, "max_retries must be at most 100"),
        ({"base_backoff": "1"}, TypeError, "base_backoff must be a number"),
    ],
)
def test_reliable_provider_rejects_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """ReliableProvider refuses bad arguments with a TypeError/ValueError naming them."""
    with pytest.raises(error, match=match):
        ReliableProvider(one(), **kwargs)


@pytest.mark.parametrize("cls", [OpenAICompatible, Anthropic])
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"base_url": "ftp://host/v1"}, ValueError, "base_url must be an http"),
        ({"base_url": "file:///etc/passwd"}, ValueError, "base_url must be an http"),
        ({"base_url": "localhost:8000"}, ValueError, "base_url must be an http"),
        ({"base_url": 5}, TypeError, "base_url must be a string"),
        ({"max_response_bytes": -1}, ValueError, "max_response_bytes"),
        ({"max_event_bytes": 0}, ValueError, "max_event_bytes"),
        ({"max_tool_arguments_bytes": math.nan}, TypeError, "max_tool_arguments_bytes"),
        ({"max_response_bytes": True}, TypeError, "max_response_bytes"),
        ({"request_timeout": math.nan}, ValueError, "request_timeout"),
        ({"request_timeout": -1}, ValueError, "request_timeout"),
    ],
)
def test_http_providers_reject_bad_arguments(
    cls: type[HTTPProvider], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """HTTP providers refuse an unsupported base_url scheme and bad caps at construction."""
    with pytest.raises(error, match=match):
        cls(api_key="x", **kwargs)


# -- secrets -------------------------------------------------------------------------------------

SPELLINGS = [KEY, json.dumps(KEY)[1:-1].replace("/", "\\/"), quote(KEY, safe=""), quote_plus(KEY)]


def assert_no_key(text: str) -> None:
    for spelling in [*SPELLINGS, quote(KEY, safe="").lower()]:
        assert spelling not in text, (spelling, text)


def everything_about(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


@pytest.mark.parametrize("name", NAMES)
async def test_key_never_leaks_in_any_spelling(
    server: FakeLLMServer, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An echoed key (plain, JSON-escaped, URL-encoded) is scrubbed from errors, trails and logs."""
    echo = " ".join(SPELLINGS) + " " + quote(KEY, safe="").lower()
    server.script("echo401", [Behavior(kind="status", status=401, message=echo)])
    server.script("echo500", [Behavior(kind="status", status=500, body=echo)])
    server.script("echojson", [raw_body('{"bad": "' + echo + '", ', "application/json")])
    server.script("echosse", [raw_body(first_event(name) + f"data: {{{echo}\n\n")])
    caplog.set_level(logging.DEBUG)
    async with build(name, server) as provider:
        assert_no_key(repr(provider))
        llm = ReliableProvider([("p", provider)], max_retries=1, base_backoff=0.0)
        for model in ("echo401", "echo500", "echojson"):
            with pytest.raises(FailoverError) as info:
                await llm.simple_chat("q", model, 0)
            assert_no_key(everything_about(info.value))
            assert_no_key(str(info.value.attempts))
        with pytest.raises(StreamError) as broken:
            await drain_stream(llm, "echosse")
        assert_no_key(everything_about(broken.value))
    for record in caplog.records:
        assert_no_key(record.getMessage() + repr(record.__dict__))
        if record.exc_info and record.exc_info[1] is not None:
            assert_no_key(everything_about(record.exc_info[1]))


async def test_key_in_base_url_userinfo_is_redacted() -> None:
    """user:key@ in base_url is redacted in repr and in transport errors."""
    provider = OpenAICompatible(
        base_url=f"http://user:{quote(KEY, safe='')}@127.0.0.1:9/v1", api_key=None
    )
    assert_no_key(repr(provider))
    assert "[REDACTED]@127.0.0.1:9" in repr(provider)
    async with provider:
        with pytest.raises(ProviderError) as info:
            await provider.simple_chat("q", "m", 0)
    assert_no_key(everything_about(info.value))


async def test_key_echoed_in_transport_error_is_scrubbed() -> None:
    """A transport error quoting the request headers carries no key, cause chain included."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError(f"refused; sent {dict(request.headers)}", request=request)

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:
        for provider in (
            OpenAICompatible(api_key=KEY, client=client),
            Anthropic(api_key=KEY, client=client),
        ):
            with pytest.raises(ProviderError) as info:
                await provider.simple_chat("q", "m", 0)
            assert_no_key(everything_about(info.value))


async def test_custom_provider_quoting_a_registered_key() -> None:
    """A custom provider's error quoting a registered key is scrubbed from the failure trail."""
    secret = "custom-provider-secret-123"

    class Leaky(Provider):
        async def chat_with_system(
            self, system_prompt: Any, message: str, model: str, temperature: float
        ) -> str:
            raise RuntimeError(f"auth failed for key {secret} ({quote(secret)})")

    forget = register_secret(secret)
    try:
        llm = ReliableProvider([("leaky", Leaky())], max_retries=0)
        with pytest.raises(FailoverError) as info:
            await llm.simple_chat("q", "m", 0)
        assert secret not in str(info.value)
    finally:
        forget()


@pytest.mark.parametrize("anyio_backend", ["trio", "asyncio"])  # real clocks (see below)
@pytest.mark.parametrize("name", NAMES)
async def test_decoding_yields_so_first_chunk_timeout_fires_on_time(
    server: FakeLLMServer, name: str
) -> None:
    """A compressed stream of 30 MiB that yields no item cannot stall the loop past the timeout.

    Real time on purpose: the stall being guarded against is CPU spent
    decoding, which a virtual clock does not see.
    """
    unit = b'data: {"choices":[]}\n\n' if name == "openai" else b'data: {"type":"ping"}\n\n'
    headers = {**SSE, "content-encoding": "gzip"}
    body = bomb(30 * MiB, unit)
    server.script_raw("pings", [RawResponse([http_response(body, headers=headers)], then="hang")])
    async with build(name, server) as provider:
        llm = ReliableProvider([("p", provider)], max_retries=0, first_chunk_timeout=0.2)
        started = time.perf_counter()
        with pytest.raises(FailoverError, match=r"no first chunk within 0\.2 s"):
            await drain_stream(llm, "pings")
        # Without the yields the whole 30 MiB is decoded first (seconds); with
        # them the timeout fires within one MiB's decoding of 0.2 s.
        assert time.perf_counter() - started < 1.5
