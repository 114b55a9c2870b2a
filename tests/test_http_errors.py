"""How HTTP failures become ProviderError or StreamError, for both providers."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reliant import (
    ChatMessage,
    ChatRequest,
    ProviderError,
    StreamError,
    TextDelta,
)
from reliant.providers import Anthropic, OpenAICompatible, parse_retry_after
from reliant.providers._http import HTTPProvider, SSELineDecoder, status_from_error_payload
from reliant.testing.fake_server import Behavior, FakeLLMServer

pytestmark = pytest.mark.anyio

KEY = "custom-key-NOT-a-known-prefix-42"
NAMES = ["openai", "anthropic"]
STREAM_KINDS = ["system", "history", "events"]


def build(name: str, server: FakeLLMServer | None, **kwargs: Any) -> HTTPProvider:
    if name == "openai":
        url = server.openai_base_url if server else "http://127.0.0.1:9/v1"
        return OpenAICompatible(base_url=url, **{"api_key": KEY, **kwargs})
    url = server.anthropic_base_url if server else "http://127.0.0.1:9"
    return Anthropic(base_url=url, **{"api_key": KEY, **kwargs})


@pytest.fixture(params=NAMES)
async def provider(request: pytest.FixtureRequest, server: FakeLLMServer) -> AsyncIterator[Any]:
    async with build(request.param, server) as p:
        yield p


def open_stream(provider: Any, kind: str, model: str) -> Any:
    if kind == "system":
        return provider.stream_chat_with_system("S", "q", model, 0.0)
    if kind == "history":
        return provider.stream_chat_with_history([ChatMessage.user("q")], model, 0.0)
    return provider.stream_chat(ChatRequest([ChatMessage.user("q")]), model, 0.0)


def text_of(item: Any) -> str:
    return item.text if isinstance(item, TextDelta) else getattr(item, "delta", "")


async def read_stream(provider: Any, kind: str, model: str, seen: list[str]) -> None:
    async with open_stream(provider, kind, model) as items:
        async for item in items:
            seen.append(text_of(item))


# -- status errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (429, "Too Many Requests"),
        (500, "Internal Server Error"),
        (503, "Service Unavailable"),
        (529, "Overloaded"),
    ],
)
async def test_status_error_non_streaming(
    server: FakeLLMServer, provider: Any, status: int, reason: str
) -> None:
    """A non-2xx answer is a ProviderError with the status and the canonical message."""
    body = '{"error": {"message": "nope", "type": "x"}}'
    server.script(None, [Behavior(kind="status", status=status, body=body)])
    with pytest.raises(ProviderError) as info:
        await provider.chat_with_system(None, "q", "m", 0)
    error = info.value
    assert str(error) == f"{provider.name} API error ({status} {reason}): {body}"
    assert error.status_code == status
    assert error.provider == provider.name
    assert error.body == body
    assert error.retry_after is None


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_status_error_streaming(server: FakeLLMServer, provider: Any, kind: str) -> None:
    """Every stream kind raises the same ProviderError for a non-2xx answer, from iteration."""
    server.script(None, [Behavior(kind="status", status=503, body="down", retry_after="2")])
    seen: list[str] = []
    with pytest.raises(ProviderError) as info:
        await read_stream(provider, kind, "m", seen)
    assert str(info.value) == f"{provider.name} API error (503 Service Unavailable): down"
    assert (info.value.status_code, info.value.retry_after) == (503, 2.0)
    assert seen == []


async def test_unknown_status_reason(server: FakeLLMServer, provider: Any) -> None:
    """A status unknown to http.HTTPStatus still gets a reason in the message."""
    server.script(None, [Behavior(kind="status", status=599, body="?")])
    with pytest.raises(ProviderError) as info:
        await provider.simple_chat("q", "m", 0)
    assert str(info.value) == f"{provider.name} API error (599 Unknown Status): ?"


async def test_long_bodies_are_cut(server: FakeLLMServer, provider: Any) -> None:
    """Error text is capped at 500 characters plus ``...``."""
    server.script(None, [Behavior(kind="status", status=500, body="x" * 5000)])
    with pytest.raises(ProviderError) as info:
        await provider.simple_chat("q", "m", 0)
    assert len(str(info.value)) == 503
    assert str(info.value).endswith("...")


# -- Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behavior", "expected"),
    [
        (Behavior(kind="status", status=429, retry_after="3"), 3.0),
        (Behavior(kind="status", status=429, retry_after="1.5"), 1.5),
        (Behavior(kind="status", status=429, retry_after_ms=1500), 1.5),
        (Behavior(kind="status", status=429, retry_after="30", retry_after_ms=250), 0.25),
        (
            Behavior(
                kind="status",
                status=503,
                retry_after="Wed, 21 Oct 2015 07:28:00 GMT",
                headers={"date": "Wed, 21 Oct 2015 07:27:30 GMT"},
            ),
            30.0,
        ),
        (
            Behavior(
                kind="status",
                status=503,
                retry_after="Wed, 21 Oct 2015 07:28:00 GMT",
                headers={"date": "Wed, 21 Oct 2015 08:00:00 GMT"},
            ),
            0.0,
        ),
        (Behavior(kind="status", status=429, retry_after="soon"), None),
        (Behavior(kind="status", status=429), None),
    ],
)
async def test_retry_after_from_headers(
    server: FakeLLMServer, provider: Any, behavior: Behavior, expected: float | None
) -> None:
    """retry_after comes from ``retry-after-ms``, or ``retry-after`` seconds or HTTP date."""
    server.script(None, [behavior])
    with pytest.raises(ProviderError) as info:
        await provider.simple_chat("q", "m", 0)
    assert info.value.retry_after == expected


def test_retry_after_http_date_against_wall_clock() -> None:
    """Without a ``date`` header an HTTP date is measured against the local clock."""
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert parse_retry_after({"retry-after": when}) == pytest.approx(120, abs=2)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": " 7 "}, 7.0),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after-ms": "oops", "retry-after": "4"}, 4.0),
        ({"retry-after-ms": "20"}, 0.02),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00"}, 0.0),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """Malformed, negative or non-finite values are ignored; past dates give 0."""
    assert parse_retry_after(headers) == expected


@given(st.integers(min_value=0, max_value=10**9))
def test_parse_retry_after_integer_seconds(seconds: int) -> None:
    """Any non-negative integer of seconds round-trips."""
    assert parse_retry_after({"retry-after": str(seconds)}) == float(seconds)


# -- transport errors --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
async def test_transport_error_on_closed_port(name: str) -> None:
    """A refused connection is a ProviderError without status; the key is not in it."""
    async with build(name, None) as dead:
        with pytest.raises(ProviderError) as info:
            await dead.simple_chat("q", "m", 0)
        error = info.value
        assert error.status_code is None
        assert error.retry_after is None
        assert str(error).startswith(f"{name} transport error: ConnectError: ")
        assert KEY not in str(error)
        assert isinstance(error.__cause__, httpx2.ConnectError)
        for kind in STREAM_KINDS:
            with pytest.raises(ProviderError) as info:
                await read_stream(dead, kind, "m", [])
            assert info.value.status_code is None
            assert str(info.value).startswith(f"{name} transport error: ConnectError: ")


async def test_read_timeout_after_commit(server: FakeLLMServer) -> None:
    """A stream that stalls after its first chunk ends in a StreamError caused by ReadTimeout."""
    for name in NAMES:
        async with build(name, server, timeout=httpx2.Timeout(10.0, read=4.0)) as provider:
            seen: list[str] = []
            with pytest.raises(StreamError) as info:
                await read_stream(provider, "events", "hang_body:after=2", seen)
            assert seen == ["tok0 ", "tok1 "]
            assert isinstance(info.value.__cause__, httpx2.ReadTimeout)


# -- broken streams -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_inband_error_before_commit(provider: Any, kind: str) -> None:
    """An in-band error before any item is a ProviderError carrying the payload's status."""
    with pytest.raises(ProviderError) as info:
        await read_stream(provider, kind, "inband_error:status=429", [])
    assert info.value.status_code == 429
    assert str(info.value).startswith(f"{provider.name} API error (429 Too Many Requests): ")


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_inband_error_after_commit(provider: Any, kind: str) -> None:
    """An in-band error after text is a StreamError caused by the ProviderError."""
    seen: list[str] = []
    with pytest.raises(StreamError) as info:
        await read_stream(provider, kind, "inband_error:after=3:status=500", seen)
    assert seen == ["tok0 ", "tok1 ", "tok2 "]
    assert isinstance(info.value.__cause__, ProviderError)
    assert info.value.__cause__.status_code == 500
    assert str(info.value).startswith(f"{provider.name} stream broke after the first chunk: ")


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_cut_before_commit(provider: Any, kind: str) -> None:
    """A connection closed before any item is a retryable ProviderError without status."""
    with pytest.raises(ProviderError) as info:
        await read_stream(provider, kind, "cut:after=0", [])
    assert info.value.status_code is None
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_cut_after_commit(provider: Any, kind: str) -> None:
    """A connection cut after text is a StreamError, never a silent success."""
    seen: list[str] = []
    with pytest.raises(StreamError) as info:
        await read_stream(provider, kind, "cut:after=3", seen)
    assert "".join(seen) == Behavior(kind="cut", after=3).text_before_fault()
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_reset_after_commit(provider: Any, kind: str) -> None:
    """A connection reset after text is a StreamError caused by a ReadError."""
    seen: list[str] = []
    with pytest.raises(StreamError) as info:
        await read_stream(provider, kind, "reset:after=2", seen)
    assert seen == ["tok0 ", "tok1 "]
    assert isinstance(info.value.__cause__, httpx2.ReadError)


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_missing_terminator(provider: Any, kind: str) -> None:
    """A body that ends cleanly without the terminator is a StreamError after text."""
    seen: list[str] = []
    with pytest.raises(StreamError) as info:
        await read_stream(provider, kind, "no_terminator", seen)
    assert "".join(seen) == "tok0 tok1 tok2 tok3 tok4 "
    assert "stream ended without" in str(info.value)


async def test_missing_terminator_before_commit(provider: Any) -> None:
    """An unterminated stream that delivered nothing is a ProviderError (failover may happen)."""
    with pytest.raises(ProviderError) as info:
        await read_stream(provider, "system", "no_terminator:chunks=0", [])
    assert "stream ended without" in str(info.value)
    assert info.value.status_code is None


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_malformed_json(provider: Any, kind: str) -> None:
    """Invalid JSON is a ProviderError before the first item and a StreamError after it."""
    with pytest.raises(ProviderError):
        await read_stream(provider, kind, "malformed", [])
    seen: list[str] = []
    with pytest.raises(StreamError) as info:
        await read_stream(provider, kind, "malformed:after=2", seen)
    assert seen == ["tok0 ", "tok1 "]
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_not_an_event_stream(provider: Any, kind: str) -> None:
    """A 200 that is not ``text/event-stream`` when streaming was asked is a ProviderError."""
    with pytest.raises(ProviderError) as info:
        await read_stream(provider, kind, "not_sse", [])
    assert "expected a text/event-stream response, got 200 application/json" in str(info.value)


async def test_non_streaming_broken_answers(server: FakeLLMServer, provider: Any) -> None:
    """Non-streaming: broken JSON, an error body in a 200 and a cut body are ProviderErrors."""
    with pytest.raises(ProviderError, match="invalid JSON response"):
        await provider.simple_chat("q", "malformed", 0)
    with pytest.raises(ProviderError) as info:
        await provider.simple_chat("q", "inband_error:status=529", 0)
    assert info.value.status_code == 529
    with pytest.raises(ProviderError) as info:
        await provider.simple_chat("q", "cut", 0)
    assert info.value.status_code is None
    assert "transport error: RemoteProtocolError" in str(info.value)


# -- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("key", [KEY, "sk-proj-abcdefghijklmnop"])
async def test_keys_never_appear_in_errors(server: FakeLLMServer, name: str, key: str) -> None:
    """A key echoed back by the server is scrubbed from messages, bodies and reprs."""
    server.script(
        "status",
        [Behavior(kind="status", status=401, body=f'{{"error": "invalid key {key}"}}')],
    )
    server.script("inband", [Behavior(kind="inband_error", after=1, message=f"bad key {key}")])
    server.script("early", [Behavior(kind="inband_error", message=f"bad key {key}")])
    async with build(name, server, api_key=key) as provider:
        errors: list[BaseException] = []
        for model in ("status", "early"):
            with pytest.raises(ProviderError) as info:
                await provider.simple_chat("q", model, 0)
            errors.append(info.value)
            with pytest.raises(ProviderError) as info:
                await read_stream(provider, "system", model, [])
            errors.append(info.value)
        with pytest.raises(StreamError) as stream_info:
            await read_stream(provider, "events", "inband", [])
        errors.append(stream_info.value)
        assert stream_info.value.__cause__ is not None
        errors.append(stream_info.value.__cause__)
        for error in errors:
            assert key not in str(error)
            assert "[REDACTED]" in str(error)
            assert key not in (getattr(error, "body", None) or "")
        assert key not in repr(provider)


def test_scrub_ignores_trivial_keys() -> None:
    """Keys too short to be secrets (``EMPTY``) are not scrubbed from ordinary text."""
    provider = OpenAICompatible(base_url="http://127.0.0.1:9/v1", api_key="EMPTY")
    assert provider._clean("EMPTY response") == "EMPTY response"


# -- helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"type": "overloaded_error", "message": "Overloaded"}, 529),
        ({"type": "rate_limit_error"}, 429),
        ({"code": 429, "message": "slow down"}, 429),
        ({"code": "503"}, 503),
        ({"code": "rate_limit_exceeded", "type": "requests"}, 429),
        ({"code": None, "type": "server_error"}, 500),
        ({"code": 1113, "message": "insufficient balance"}, None),
        ({"code": True}, None),
        ("just a string", None),
        (None, None),
    ],
)
def test_status_from_error_payload(payload: Any, status: int | None) -> None:
    """In-band error payloads map to HTTP statuses by code or by type."""
    assert status_from_error_payload(payload) == status


def test_sse_line_decoder_line_endings() -> None:
    """LF, CRLF and lone CR all end lines, also when split across reads."""
    decoder = SSELineDecoder()
    assert decoder.decode(b"data: a\r") == []
    assert decoder.decode(b"\n\r\ndata: b\rdata: c\n") == ["data: a", "", "data: b", "data: c"]
    assert decoder.decode(b"data: \xc3") == []
    assert decoder.decode(b"\xa9\n") == ["data: \u00e9"]
    assert decoder.decode(b"data: [DONE]") == []
    assert decoder.flush() == ["data: [DONE]"]
    assert decoder.flush() == []


def test_sse_line_decoder_crlf_split_across_reads() -> None:
    """A CR held back at the end of one read ends its line whatever the next read brings."""
    for reads, expected in (
        ([b"a\r", b"\n"], ["a"]),
        ([b"a\r", b"b", b"\n"], ["a", "b"]),
        ([b"\r\n\r\n00\xc2\x80\r", b"\n"], ["", "", "00\x80"]),
    ):
        decoder = SSELineDecoder()
        out = [line for read in reads for line in decoder.decode(read)]
        assert out + decoder.flush() == expected


@given(
    st.lists(
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n")),
        max_size=8,
    ),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_sse_line_decoder_any_split(lines: list[str], ending: str, cuts: list[int]) -> None:
    """However the bytes are split into reads, the same lines come out."""
    data = "".join(line + ending for line in lines).encode()
    bounds = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    decoder = SSELineDecoder()
    out: list[str] = []
    for piece in pieces:
        out.extend(decoder.decode(piece))
    out.extend(decoder.flush())
    if ending == "\r" and lines and lines[-1] == "":
        # A trailing lone CR cannot be told from the first half of a CRLF.
        assert out in (lines, lines[:-1])
    else:
        assert out == lines


def test_builder_names() -> None:
    """Both providers are built from the same base with their default names."""
    assert build("openai", None).name == "openai"
    assert build("anthropic", None).name == "anthropic"
    assert isinstance(build("openai", None), HTTPProvider)


# -- raw bodies -------------------------------------------------------------------------------


def raw(body: str, content_type: str = "text/event-stream") -> Behavior:
    """A 200 with exactly this body (the ``status`` behaviour with status 200)."""
    return Behavior(kind="status", status=200, body=body, headers={"content-type": content_type})


OPENAI_CHUNK = '{"choices": [{"index": 0, "delta": {"content": "hi"}}]}'
ANTHROPIC_DELTA = (
    '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}'
)


async def test_sse_framing_is_honoured(server: FakeLLMServer) -> None:
    """Comments, ``id:``/``retry:`` fields, CRLF and multi-line data follow the SSE rules."""
    server.script(
        "openai",
        [
            raw(
                ": keep-alive\r\nid: 1\r\nretry: 10\r\n"
                'data: {"choices": [{"index": 0,\r\ndata:  "delta": {"content": "hi"}}]}\r\n\r\n'
                f"data:{OPENAI_CHUNK}\n\n"
                "data: [DONE]\n\n"
            )
        ],
    )
    server.script(
        "anthropic",
        [
            raw(
                ': comment\n\nevent: ping\ndata: {"type": "ping"}\n\n'
                f"event: content_block_delta\ndata: {ANTHROPIC_DELTA}\n\n"
                'event: future_event\ndata: {"type": "future_event"}\n\n'
                'event: message_stop\ndata: {"type": "message_stop"}\n\n'
            )
        ],
    )
    for name in NAMES:
        async with build(name, server) as provider:
            seen: list[str] = []
            await read_stream(provider, "system", name, seen)
            assert "".join(seen) == ("hihi" if name == "openai" else "hi")


@pytest.mark.parametrize("ending", ["", "\n", "\r\n"])
async def test_terminator_without_trailing_blank_line(server: FakeLLMServer, ending: str) -> None:
    """A terminator cut off before its blank line still ends the stream successfully."""
    server.script("openai", [raw(f"data: {OPENAI_CHUNK}\n\ndata: [DONE]{ending}")])
    server.script(
        "anthropic",
        [
            raw(
                f"data: {ANTHROPIC_DELTA}\n\n"
                f'event: message_stop\ndata: {{"type": "message_stop"}}{ending}'
            )
        ],
    )
    for name in NAMES:
        async with build(name, server) as provider:
            seen: list[str] = []
            await read_stream(provider, "system", name, seen)
            assert seen == ["hi", ""]


@pytest.mark.parametrize(
    ("name", "event"),
    [
        ("openai", 'data: {"choices": ["nope"]}\n\n'),
        ("openai", "data: [1, 2]\n\n"),
        ("anthropic", 'data: {"type": "content_block_delta", "delta": "nope"}\n\n'),
        ("anthropic", 'data: "text"\n\n'),
    ],
)
async def test_wrong_shapes_in_streams(server: FakeLLMServer, name: str, event: str) -> None:
    """JSON of the wrong shape is a ProviderError before commit and a StreamError after."""
    first = f"data: {OPENAI_CHUNK}\n\n" if name == "openai" else f"data: {ANTHROPIC_DELTA}\n\n"
    server.script("early", [raw(event)])
    server.script("late", [raw(first + event)])
    async with build(name, server) as provider:
        with pytest.raises(ProviderError, match="unexpected SSE data"):
            await read_stream(provider, "events", "early", [])
        seen: list[str] = []
        with pytest.raises(StreamError, match="unexpected SSE data"):
            await read_stream(provider, "events", "late", seen)
        assert seen == ["hi"]


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("openai", '{"choices": ["nope"]}'),
        ("openai", '{"object": "chat.completion"}'),
        ("openai", "[1, 2]"),
        ("anthropic", '{"content": ["nope"]}'),
        ("anthropic", '{"type": "message"}'),
    ],
)
async def test_wrong_shapes_non_streaming(server: FakeLLMServer, name: str, body: str) -> None:
    """A 200 JSON answer of the wrong shape is a ProviderError, not a crash."""
    server.script(None, [raw(body, "application/json")])
    async with build(name, server) as provider:
        with pytest.raises(ProviderError, match=f"^{name} API error: "):
            await provider.simple_chat("q", "m", 0)


_HEADER_NAMES = st.sampled_from(
    ["retry-after", "Retry-After", "retry-after-ms", "RETRY-AFTER-MS", "date", "x-other"]
)
_HEADER_VALUES = st.one_of(
    st.sampled_from(["3", "0.5", "-1", "nan", "1e400", "soon", "Wed, 21 Oct 2099 07:28:00 GMT"]),
    st.text(alphabet="0123456789., -abcGMT:", max_size=12),
)


@given(st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=5))
def test_retry_after_read_in_one_pass_matches_httpx_headers(headers: list[tuple[str, str]]) -> None:
    """The one-pass header read gives parse_retry_after what Headers.get would."""
    from reliant.providers._http import _retry_headers

    response = httpx2.Response(429, headers=headers)
    assert parse_retry_after(_retry_headers(response)) == parse_retry_after(response.headers)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "text/plain; charset=ISO-8859-1",
        'text/plain; charset="latin-1"',
        "text/plain;charset=UTF-16",
        "text/plain; charset=no-such-charset",
        "text/html; boundary=x; charset=cp1252",
    ],
)
def test_error_body_charset_matches_httpx(content_type: str | None) -> None:
    """The light charset read names the codec httpx2's Response.encoding would."""
    import codecs

    from reliant.providers._http import _charset

    headers = {} if content_type is None else {"content-type": content_type}
    response = httpx2.Response(500, headers=headers, content=b"x")
    assert _charset(response) == codecs.lookup(response.encoding or "utf-8").name
