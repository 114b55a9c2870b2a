"""The fault-injecting fake LLM server, driven over real loopback sockets.

Every async test runs on both backends (``pytest.mark.anyio``), the server on
the test's own loop and virtual clock; the command-line test runs on both in
real time (it waits on a subprocess).
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest
from anyio.abc import ByteReceiveStream, SocketAttribute, SocketStream

from reliant.testing.fake_server import Behavior, FakeLLMServer, serve_fake_llm

pytestmark = pytest.mark.anyio

OPENAI = "/v1/chat/completions"
ANTHROPIC = "/v1/messages"


@pytest.fixture
async def client(server: FakeLLMServer) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=server.base_url) as c:
        yield c


def sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def sse_events(text: str) -> list[str]:
    return [line[7:] for line in text.splitlines() if line.startswith("event: ")]


def openai_text(text: str) -> str:
    out = []
    for data in sse_data(text):
        if data == "[DONE]":
            continue
        for choice in json.loads(data).get("choices", []):
            out.append(choice["delta"].get("content") or "")
    return "".join(out)


async def post(client: httpx2.AsyncClient, path: str, model: str, **extra: Any) -> httpx2.Response:
    return await client.post(path, json={"model": model, "messages": [], **extra})


async def raw_request(server: FakeLLMServer, model: str, *, stream: bool = True) -> SocketStream:
    """Send a request over a bare socket, so a test controls exactly when it closes."""
    sock = await anyio.connect_tcp(server.host, server.port)
    body = json.dumps({"model": model, "stream": stream, "messages": []}).encode()
    head = (
        f"POST {OPENAI} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    await sock.send(head + body)
    return sock


async def read_until(sock: SocketStream, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        seen += await sock.receive(65536)  # EndOfStream: the server closed early
    return seen


# -- addresses and records -------------------------------------------------------------


async def test_urls(server: FakeLLMServer) -> None:
    """The server exposes its base URL and the per-protocol base URLs."""
    assert server.base_url == f"http://127.0.0.1:{server.port}"
    assert server.openai_base_url == server.base_url + "/v1"
    assert server.anthropic_base_url == server.base_url
    assert server.port > 0


async def test_requests_are_recorded(server: FakeLLMServer, client: httpx2.AsyncClient) -> None:
    """Each request is recorded with method, path, lower-case headers, JSON body and model."""
    await client.post(OPENAI, json={"model": "ok", "messages": []}, headers={"X-Trace": "abc"})
    (request,) = server.requests
    assert request.index == 0
    assert request.method == "POST"
    assert request.path == OPENAI
    assert request.headers["x-trace"] == "abc"
    assert request.headers["content-type"] == "application/json"
    assert request.json == {"model": "ok", "messages": []}
    assert request.model == "ok"
    assert not request.stream


async def test_received_at_uses_the_loop_clock(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """``received_at`` is the loop's time, so it follows the virtual clock."""
    await anyio.sleep(7)
    await post(client, OPENAI, "ok")
    assert server.requests[0].received_at == pytest.approx(anyio.current_time(), abs=1e-6)
    assert server.requests[0].received_at >= 7


async def test_keep_alive_reuses_the_connection(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """Sequential requests, streamed or not, reuse one keep-alive connection."""
    await post(client, OPENAI, "ok")
    await post(client, OPENAI, "ok", stream=True)
    await post(client, ANTHROPIC, "ok", stream=True)
    await post(client, ANTHROPIC, "status:429")
    await post(client, OPENAI, "ok")
    assert {r.connection for r in server.requests} == {0}


async def test_unknown_route_is_404(client: httpx2.AsyncClient) -> None:
    """Paths other than the two APIs and the model list get a JSON 404."""
    response = await client.post("/v1/embeddings", json={})
    assert response.status_code == 404
    assert "no route" in response.json()["error"]["message"]


async def test_model_list(client: httpx2.AsyncClient) -> None:
    """``GET /v1/models`` answers a model list (used by warm-ups)."""
    response = await client.get("/v1/models")
    assert response.status_code == 200
    assert response.json()["object"] == "list"


# -- behaviour selection -----------------------------------------------------------------


def test_parse_model_names() -> None:
    """Model names parse into behaviours with typed arguments."""
    assert Behavior.parse("ok") == Behavior()
    assert Behavior.parse("ok:chunks=200:ttft=0.05:gap=0.001") == Behavior(
        chunks=200, ttft=0.05, gap=0.001
    )
    assert Behavior.parse("status:429:retry_after=3") == Behavior(
        kind="status", status=429, retry_after="3"
    )
    assert Behavior.parse("reset:after=3") == Behavior(kind="reset", after=3)
    assert Behavior.parse("inband_error:after=2:status=529") == Behavior(
        kind="inband_error", after=2, status=529
    )


@pytest.mark.parametrize("spec", ["ok:chunks", "ok:chunks=x", "ok:bogus=1", "cut:3", "nope"])
def test_bad_model_names_raise(spec: str) -> None:
    """A malformed behaviour spec is a ValueError naming the problem."""
    with pytest.raises(ValueError):
        Behavior.parse(spec)


@pytest.mark.parametrize(
    "model",
    ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "llama3.1:8b", "anthropic/claude:latest", "m"],
)
def test_ordinary_model_names_behave_ok(model: str) -> None:
    """A name that is plainly a model id (``gpt-4o``, ``llama3.1:8b``) answers normally."""
    assert Behavior.for_model(model) == Behavior()
    assert Behavior.for_model(None) == Behavior()


@pytest.mark.parametrize(
    ("model", "closest"),
    [
        ("hang", "hang_headers"),
        ("hang_header", "hang_headers"),
        ("timeout", "hang_headers"),
        ("500", "status:500"),
        ("status=500", "status:500"),
        ("hang_forever", "hang_headers"),
        ("reset_", "reset"),
        ("Status:503", "status:503"),
        ("chunks=3", "ok:chunks=3"),
    ],
)
def test_names_that_look_like_behaviours_are_refused(model: str, closest: str) -> None:
    """A name close to a behaviour is no longer ``ok``: it is refused, naming the closest kind."""
    with pytest.raises(ValueError, match=f"did you mean '{closest}'"):
        Behavior.for_model(model)


async def test_misread_name_is_a_marked_400(client: httpx2.AsyncClient) -> None:
    """``hang`` over the wire: a 400 whose message and header name the kind meant."""
    response = await post(client, OPENAI, "hang", stream=True)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("reliant fake server: 'hang' is not a fake-server behaviour")
    assert "did you mean 'hang_headers'?" in message
    assert response.headers["x-reliant-fake-server-error"] == message


async def test_argument_typo_suggests_the_argument(client: httpx2.AsyncClient) -> None:
    """``ok:chunk=2`` gets a 400 that suggests ``chunks``."""
    response = await post(client, ANTHROPIC, "ok:chunk=2")
    assert response.status_code == 400
    assert response.headers["x-reliant-fake-server-error"] == (
        "reliant fake server: unknown behaviour argument 'chunk' in 'ok:chunk=2' "
        "(did you mean 'chunks'?)"
    )


def test_behavior_texts() -> None:
    """Pieces are deterministic: ``tok{i} `` or the words of ``text``."""
    assert Behavior(chunks=3).full_text == "tok0 tok1 tok2 "
    assert Behavior(text="Hello there, world").text_pieces() == ["Hello ", "there, ", "world"]
    assert Behavior(kind="tools").text_pieces() == []
    assert Behavior(kind="cut", after=2).text_before_fault() == "tok0 tok1 "
    assert Behavior(reasoning=2).reasoning_pieces() == ["think0 ", "think1 "]


def test_unknown_kind_is_rejected() -> None:
    """Constructing a behaviour of an unknown kind fails at once."""
    with pytest.raises(ValueError):
        Behavior(kind="nope")  # type: ignore[arg-type]


async def test_bad_behaviour_spec_is_a_400(client: httpx2.AsyncClient) -> None:
    """A model naming a known kind with bad arguments gets a 400 explaining why."""
    response = await post(client, OPENAI, "ok:chunks=many")
    assert response.status_code == 400
    assert "chunks" in response.json()["error"]["message"]


async def test_script_is_consumed_in_order_and_last_repeats(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """A script serves one behaviour per request; its last entry repeats."""
    server.script(None, [Behavior(kind="status", status=503), "status:429", "ok"])
    codes = [(await post(client, OPENAI, "anything")).status_code for _ in range(5)]
    assert codes == [503, 429, 200, 200, 200]


async def test_model_script_wins_over_default_script(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """A script for a model applies to that model; the None script to the others."""
    server.script("m1", ["status:500"])
    server.script(None, ["status:401"])
    assert (await post(client, OPENAI, "m1")).status_code == 500
    assert (await post(client, OPENAI, "m2")).status_code == 401
    assert (await post(client, OPENAI, "ok")).status_code == 401
    server.script(None, [])
    assert (await post(client, OPENAI, "ok")).status_code == 200


async def test_initial_script_and_clear() -> None:
    """``serve_fake_llm(script=...)`` installs scripts; ``clear()`` forgets them and records."""
    async with (
        serve_fake_llm(script={None: ["status:503"]}) as server,
        httpx2.AsyncClient(base_url=server.base_url) as client,
    ):
        assert (await post(client, OPENAI, "ok")).status_code == 503
        server.clear()
        assert server.requests == []
        assert (await post(client, OPENAI, "ok")).status_code == 200


async def test_exceptions_in_the_block_are_not_wrapped() -> None:
    """An exception raised inside ``async with serve_fake_llm()`` comes out unchanged."""
    with pytest.raises(KeyError):
        async with serve_fake_llm():
            raise KeyError("mine")


# -- OpenAI wire format -----------------------------------------------------------------


async def test_openai_stream(client: httpx2.AsyncClient) -> None:
    """OpenAI streams: role chunk, one chunk per piece, finish_reason, then ``[DONE]``."""
    response = await post(client, OPENAI, "ok:chunks=3", stream=True)
    assert response.headers["content-type"] == "text/event-stream"
    data = sse_data(response.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:4]] == [
        "tok0 ",
        "tok1 ",
        "tok2 ",
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all("usage" not in c for c in chunks)


async def test_openai_stream_usage(client: httpx2.AsyncClient) -> None:
    """``stream_options.include_usage`` adds a usage chunk with empty choices before ``[DONE]``."""
    response = await post(
        client, OPENAI, "ok:chunks=4", stream=True, stream_options={"include_usage": True}
    )
    usage_chunk = json.loads(sse_data(response.text)[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


async def test_openai_json(client: httpx2.AsyncClient) -> None:
    """A non-streaming OpenAI request gets the whole answer and usage in one JSON body."""
    body = (await post(client, OPENAI, "ok:chunks=2:reasoning=1")).json()
    assert body["object"] == "chat.completion"
    message = body["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "tok0 tok1 ",
        "reasoning_content": "think0 ",
    }
    assert body["usage"]["completion_tokens"] == 3


async def test_openai_reasoning_stream(client: httpx2.AsyncClient) -> None:
    """Reasoning pieces stream as ``reasoning_content`` deltas before the text."""
    response = await post(client, OPENAI, "ok:chunks=1:reasoning=2", stream=True)
    deltas = [json.loads(d)["choices"][0]["delta"] for d in sse_data(response.text)[1:4]]
    assert deltas == [
        {"reasoning_content": "think0 "},
        {"reasoning_content": "think1 "},
        {"content": "tok0 "},
    ]


async def test_openai_tool_calls(client: httpx2.AsyncClient) -> None:
    """``tools`` streams tool-call deltas: id and name first, then argument fragments."""
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    response = await post(client, OPENAI, "tools:calls=2", stream=True, tools=tools)
    chunks = [json.loads(d) for d in sse_data(response.text)[:-1]]
    args: dict[int, str] = {}
    names = {}
    for chunk in chunks:
        for call in chunk["choices"][0]["delta"].get("tool_calls", []):
            if "id" in call:
                names[call["index"]] = call["function"]["name"]
            args[call["index"]] = args.get(call["index"], "") + call["function"]["arguments"]
    assert names == {0: "lookup", 1: "lookup"}
    assert args == {0: Behavior().tool_arguments, 1: Behavior().tool_arguments}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    body = (await post(client, OPENAI, "tools", tools=tools)).json()
    call = body["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "lookup", "arguments": Behavior().tool_arguments}


async def test_custom_text(server: FakeLLMServer, client: httpx2.AsyncClient) -> None:
    """A scripted ``text`` streams word by word and round-trips exactly."""
    server.script(None, [Behavior(text="The answer is 42.")])
    response = await post(client, OPENAI, "x", stream=True)
    assert openai_text(response.text) == "The answer is 42."


# -- Anthropic wire format ----------------------------------------------------------------


async def test_anthropic_stream(client: httpx2.AsyncClient) -> None:
    """Anthropic streams the documented event sequence ending with ``message_stop``."""
    response = await post(client, ANTHROPIC, "ok:chunks=2", stream=True)
    assert sse_events(response.text) == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [json.loads(d) for d in sse_data(response.text)]
    assert [d["type"] for d in data] == sse_events(response.text)
    assert data[3]["delta"] == {"type": "text_delta", "text": "tok0 "}
    assert data[0]["message"]["usage"]["input_tokens"] == 10
    assert data[6]["usage"] == {"output_tokens": 2}
    assert data[6]["delta"]["stop_reason"] == "end_turn"


async def test_anthropic_json(server: FakeLLMServer, client: httpx2.AsyncClient) -> None:
    """A non-streaming Anthropic request gets content blocks and usage."""
    server.script(None, [Behavior(chunks=2, reasoning=1, cached_tokens=4)])
    body = (await post(client, ANTHROPIC, "x")).json()
    assert body["type"] == "message"
    assert body["content"] == [
        {"type": "thinking", "thinking": "think0 ", "signature": "sig"},
        {"type": "text", "text": "tok0 tok1 "},
    ]
    assert body["usage"]["cache_read_input_tokens"] == 4
    assert body["usage"]["output_tokens"] == 3


async def test_anthropic_tool_use(client: httpx2.AsyncClient) -> None:
    """``tools`` streams a ``tool_use`` block with ``input_json_delta`` fragments."""
    tools = [{"name": "get_weather", "input_schema": {}}]
    response = await post(client, ANTHROPIC, "tools", stream=True, tools=tools)
    data = [json.loads(d) for d in sse_data(response.text)]
    start = next(d for d in data if d["type"] == "content_block_start")
    assert start["content_block"]["type"] == "tool_use"
    assert start["content_block"]["name"] == "get_weather"
    fragments = [d["delta"]["partial_json"] for d in data if d["type"] == "content_block_delta"]
    assert "".join(fragments) == Behavior().tool_arguments
    assert data[-2]["delta"]["stop_reason"] == "tool_use"


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [OPENAI, ANTHROPIC])
async def test_status_with_retry_headers(client: httpx2.AsyncClient, path: str) -> None:
    """``status:N`` answers N with retry headers and a provider-shaped JSON error."""
    response = await post(client, path, "status:429:retry_after=3:retry_after_ms=1500")
    assert response.status_code == 429
    assert response.reason_phrase == "Too Many Requests"
    assert response.headers["retry-after"] == "3"
    assert response.headers["retry-after-ms"] == "1500"
    assert "error" in response.json()


async def test_status_529_and_custom_body(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """529 carries the reason "Overloaded"; ``body`` and ``headers`` replace the defaults."""
    response = await post(client, ANTHROPIC, "status:529")
    assert (response.status_code, response.reason_phrase) == (529, "Overloaded")
    assert response.json()["error"]["type"] == "overloaded_error"
    server.script(
        None, [Behavior(kind="status", status=402, body="no money", headers={"x-a": "b"})]
    )
    response = await post(client, OPENAI, "x")
    assert (response.status_code, response.text, response.headers["x-a"]) == (402, "no money", "b")


@pytest.mark.parametrize("path", [OPENAI, ANTHROPIC])
async def test_cut_closes_mid_body(client: httpx2.AsyncClient, path: str) -> None:
    """``cut:after=N`` sends N pieces then closes cleanly inside the chunked body."""
    seen = b""
    with pytest.raises(httpx2.RemoteProtocolError):
        async with client.stream("POST", path, json={"model": "cut:after=2", "stream": True}) as r:
            async for raw in r.aiter_raw():
                seen += raw
    assert b"tok1 " in seen
    assert b"tok2 " not in seen


async def test_reset_resets(client: httpx2.AsyncClient) -> None:
    """``reset:after=N`` sends N pieces then resets the connection."""
    with pytest.raises(httpx2.ReadError):
        await post(client, OPENAI, "reset:after=2", stream=True)


async def test_cut_and_reset_non_streaming(client: httpx2.AsyncClient) -> None:
    """Non-streaming, ``cut`` and ``reset`` break the JSON body half way."""
    with pytest.raises(httpx2.RemoteProtocolError):
        await post(client, OPENAI, "cut")
    with pytest.raises(httpx2.ReadError):
        await post(client, ANTHROPIC, "reset")


async def test_inband_errors(client: httpx2.AsyncClient) -> None:
    """``inband_error`` answers 200 and then an error event in each protocol's shape."""
    openai = await post(client, OPENAI, "inband_error:after=1:status=429", stream=True)
    data = sse_data(openai.text)
    assert openai.status_code == 200
    assert json.loads(data[-1]) == {
        "error": {
            "message": "fake error 429",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
            "status": 429,
        }
    }
    assert "[DONE]" not in data
    anthropic = await post(client, ANTHROPIC, "inband_error:status=529", stream=True)
    assert sse_events(anthropic.text)[-1] == "error"
    assert json.loads(sse_data(anthropic.text)[-1])["error"]["type"] == "overloaded_error"
    non_streaming = await post(client, ANTHROPIC, "inband_error:status=529")
    assert non_streaming.status_code == 200
    assert non_streaming.json()["type"] == "error"


async def test_malformed(client: httpx2.AsyncClient) -> None:
    """``malformed`` sends a data line that is not JSON, then the rest and the terminator."""
    data = sse_data((await post(client, OPENAI, "malformed:after=1", stream=True)).text)
    with pytest.raises(ValueError):
        json.loads(data[2])
    assert data[-1] == "[DONE]"
    with pytest.raises(ValueError):
        (await post(client, OPENAI, "malformed")).json()


async def test_empty_and_no_terminator(client: httpx2.AsyncClient) -> None:
    """``empty`` is only the terminator; ``no_terminator`` is the content without any end."""
    assert sse_data((await post(client, OPENAI, "empty", stream=True)).text) == ["[DONE]"]
    assert sse_events((await post(client, ANTHROPIC, "empty", stream=True)).text) == [
        "message_stop"
    ]
    data = sse_data((await post(client, OPENAI, "no_terminator:chunks=2", stream=True)).text)
    assert "[DONE]" not in data
    assert len(data) == 3
    assert all(json.loads(d)["choices"][0]["finish_reason"] is None for d in data)
    events = sse_events((await post(client, ANTHROPIC, "no_terminator", stream=True)).text)
    assert events[-1] == "content_block_stop"
    assert "message_delta" not in events


async def test_not_sse(client: httpx2.AsyncClient) -> None:
    """``not_sse`` answers JSON even when a stream was asked for."""
    response = await post(client, OPENAI, "not_sse", stream=True)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 tok4 "


async def test_ttft_and_gap_follow_the_clock(client: httpx2.AsyncClient) -> None:
    """Headers come at once; the first piece after ``ttft``, the next every ``gap``."""
    start = anyio.current_time()
    times = []
    body = {"model": "ok:chunks=3:ttft=2:gap=0.5:delay=1", "stream": True}
    async with client.stream("POST", OPENAI, json=body) as response:
        times.append(anyio.current_time() - start)
        async for raw in response.aiter_raw():
            times.extend(anyio.current_time() - start for _ in range(raw.count(b'"content":"tok')))
    assert times == pytest.approx([1.0, 3.0, 3.5, 4.0])


# -- disconnects ---------------------------------------------------------------------------


async def test_disconnect_while_hanging(server: FakeLLMServer) -> None:
    """A client closing during ``hang_headers`` is recorded at that exact moment."""
    sock = await raw_request(server, "hang_headers")
    await server.wait_for_requests(1)
    await anyio.sleep(2.5)
    closed_at = anyio.current_time()
    await sock.aclose()
    assert await server.wait_for_disconnect(0) == closed_at
    assert server.aborted == [0]


async def test_disconnect_seen_between_chunks(server: FakeLLMServer) -> None:
    """A close while the server sleeps between chunks is seen at once, not at the next write."""
    sock = await raw_request(server, "ok:chunks=5:gap=10")
    await read_until(sock, b"tok1 ")
    closed_at = anyio.current_time()
    assert closed_at == pytest.approx(10.0, abs=0.01)
    await sock.aclose()
    assert await server.wait_for_disconnect(0) == closed_at
    assert server.aborted == [0]


async def test_close_after_complete_response(server: FakeLLMServer) -> None:
    """Closing a keep-alive connection after a full response is a disconnect, not an abort."""
    sock = await raw_request(server, "ok")
    await read_until(sock, b"[DONE]")
    await anyio.sleep(1)
    await sock.aclose()
    assert await server.wait_for_disconnect(0) == anyio.current_time()
    assert server.aborted == []


async def test_reset_by_client_is_a_disconnect(server: FakeLLMServer) -> None:
    """A client that resets its connection mid-stream is recorded too."""
    sock = await raw_request(server, "hang_body")
    await read_until(sock, b"role")
    raw = sock.extra(SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await sock.aclose()
    assert await server.wait_for_disconnect(0) == anyio.current_time()
    assert server.aborted == [0]


# -- load -----------------------------------------------------------------------------------


async def test_many_concurrent_streams(server: FakeLLMServer) -> None:
    """Hundreds of concurrent streams on separate connections all get their exact text."""
    count = 300
    texts: list[str] = []
    limits = httpx2.Limits(max_connections=count)
    async with httpx2.AsyncClient(base_url=server.base_url, limits=limits) as client:

        async def one() -> None:
            response = await post(client, OPENAI, "ok:chunks=20:gap=0.001", stream=True)
            texts.append(openai_text(response.text))

        async with anyio.create_task_group() as tasks:
            for _ in range(count):
                tasks.start_soon(one)
    assert texts == [Behavior(chunks=20).full_text] * count
    assert len({r.connection for r in server.requests}) == count


# Real time on both loops: a virtual clock would jump while the test waits on the
# subprocess's pipes (the command itself runs the server on trio, as its CLI does).
@pytest.mark.parametrize("anyio_backend", ["trio", "asyncio"])
async def test_command_line() -> None:
    """Run alone, the server prints its base URLs and, with --verbose, logs each behaviour."""
    command = [sys.executable, "-m", "reliant.testing.fake_server", "--port", "0", "--verbose"]
    async with await anyio.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            with anyio.fail_after(20):
                lines = (await read_lines(process.stdout, 3)).splitlines()
            openai_line, anthropic_line, bedrock_line = lines
            label, openai_url = openai_line.split()
            assert label == "openai:" and openai_url.startswith("http://127.0.0.1:")
            assert openai_url.endswith("/v1")
            assert anthropic_line.split() == ["anthropic:", openai_url.removesuffix("/v1")]
            assert bedrock_line.split() == ["bedrock:", openai_url.removesuffix("/v1")]
            async with httpx2.AsyncClient() as client:
                response = await client.post(openai_url + "/chat/completions", json={"model": "ok"})
                assert response.json()["choices"][0]["message"]["content"] == (
                    "tok0 tok1 tok2 tok3 tok4 "
                )
                refused = await client.post(
                    openai_url + "/chat/completions", json={"model": "hang"}
                )
                assert refused.status_code == 400
            with anyio.fail_after(20):
                log = await read_lines(process.stderr, 2)
            assert log == (
                "request 0 /v1/chat/completions model='ok' -> ok\n"
                "request 1 /v1/chat/completions model='hang' -> 400: 'hang' is not a fake-server "
                "behaviour (did you mean 'hang_headers'?); a model name answers 'ok' only when it "
                "is plainly a model id such as 'gpt-4o'\n"
            )
        finally:
            process.terminate()
            with anyio.fail_after(20, shield=True):
                await process.wait()


async def read_lines(stream: ByteReceiveStream, count: int) -> str:
    data = b""
    while data.count(b"\n") < count:
        data += await stream.receive(1024)
    return data.decode()


# -- recovery behaviours ------------------------------------------------------------------


def test_parse_recovery_specs() -> None:
    """The recovery behaviours parse: bare booleans, ``context:N``, finish words."""
    assert Behavior.parse("context:2000") == Behavior(kind="context", context=2000)
    assert Behavior.parse("ok:prefill") == Behavior(prefill=True)
    assert Behavior.parse("ok:prefill=0:overlap=4") == Behavior(prefill=False, overlap=4)
    assert Behavior.parse("cut:after=2:calls=1:context=500") == Behavior(
        kind="cut", after=2, calls=1, context=500
    )
    assert Behavior.parse("content_filter:after=3") == Behavior(kind="content_filter", after=3)
    assert Behavior.parse("ok:finish=length:served_model=m-1") == Behavior(
        finish="length", served_model="m-1"
    )
    for kind in ("no_done", "reject_prefill", "content_filter"):
        assert Behavior.parse(kind).kind == kind
    for bad in ("context", "context:x", "ok:prefill=maybe", "ok:overlap"):
        with pytest.raises(ValueError):
            Behavior.parse(bad)


def test_continuation_pieces() -> None:
    """A prefill that starts the answer leaves the rest, cut along piece boundaries."""
    b = Behavior(chunks=3)
    assert b.continuation_pieces("tok0 ") == ["tok1 ", "tok2 "]
    assert b.continuation_pieces("tok0 tok1") == [" ", "tok2 "]
    assert b.continuation_pieces("tok0 tok1 \n") == [" ", "tok2 "]
    assert b.continuation_pieces("") == ["tok0 ", "tok1 ", "tok2 "]
    assert b.continuation_pieces("tok0 tok1 tok2 ") == []
    assert b.continuation_pieces("nope") is None
    assert Behavior(chunks=3, overlap=3).continuation_pieces("tok0 t") == ["0 t", "ok1 ", "tok2 "]


async def test_openai_stream_reports_model_and_finish_word(client: httpx2.AsyncClient) -> None:
    """Chunks name the served model; ``finish=`` replaces the natural finish reason."""
    response = await post(client, OPENAI, "ok:chunks=1:finish=length:served_model=m-1", stream=True)
    chunks = [json.loads(d) for d in sse_data(response.text)[:-1]]
    assert {c["model"] for c in chunks} == {"m-1"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    body = (await post(client, ANTHROPIC, "ok:finish=max_tokens")).json()
    assert (body["model"], body["stop_reason"]) == ("ok:finish=max_tokens", "max_tokens")


async def test_no_done_ends_after_the_finish_reason(client: httpx2.AsyncClient) -> None:
    """``no_done`` sends the finish reason and ends the body without the terminator."""
    data = sse_data((await post(client, OPENAI, "no_done:chunks=2", stream=True)).text)
    assert "[DONE]" not in data
    assert json.loads(data[-1])["choices"][0]["finish_reason"] == "stop"
    events = sse_events((await post(client, ANTHROPIC, "no_done", stream=True)).text)
    assert events[-1] == "message_delta"
    assert "message_stop" not in events


async def test_content_filter_wire_shapes(client: httpx2.AsyncClient) -> None:
    """``content_filter``: OpenAI's 400 body, Anthropic's refusal; after N pieces, the reason."""
    response = await post(client, OPENAI, "content_filter", stream=True)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "content_policy_violation"
    assert response.json()["error"]["type"] == "invalid_request_error"
    refusal = (await post(client, ANTHROPIC, "content_filter")).json()
    assert (refusal["content"], refusal["stop_reason"]) == ([], "refusal")
    data = sse_data((await post(client, OPENAI, "content_filter:after=2", stream=True)).text)
    assert openai_text("\n".join(f"data: {d}" for d in data)) == "tok0 tok1 "
    assert json.loads(data[-2])["choices"][0]["finish_reason"] == "content_filter"
    text = (await post(client, ANTHROPIC, "content_filter:after=1", stream=True)).text
    deltas = [json.loads(d) for d in sse_data(text)]
    assert [d["delta"]["text"] for d in deltas if d["type"] == "content_block_delta"] == ["tok0 "]
    assert deltas[-2]["delta"]["stop_reason"] == "refusal"
    assert sse_events(text)[-1] == "message_stop"


PREFILLED = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "tok0 tok1 "}]


async def test_prefill_continuation_on_the_wire(client: httpx2.AsyncClient) -> None:
    """Anthropic continues a prefill by default; OpenAI only with ``prefill`` in the spec."""
    anthropic = (await post(client, ANTHROPIC, "ok", messages=PREFILLED)).json()
    assert anthropic["content"][0]["text"] == "tok2 tok3 tok4 "
    assert anthropic["usage"]["output_tokens"] == 3
    openai = await post(client, OPENAI, "ok", messages=PREFILLED, stream=True)
    assert openai_text(openai.text) == "tok0 tok1 tok2 tok3 tok4 "
    vllm = await post(client, OPENAI, "ok:prefill:overlap=2", messages=PREFILLED, stream=True)
    assert openai_text(vllm.text) == "1 tok2 tok3 tok4 "


async def test_reject_prefill_on_the_wire(client: httpx2.AsyncClient) -> None:
    """``reject_prefill`` answers 400 only when the last message is the assistant's."""
    anthropic = await post(client, ANTHROPIC, "reject_prefill", messages=PREFILLED)
    assert anthropic.status_code == 400
    assert anthropic.json()["error"]["type"] == "invalid_request_error"
    assert "does not support assistant message prefill" in anthropic.json()["error"]["message"]
    openai = await post(client, OPENAI, "reject_prefill", messages=PREFILLED)
    assert openai.status_code == 400
    assert openai.json()["error"]["code"] is None
    fine = await post(client, OPENAI, "reject_prefill", messages=PREFILLED[:1])
    assert fine.status_code == 200


async def test_context_window_on_the_wire(client: httpx2.AsyncClient) -> None:
    """``context:N`` counts message characters (system included) against N."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "x" * 8}]}]
    assert (await post(client, OPENAI, "context:8", messages=messages)).status_code == 200
    too_long = await post(client, OPENAI, "context:7", messages=messages)
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"
    anthropic = await post(client, ANTHROPIC, "context:8", messages=messages, system="s")
    assert anthropic.json()["error"]["message"] == "prompt is too long: 9 tokens > 8 maximum"


# Every behaviour that answers an OpenAI error body, with the request that triggers it.
ERROR_SPECS = [
    *(f"status:{s}" for s in (400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 529)),
    *(f"inband_error:status={s}" for s in (400, 401, 404, 429, 500, 503, 529)),
    "content_filter",
    "reject_prefill",
    "context:1",
    "ok:chunks=many",
]


@pytest.mark.parametrize("spec", ERROR_SPECS)
@pytest.mark.parametrize("stream", [False, True])
async def test_openai_error_bodies_keep_real_field_types(
    client: httpx2.AsyncClient, spec: str, stream: bool
) -> None:
    """Every OpenAI error body has a string ``type`` and a string-or-null ``code``."""
    response = await post(client, OPENAI, spec, stream=stream, messages=PREFILLED)
    if response.headers["content-type"].startswith("text/event-stream"):
        bodies = [json.loads(d) for d in sse_data(response.text) if d != "[DONE]"]
        bodies = [b for b in bodies if "error" in b]
    else:
        bodies = [response.json()]
    assert bodies, spec
    for body in bodies:
        error = body["error"]
        assert isinstance(error["message"], str)
        assert isinstance(error["type"], str)
        assert "code" in error
        assert error["code"] is None or isinstance(error["code"], str), (spec, error)
    unrouted = await client.post("/v1/nowhere", json={})
    assert unrouted.json()["error"]["code"] == "unknown_url"
