"""Anthropic Messages API over httpx2.

``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version``
headers; the system prompt travels in its own ``system`` field. Streams are
SSE events: ``message_start`` (input usage), ``content_block_start`` /
``content_block_delta`` (``text_delta``, ``thinking_delta``,
``input_json_delta``) / ``content_block_stop``, ``message_delta`` (output
usage, stop reason), ``message_stop`` (the terminator), plus ``ping`` and
``error``. ``tool_use`` blocks become tool calls once their block stops;
their ``input_json_delta`` pieces are concatenated into the arguments.
Event types we do not know are ignored, as Anthropic asks clients to do.

How a stream ends: ``message_stop`` is the terminator; a body that ends
cleanly after a ``message_delta`` carrying a ``stop_reason`` is complete
too (the model said why it stopped); anything else is a failure. A
``stop_reason`` of ``refusal`` before any item was delivered raises
``ContentFilterError``; after text, the stream ends normally with
``finish_reason="content_filter"``. The final chunk and ``Final`` carry the
normalised reason (see :mod:`reliant.providers._finish`), the raw
``stop_reason``, the ``model`` of ``message_start`` and the usage.

Prefill: a conversation that ends with an assistant message is continued by
the Messages API (``supports_prefill`` is True). The API rejects a final
assistant message that ends in whitespace, so that message is sent with its
trailing whitespace stripped (and left out when nothing else remains); the
continuation the server streams is forwarded as is, so it may begin with
whitespace the caller's text already had (or had not): joining the two is
the caller's job (``ReliableProvider(mid_stream="continue")`` does it).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import httpx2

from .._types import (
    ChatMessage,
    ChatResponse,
    Final,
    ReasoningDelta,
    StreamChunk,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    UsageEvent,
    estimate_tokens,
)
from ._finish import anthropic_finish_reason, final_chunk
from ._http import (
    DEFAULT_TIMEOUT,
    PARSE_FAILURES,
    STREAM_FAILURES,
    SSEEventDecoder,
    TimeoutArg,
)
from ._limits import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_TOOL_ARGUMENTS_BYTES,
    DEFAULT_REQUEST_TIMEOUT,
)
from ._messages import MessagesProvider
from ._wire import (
    append_arguments,
    arguments_object,
    count,
    need_object,
    opt_object,
    opt_str,
    tool_call_id,
    wrong,
)

__all__ = ["Anthropic"]


def _split_system(messages: Sequence[ChatMessage]) -> tuple[str | None, list[dict[str, Any]]]:
    """System messages joined into the ``system`` field; the rest as Messages API turns."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            system.append(m.content)
        elif m.tool_calls and m.role == "assistant":
            blocks: list[dict[str, Any]] = (
                [{"type": "text", "text": m.content}] if m.content else []
            )
            blocks.extend(
                {
                    "type": "tool_use",
                    "id": tool_call_id(call.id),
                    "name": call.name,
                    "input": arguments_object(call.arguments),
                }
                for call in m.tool_calls
            )
            turns.append({"role": "assistant", "content": blocks})
        elif m.role == "tool" and m.tool_call_id is not None:
            result = {
                "type": "tool_result",
                "tool_use_id": tool_call_id(m.tool_call_id),
                "content": m.content,
            }
            turns.append({"role": "user", "content": [result]})
        else:
            # The Messages API knows only user and assistant turns; a tool
            # result without its tool_use id can only travel as user text.
            role = "assistant" if m.role == "assistant" else "user"
            turns.append({"role": role, "content": m.content})
    last = turns[-1] if turns else None
    if last is not None and last["role"] == "assistant" and isinstance(last["content"], str):
        # A prefill: the API rejects "final assistant content cannot end
        # with trailing whitespace", and an all-whitespace prefill says nothing.
        prefill = last["content"].rstrip()
        if prefill:
            turns[-1] = {"role": "assistant", "content": prefill}
        else:
            turns.pop()
    return ("\n\n".join(system) if system else None), turns


def _tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
        for t in tools
    ]


def _usage(usage: Any, base: TokenUsage | None = None) -> TokenUsage:
    """TokenUsage from an Anthropic ``usage`` object, over what ``base`` already knew."""
    base = base or TokenUsage()
    if usage is None:
        return base
    usage = need_object(usage, "usage")
    input_tokens = count(usage, "input_tokens", "usage")
    output_tokens = count(usage, "output_tokens", "usage")
    cached = count(usage, "cache_read_input_tokens", "usage")
    return TokenUsage(
        input_tokens=input_tokens if input_tokens is not None else base.input_tokens,
        output_tokens=output_tokens if output_tokens is not None else base.output_tokens,
        cached_input_tokens=cached if cached is not None else base.cached_input_tokens,
    )


def _response(
    content: list[Any], usage: Any, stop_reason: Any = None, model: Any = None
) -> ChatResponse:
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    for i, block in enumerate(content):
        where = f"content[{i}]"
        block = need_object(block, where)
        kind = block.get("type")
        if kind == "text":
            texts.append(opt_str(block, "text", where) or "")
        elif kind == "thinking":
            thinking.append(opt_str(block, "thinking", where) or "")
        elif kind == "tool_use":
            arguments = opt_object(block, "input", where)
            calls.append(
                ToolCall(
                    id=opt_str(block, "id", where) or f"toolu_{len(calls)}",
                    name=opt_str(block, "name", where) or "",
                    arguments=json.dumps(arguments if arguments is not None else {}),
                )
            )
    return ChatResponse(
        text="".join(texts) if texts else None,
        tool_calls=tuple(calls),
        usage=_usage(usage) if usage is not None else None,
        reasoning_content="".join(thinking) if thinking else None,
        finish_reason=anthropic_finish_reason(stop_reason),
        raw_finish_reason=stop_reason if isinstance(stop_reason, str) and stop_reason else None,
        model=model if isinstance(model, str) else None,
    )


class Anthropic(MessagesProvider):
    """A provider for the Anthropic Messages API.

    Args:
        name: Provider name used in errors and failure trails.
        base_url: API root (``/v1/messages`` is appended).
        api_key: API key; None reads ``ANTHROPIC_API_KEY`` now.
        client: A shared ``httpx2.AsyncClient`` (the caller closes it); None
            makes the provider create one on first use and own it (close it
            with :meth:`aclose` or ``async with provider:``).
        timeout: Seconds (every phase) or an ``httpx2.Timeout``, applied to
            every request, also on a shared client (default ``DEFAULT_TIMEOUT``:
            connect 10, read 300, write 30, pool 30, no total limit). None
            defers to the client's own configuration.
        max_tokens: ``max_tokens`` of every request (the API requires it).
        anthropic_version: Value of the ``anthropic-version`` header.
        extra_headers: Headers added to every request (``anthropic-beta``, ...).
        max_response_bytes: Largest response body after decompression
            (32 MiB); more is ``ProviderError(kind="response_too_large")``.
        max_event_bytes: Largest SSE line or event (4 MiB).
        max_tool_arguments_bytes: Largest arguments of one streamed tool call (4 MiB).
        request_timeout: Seconds a whole non-streaming call may take (600);
            hitting it is ``ProviderError(kind="timeout")``. None: no total cap.

    Raises:
        ValueError: ``base_url`` is not an http(s) URL, or a cap is not positive.
        TypeError: A cap or timeout of the wrong type.
    """

    def __init__(
        self,
        *,
        name: str = "anthropic",
        base_url: str = "https://api.anthropic.com",
        api_key: str | None = None,
        client: httpx2.AsyncClient | None = None,
        timeout: TimeoutArg = DEFAULT_TIMEOUT,
        max_tokens: int = 4096,
        anthropic_version: str = "2023-06-01",
        extra_headers: Mapping[str, str] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_tool_arguments_bytes: int = DEFAULT_MAX_TOOL_ARGUMENTS_BYTES,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get("ANTHROPIC_API_KEY")
        super().__init__(
            name=name,
            base_url=base_url,
            api_key=api_key,
            client=client,
            timeout=timeout,
            max_response_bytes=max_response_bytes,
            max_event_bytes=max_event_bytes,
            max_tool_arguments_bytes=max_tool_arguments_bytes,
            request_timeout=request_timeout,
        )
        self._max_tokens = max_tokens
        self._url = f"{self._base_url}/v1/messages"
        headers = {"content-type": "application/json", "anthropic-version": anthropic_version}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        headers.update(extra_headers or {})
        self._headers = headers

    # -- capabilities --------------------------------------------------------------

    @property
    def supports_native_tools(self) -> bool:
        return True

    @property
    def supports_streaming(self) -> bool:
        return True

    @property
    def supports_streaming_tool_events(self) -> bool:
        return True

    @property
    def supports_prefill(self) -> bool:
        """True: the Messages API continues a trailing assistant message.

        Its trailing whitespace is stripped before sending (the API rejects
        it); see the module docstring for what that means for the text.
        """
        return True

    # -- payloads ------------------------------------------------------------------

    def _payload(
        self,
        system: str | None,
        turns: list[dict[str, Any]],
        tools: Sequence[ToolSpec] | None,
        model: str,
        temperature: float,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": model,
            "max_tokens": self._max_tokens,
            "messages": turns,
            "temperature": temperature,
        }
        if system is not None:
            payload["system"] = system
        if stream:
            payload["stream"] = True
        if tools:
            payload["tools"] = _tools(tools)
        return payload

    def _history_payload(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] | None,
        model: str,
        temperature: float,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        system, turns = _split_system(messages)
        return self._payload(system, turns, tools, model, temperature, stream=stream)

    # -- non-streaming -------------------------------------------------------------

    async def _complete(self, payload: dict[str, Any]) -> ChatResponse:
        data = await self._post_json(self._url, payload)
        try:
            content = data.get("content")
            if not isinstance(content, list):
                error = data.get("error")
                if error is not None:
                    raise self._payload_error(error, json.dumps(data))
                if content is not None:
                    raise wrong("content", content, "a list")
                raise self._invalid_response(f"response without content: {json.dumps(data)}")
            stop_reason = opt_str(data, "stop_reason", "response")
            model = opt_str(data, "model", "response")
            response = _response(content, data.get("usage"), stop_reason, model)
        except PARSE_FAILURES as exc:
            raise self._parse_failure(exc, data) from exc
        if response.finish_reason == "content_filter" and not response.text:
            raise self._refusal(str(stop_reason), json.dumps(data))
        return response

    async def _answer(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] | None,
        model: str,
        temperature: float,
    ) -> ChatResponse:
        # System messages go to the ``system`` field (see _split_system).
        payload = self._history_payload(messages, tools, model, temperature, stream=False)
        return await self._complete(payload)

    async def warmup(self) -> None:
        """Open a pooled connection (``GET {base_url}/v1/models``); never raises."""
        await self._warmup_get(f"{self._base_url}/v1/models")

    # -- streaming -----------------------------------------------------------------

    def _streamed(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] | None,
        model: str,
        temperature: float,
        events: bool,
        count_tokens: bool,
    ) -> AsyncGenerator[Any, None]:
        payload = self._history_payload(messages, tools, model, temperature, stream=True)
        return self._stream(payload, events, count_tokens)

    async def _stream(
        self, payload: dict[str, Any], events: bool, count_tokens: bool
    ) -> AsyncGenerator[Any, None]:
        """The SSE loop behind every stream kind: chunks, or events when ``events``."""
        committed = False
        usage: TokenUsage | None = None
        model: str | None = None
        stop_reason: str | None = None
        # content block index -> [id, name, argument parts, input given at start, parts size]
        calls: dict[int, list[Any]] = {}
        limit = self._max_tool_arguments_bytes
        sse = SSEEventDecoder(done_type="message_stop", max_event_bytes=self._max_event_bytes)
        try:
            async with self._open_event_stream(self._url, payload) as body:
                async for raw in body:
                    for event in sse.feed(raw):
                        kind = event.get("type")
                        if kind == "content_block_delta":
                            delta = event.get("delta") or {}
                            if type(delta) is not dict:
                                raise wrong("delta", delta, "an object")
                            delta_kind = delta.get("type")
                            if delta_kind == "text_delta":
                                piece = delta.get("text")
                                if piece:
                                    if type(piece) is not str:
                                        raise wrong("delta.text", piece, "a string")
                                    committed = True
                                    if events:
                                        yield TextDelta(piece)
                                    elif count_tokens:
                                        yield StreamChunk(
                                            piece, None, False, estimate_tokens(piece)
                                        )
                                    else:
                                        yield StreamChunk(piece)
                            elif delta_kind == "input_json_delta":
                                slot = calls.get(_index(event))
                                partial = delta.get("partial_json")
                                if slot is not None and partial:
                                    slot[4] = append_arguments(
                                        slot[2], partial, slot[4], limit, "delta.partial_json"
                                    )
                            elif delta_kind == "thinking_delta":
                                thought = opt_str(delta, "thinking", "delta")
                                if thought:
                                    committed = True
                                    if events:
                                        yield ReasoningDelta(thought)
                                    else:
                                        yield StreamChunk("", thought)
                        elif kind == "content_block_start":
                            block = need_object(event.get("content_block") or {}, "content_block")
                            block_kind = block.get("type")
                            if block_kind == "tool_use":
                                calls[_index(event)] = [
                                    opt_str(block, "id", "content_block") or "",
                                    opt_str(block, "name", "content_block") or "",
                                    [],
                                    opt_object(block, "input", "content_block"),
                                    0,
                                ]
                            elif block_kind == "text":
                                piece = opt_str(block, "text", "content_block")
                                if piece:
                                    committed = True
                                    yield TextDelta(piece) if events else StreamChunk(piece)
                        elif kind == "content_block_stop":
                            slot = calls.pop(_index(event), None)
                            if slot is not None and events:
                                tool_event = ToolCallEvent(_tool_call(slot))
                                committed = True
                                yield tool_event
                        elif kind == "message_start":
                            message = need_object(event.get("message") or {}, "message")
                            usage = _usage(message.get("usage"))
                            model = opt_str(message, "model", "message")
                        elif kind == "message_delta":
                            reason = opt_str(
                                need_object(event.get("delta") or {}, "delta"),
                                "stop_reason",
                                "delta",
                            )
                            if reason:
                                stop_reason = reason
                                if stop_reason == "refusal" and not committed:
                                    raise self._refusal(stop_reason, json.dumps(event))
                            if "usage" in event:
                                usage = _usage(event.get("usage"), usage)
                                if events:
                                    committed = True
                                    yield UsageEvent(usage)
                    if sse.stopped:
                        break
                await self._end_event_stream(
                    body,
                    sse,
                    committed,
                    finished=stop_reason is not None,
                    tool_call=events and bool(calls),
                )
        except STREAM_FAILURES as exc:
            # its cause is set by _stream_failure
            raise self._stream_failure(exc, committed, events and bool(calls))  # noqa: B904
        finish = anthropic_finish_reason(stop_reason)
        if events:
            for slot in calls.values():
                yield ToolCallEvent(_tool_call(slot))
            yield Final(finish, stop_reason, model, usage)
        else:
            yield final_chunk(finish, stop_reason, model, usage)


def _index(event: dict[str, Any]) -> int:
    """A content block's ``index`` (-1 when absent); a non-integer is malformed."""
    index = event.get("index", -1)
    if type(index) is not int:
        raise wrong("index", index, "an integer")
    return index


def _tool_call(slot: list[Any]) -> ToolCall:
    arguments = "".join(slot[2])
    if not arguments:
        given = slot[3]
        arguments = json.dumps(given) if given else "{}"
    return ToolCall(id=slot[0] or "toolu", name=slot[1], arguments=arguments)
