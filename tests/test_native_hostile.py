"""Hostile upstreams against Gemini, the Responses API and Azure OpenAI.

The same promises test_hostile.py checks for the first two providers: a
wrong type, a missing field, an oversized or too deeply nested payload ends
as ``ProviderError(kind="malformed_response" | "response_too_large")`` (or a
``StreamError`` over one), never a ``KeyError``/``TypeError``; bounded
memory; and no key in any text, trail, log, exception chain or kept request.
"""

from __future__ import annotations

import gc
import json
import logging
import traceback
import tracemalloc
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

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
    ProviderError,
    ReliableProvider,
    StreamError,
    TextDelta,
    ToolCallEvent,
)
from reliant.providers import AzureOpenAI, Gemini, OpenAIResponses
from reliant.providers._http import HTTPProvider, SSEEventDecoder
from reliant.testing.fake_server import (
    Behavior,
    FakeLLMServer,
    RawResponse,
    http_response,
)

pytestmark = pytest.mark.anyio

NAMES = ["gemini", "responses", "azure"]
KEY = "k3y/with+odd=chars&more-0123456789"
MiB = 2**20
SSE = {"content-type": "text/event-stream"}


def build(name: str, server: FakeLLMServer | None = None, **kwargs: Any) -> HTTPProvider:
    kwargs = {"api_key": KEY, **kwargs}
    if name == "gemini":
        if server is not None:
            kwargs.setdefault("base_url", server.gemini_base_url)
        return Gemini(**kwargs)
    if name == "responses":
        if server is not None:
            kwargs.setdefault("base_url", server.responses_base_url)
        return OpenAIResponses(**kwargs)
    kwargs.setdefault("base_url", server.azure_base_url if server else "https://r.openai.azure.com")
    return AzureOpenAI(**kwargs)


def sse(name: str, data: dict[str, Any]) -> str:
    if name == "responses":
        return f"event: {data.get('type')}\ndata: {json.dumps(data)}\n\n"
    return f"data: {json.dumps(data)}\n\n"


HELLO = {
    "gemini": {"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}}]},
    "responses": {"type": "response.output_text.delta", "output_index": 0, "delta": "hi"},
    "azure": {"choices": [{"index": 0, "delta": {"content": "hi"}}]},
}
END = {
    "gemini": 'data: {"candidates": [{"finishReason": "STOP"}]}\n\n',
    "responses": sse("responses", {"type": "response.completed", "response": {}}),
    "azure": "data: [DONE]\n\n",
}


# -- bounded memory ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", NAMES)
async def test_gzip_bomb_refused_at_cap(server: FakeLLMServer, name: str, stream: bool) -> None:
    """A gzip bomb (64 MiB inflated) is refused at max_response_bytes, memory well below 2x cap."""
    cap = 16 * MiB
    pad = b"p" * 4000
    unit = b'data: {"type":"ping","choices":[],"pad":"' + pad + b'"}\n\n' if stream else b"a"
    headers = {**(SSE if stream else {"content-type": "application/json"})}
    headers["content-encoding"] = "gzip"
    server.script_raw("bomb", [RawResponse([http_response(bomb(64 * MiB, unit), headers=headers)])])
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
    assert peak < (1.3 if not stream else 0.5) * cap


@pytest.mark.parametrize("name", NAMES)
async def test_huge_event_refused(server: FakeLLMServer, name: str) -> None:
    """An event of many data lines past max_event_bytes is response_too_large."""
    lines = "".join("data: " + "z" * 1000 + "\n" for _ in range(100))
    server.script("ev", [raw_body(lines + "\n")])
    async with build(name, server, max_event_bytes=50_000) as provider:
        with pytest.raises(ProviderError) as info:
            await call(provider, "ev", True)
    assert info.value.kind == "response_too_large"


def tool_argument_events(name: str, size: int) -> str:
    if name == "gemini":
        call = {"functionCall": {"name": "f", "args": {"a": "x" * size}}}
        event = {"candidates": [{"content": {"parts": [call]}, "finishReason": "STOP"}]}
        return sse(name, event)
    if name == "responses":
        item = {"type": "function_call", "id": "fc", "call_id": "c", "name": "f", "arguments": ""}
        out = [sse(name, {"type": "response.output_item.added", "output_index": 0, "item": item})]
        for _ in range(size // 1000):
            delta = {"type": "response.function_call_arguments.delta", "output_index": 0}
            out.append(sse(name, {**delta, "delta": "a" * 1000}))
        done = {"type": "response.output_item.done", "output_index": 0, "item": item}
        return "".join(out) + sse(name, done) + END[name]
    head = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}
    out = [sse(name, {"choices": [{"index": 0, "delta": {"tool_calls": [head]}}]})]
    for _ in range(size // 1000):
        delta = {"tool_calls": [{"index": 0, "function": {"arguments": "a" * 1000}}]}
        out.append(sse(name, {"choices": [{"index": 0, "delta": delta}]}))
    return "".join(out) + END[name]


@pytest.mark.parametrize("name", NAMES)
async def test_tool_arguments_capped(server: FakeLLMServer, name: str) -> None:
    """Tool-call arguments past max_tool_arguments_bytes are refused; below it they pass whole."""
    server.script("tools", [raw_body(tool_argument_events(name, 20_000))])
    async with build(name, server, max_tool_arguments_bytes=10_000) as provider:
        with pytest.raises(ProviderError) as info:
            await call(provider, "tools", True)
        assert info.value.kind == "response_too_large"
        assert "tool call arguments larger than 10000 bytes" in str(info.value)
    async with build(name, server, max_tool_arguments_bytes=30_000) as provider:
        items = await call(provider, "tools", True)
    calls = [i.call for i in items if isinstance(i, ToolCallEvent)]
    assert len(calls) == 1 and len(calls[0].arguments) >= 20_000


@pytest.mark.parametrize("name", ["gemini", "responses"])
async def test_non_streaming_tool_arguments_capped(server: FakeLLMServer, name: str) -> None:
    """A non-streaming answer's tool-call arguments are capped too."""
    big = "x" * 20_000
    if name == "gemini":
        call_part = {"functionCall": {"name": "f", "args": {"a": big}}}
        answer: dict[str, Any] = {"candidates": [{"content": {"parts": [call_part]}}]}
    else:
        item = {"type": "function_call", "call_id": "c", "name": "f", "arguments": big}
        answer = {"status": "completed", "output": [item]}
    server.script("big", [raw_body(json.dumps(answer), "application/json")])
    async with build(name, server, max_tool_arguments_bytes=10_000) as provider:
        with pytest.raises(ProviderError) as info:
            await call(provider, "big", False)
    assert info.value.kind == "response_too_large"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", NAMES)
async def test_deeply_nested_json(server: FakeLLMServer, name: str, stream: bool) -> None:
    """JSON nested past the recursion limit is malformed_response, never a RecursionError."""
    body = "[" * 100_000 + "]" * 100_000
    server.script(
        "deep",
        [
            raw_body(
                f"data: {body}\n\n" if stream else body, *(() if stream else ("application/json",))
            )
        ],
    )
    async with build(name, server) as provider:
        with pytest.raises(ProviderError) as info:
            await call(provider, "deep", stream)
    assert info.value.kind == "malformed_response"


# -- lying fields -------------------------------------------------------------------------------

GEMINI_STREAM_LIES = [
    ({"candidates": "x"}, "candidates is a string"),
    ({"candidates": ["x"]}, "candidates[0] is a string"),
    ({"candidates": [{"content": {"parts": [{"text": 5}]}}]}, "parts[0].text is int"),
    ({"candidates": [{"content": {"parts": [{"text": "a", "thought": "y"}]}}]}, "thought is a"),
    ({"candidates": [{"content": {"parts": "x"}}]}, "content.parts is a string"),
    ({"candidates": [{"finishReason": 3}]}, "finishReason is int"),
    (
        {"candidates": [{"content": {"parts": [{"functionCall": {"name": 1}}]}}]},
        "functionCall.name is int",
    ),
    (
        {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": []}}]}}]},
        "functionCall.args is a list",
    ),
    ({"usageMetadata": {"promptTokenCount": "3"}}, "usageMetadata.promptTokenCount is a string"),
    ({"promptFeedback": {"blockReason": 1}}, "promptFeedback.blockReason is int"),
    ({"modelVersion": []}, "modelVersion is a list"),
]
RESPONSES_STREAM_LIES = [
    ({"type": "response.output_text.delta", "delta": 5}, "delta is int"),
    ({"type": "response.reasoning_summary_text.delta", "delta": []}, "delta is a list"),
    ({"type": "response.output_item.added", "item": "x"}, "item is a string"),
    (
        {
            "type": "response.output_item.added",
            "output_index": "0",
            "item": {"type": "function_call"},
        },
        "output_index is a string",
    ),
    (
        {"type": "response.output_item.added", "item": {"type": "function_call", "name": 3}},
        "item.name is int",
    ),
    ({"type": "response.completed", "response": []}, "response is a list"),
    (
        {"type": "response.completed", "response": {"usage": {"input_tokens": "1"}}},
        "response.usage.input_tokens is a string",
    ),
    ({"type": "response.completed", "response": {"status": 1}}, "response.status is int"),
]


@pytest.mark.parametrize(
    ("name", "event", "field"),
    [("gemini", e, f) for e, f in GEMINI_STREAM_LIES]
    + [("responses", e, f) for e, f in RESPONSES_STREAM_LIES],
)
async def test_lying_stream_event(
    server: FakeLLMServer, name: str, event: dict[str, Any], field: str
) -> None:
    """A wrong-typed field is malformed_response before the first item, a StreamError after."""
    lie = sse(name, event)
    server.script("early", [raw_body(lie + END[name])])
    server.script("late", [raw_body(sse(name, HELLO[name]) + lie + END[name])])
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


GEMINI_JSON_LIES = [
    ({"candidates": {"0": {}}}, "candidates is an object"),
    ({"candidates": [{"content": {"parts": [{"text": []}]}}]}, "parts[0].text is a list"),
    (
        {"candidates": [], "usageMetadata": {"cachedContentTokenCount": -1}},
        "cachedContentTokenCount",
    ),
    ({"candidates": [], "usageMetadata": []}, "usageMetadata is a list"),
]
RESPONSES_JSON_LIES = [
    ({"output": {"a": 1}}, "output is an object"),
    ({"id": "x"}, "response without output"),
    ({"output": ["x"]}, "output[0] is a string"),
    (
        {"output": [{"type": "message", "content": [{"type": "output_text", "text": 1}]}]},
        "text is int",
    ),
    ({"output": [{"type": "function_call", "arguments": {}}]}, "output[0].arguments is an object"),
    ({"output": [], "usage": {"output_tokens": 1.5}}, "response.usage.output_tokens is float"),
    ({"output": [], "status": "incomplete", "incomplete_details": 3}, "incomplete_details is int"),
]


@pytest.mark.parametrize(
    ("name", "payload", "field"),
    [("gemini", p, f) for p, f in GEMINI_JSON_LIES]
    + [("responses", p, f) for p, f in RESPONSES_JSON_LIES],
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


# -- property: random JSON in every wire field ------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)

GEMINI_TEMPLATE: dict[str, Any] = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "hi"},
                    {"text": "t", "thought": True},
                    {"functionCall": {"id": "c", "name": "f", "args": {"a": 1}}},
                ],
            },
            "finishReason": "STOP",
        }
    ],
    "promptFeedback": {"safetyRatings": []},
    "usageMetadata": {
        "promptTokenCount": 1,
        "candidatesTokenCount": 2,
        "thoughtsTokenCount": 1,
        "cachedContentTokenCount": 0,
    },
    "modelVersion": "m",
}
RESPONSES_EVENT_TEMPLATES: list[dict[str, Any]] = [
    {"type": "response.created", "response": {"model": "m"}},
    {"type": "response.output_text.delta", "output_index": 0, "delta": "hi"},
    {"type": "response.reasoning_summary_text.delta", "output_index": 0, "delta": "t"},
    {
        "type": "response.output_item.added",
        "output_index": 1,
        "item": {"type": "function_call", "id": "fc", "call_id": "c", "name": "f"},
    },
    {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "{}"},
    {
        "type": "response.output_item.done",
        "output_index": 1,
        "item": {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
    },
    {
        "type": "response.completed",
        "response": {
            "status": "completed",
            "model": "m",
            "usage": {"input_tokens": 1, "output_tokens": 2, "input_tokens_details": {}},
        },
    },
    {
        "type": "response.incomplete",
        "response": {"status": "incomplete", "incomplete_details": {"reason": "content_filter"}},
    },
    {"type": "response.failed", "response": {"status": "failed", "error": {"code": "x"}}},
    {"type": "error", "code": "server_error", "message": "m"},
]
RESPONSES_JSON_TEMPLATE: dict[str, Any] = {
    "status": "completed",
    "model": "m",
    "output": [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "t"}]},
        {"type": "message", "content": [{"type": "output_text", "text": "hi"}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
    ],
    "usage": {"input_tokens": 1, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 0}},
    "incomplete_details": None,
    "error": None,
}


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), value=JSON, events=st.booleans())
def test_random_json_in_every_wire_field(
    backend: str, data: st.DataObject, value: Any, events: bool
) -> None:
    """Any JSON value in any wire field gives a well-typed result or a reliant error, only."""
    name = data.draw(st.sampled_from(["gemini", "responses"]))
    stream = data.draw(st.booleans())
    if name == "gemini":
        template: Any = GEMINI_TEMPLATE
    elif stream:
        template = data.draw(st.sampled_from(RESPONSES_EVENT_TEMPLATES))
    else:
        template = RESPONSES_JSON_TEMPLATE
    lie = replaced(template, data.draw(st.sampled_from(paths(template))), value)
    provider = build(name)
    body = f"data: {json.dumps(lie)}\n\n{END[name]}".encode() if stream else None
    run_on(backend, outcome_of, lied_to(provider, lie, body, events))


# -- the SSE frame: any split of a body gives the same events ---------------------------------


def split_everywhere(body: bytes) -> Iterator[list[bytes]]:
    yield [body]
    yield [body[i : i + 1] for i in range(len(body))]
    for cut in range(1, len(body)):
        yield [body[:cut], body[cut:]]


def decode(parts: list[bytes]) -> list[Any]:
    decoder = SSEEventDecoder(max_event_bytes=MiB)
    events: list[Any] = []
    for part in parts:
        events.extend(decoder.feed(part))
    decoder.finish()
    return events


@pytest.mark.parametrize(
    "body",
    [
        # Gemini: CRLF line ends, no terminator.
        b'data: {"candidates": [{"content": {"parts": [{"text": "h\xc3\xa9"}]}}]}\r\n\r\n'
        b'data: {"candidates": [{"finishReason": "STOP"}]}\r\n\r\n',
        # Responses: event lines before the data.
        b'event: response.output_text.delta\ndata: {"type": "response.output_text.delta", '
        b'"delta": "\xe2\x82\xac"}\n\nevent: response.completed\ndata: {"type": '
        b'"response.completed", "response": {}}\n\n',
    ],
    ids=["gemini", "responses"],
)
def test_decoding_is_the_same_at_every_split(body: bytes) -> None:
    """Each fixture decodes to the same events whole, byte by byte and at every two-way split."""
    expected = decode([body])
    assert len(expected) == 2
    for parts in split_everywhere(body):
        assert decode(parts) == expected


# -- secrets ----------------------------------------------------------------------------------

SPELLINGS = [KEY, json.dumps(KEY)[1:-1].replace("/", "\\/"), quote(KEY, safe=""), quote_plus(KEY)]


def assert_no_key(text: str) -> None:
    for spelling in [*SPELLINGS, quote(KEY, safe="").lower()]:
        assert spelling not in text, (spelling, text)


def everything_about(exc: BaseException) -> str:
    """What a traceback printer, a repr and a look at kept requests show, the whole chain."""
    parts = ["".join(traceback.format_exception(exc)), repr(exc)]
    todo, seen = [exc], set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        parts.append(repr(e.args))
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]
        if isinstance(e, BaseExceptionGroup):
            todo += list(e.exceptions)
        request = getattr(e, "_request", None)
        if isinstance(request, httpx2.Request):
            parts.append(repr(dict(request.headers)))
            parts.append(str(request.url))
    return "\n".join(parts)


@pytest.mark.parametrize("name", NAMES)
async def test_key_never_leaks_in_any_spelling(
    server: FakeLLMServer, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An echoed key (plain, JSON-escaped, URL-encoded) is scrubbed from errors, trails and logs."""
    echo = " ".join(SPELLINGS) + " " + quote(KEY, safe="").lower()
    server.script("echo401", [Behavior(kind="status", status=401, message=echo)])
    server.script("echo500", [Behavior(kind="status", status=500, body=echo)])
    server.script("echojson", [raw_body('{"bad": "' + echo + '", ', "application/json")])
    server.script("echosse", [raw_body(sse(name, HELLO[name]) + f"data: {{{echo}\n\n")])
    server.script("echoinband", [Behavior(kind="inband_error", after=1, message=echo)])
    caplog.set_level(logging.DEBUG)
    async with build(name, server) as provider:
        assert_no_key(repr(provider))
        llm = ReliableProvider([("p", provider)], max_retries=1, base_backoff=0.0)
        for model in ("echo401", "echo500", "echojson"):
            with pytest.raises(FailoverError) as info:
                await llm.simple_chat("q", model, 0)
            assert_no_key(everything_about(info.value))
            assert_no_key(str(info.value.attempts))
        for model in ("echosse", "echoinband"):
            with pytest.raises(StreamError) as broken:
                await drain_stream(llm, model)
            assert_no_key(everything_about(broken.value))
    for record in caplog.records:
        assert_no_key(record.getMessage() + repr(record.__dict__))
        if record.exc_info and record.exc_info[1] is not None:
            assert_no_key(everything_about(record.exc_info[1]))


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", NAMES)
async def test_transport_error_requests_carry_no_key(
    server: FakeLLMServer, name: str, stream: bool
) -> None:
    """A reset under FailoverError keeps its httpx2 request, whose URL and headers hold no key."""
    server.script(None, ["reset:after=0"])
    async with build(name, server) as provider:
        llm = ReliableProvider([("p", provider)], max_retries=0)
        with pytest.raises(FailoverError) as info:
            if stream:
                await drain_stream(llm, "m")
            else:
                await llm.chat_with_history([ChatMessage.user("q")], "m", 0.0)
    text = everything_about(info.value)
    assert "httpx2" in text or "Request" in text or "RemoteProtocolError" in text
    assert_no_key(text)
    for request in server.requests:
        assert KEY not in request.path  # the Gemini key travels in a header, never the URL


def test_key_never_in_the_url() -> None:
    """The Gemini URLs carry no key, whatever the model; only the header does."""
    provider = build("gemini")
    assert isinstance(provider, Gemini)
    for stream in (False, True):
        assert KEY not in provider._url("gemini-2.5-pro", stream)
        assert quote(KEY, safe="") not in provider._url("gemini-2.5-pro", stream)
    assert provider._headers["x-goog-api-key"] == KEY
