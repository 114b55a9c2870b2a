"""The OpenAI Responses API (``POST {base_url}/responses``) over httpx2.

New OpenAI models are served only here. A request carries ``input`` items
(``{"role", "content"}`` messages), the system prompt as ``instructions``
and tools as flat ``{"type": "function", "name", "description",
"parameters"}`` entries.

A non-streaming answer is a ``response`` object: ``status`` (``completed``,
``incomplete``, ``failed``), ``output`` items (``message`` with
``output_text`` parts, ``reasoning`` with ``summary_text`` parts,
``function_call`` with ``call_id``, ``name`` and ``arguments``), ``usage``
(``input_tokens``, ``output_tokens``, ``input_tokens_details.cached_tokens``),
``incomplete_details`` and ``error``.

A stream is typed SSE events, read here:

- ``response.output_text.delta``: answer text;
- ``response.reasoning_summary_text.delta`` (and ``response.reasoning_text.delta``):
  reasoning;
- ``response.output_item.added`` / ``response.function_call_arguments.delta``
  / ``.done`` / ``response.output_item.done``: a function call, emitted whole
  when its item is done;
- ``response.completed``: the terminator, with the usage and the status;
- ``response.incomplete``: the end too; ``incomplete_details.reason`` gives
  the finish reason (``max_output_tokens`` -> ``length``, ``content_filter``,
  which before any item is a :class:`~reliant.ContentFilterError`);
- ``response.failed`` and ``error``: the request failed *after* HTTP 200. They
  become a ``ProviderError`` classified from the error's ``code``
  (``rate_limit_exceeded`` -> 429, ``server_error`` -> 500, ...) before the
  first item, or a ``StreamError`` after it; never an empty success;
- anything else (``response.created``, ``...content_part.added``, ...) is ignored.

A body that ends without ``response.completed`` or ``response.incomplete``
is a failure; one that completes with no output at all ends with a bare
final, which ``ReliableProvider`` treats as an empty stream. Prefill is not
supported (the API answers anew after an assistant message), so
``ReliableProvider`` recovery restarts.

An assistant message's ``tool_calls`` become ``function_call`` input items
and a tool result naming its call a ``function_call_output`` item (ids
mapped by :func:`~reliant.providers._wire.tool_call_id`); a tool result
without an id travels as user text.
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
    FinishReason,
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
from ._finish import RESPONSES_INCOMPLETE_REASONS, final_chunk
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
    ResponseTooLarge,
)
from ._messages import MessagesProvider
from ._wire import (
    append_arguments,
    count,
    need_object,
    opt_list,
    opt_object,
    opt_str,
    tool_call_id,
    wrong,
)

__all__ = ["OpenAIResponses"]


_TERMINAL = ("response.completed", "response.incomplete")


def _input(messages: Sequence[ChatMessage]) -> tuple[str | None, list[dict[str, str]]]:
    """``instructions`` (the system messages) and the ``input`` items."""
    system: list[str] = []
    items: list[dict[str, str]] = []
    for m in messages:
        if m.role == "system":
            system.append(m.content)
        elif m.tool_calls and m.role == "assistant":
            if m.content:
                items.append({"role": "assistant", "content": m.content})
            items.extend(
                {
                    "type": "function_call",
                    "call_id": tool_call_id(call.id),
                    "name": call.name,
                    "arguments": call.arguments or "{}",
                }
                for call in m.tool_calls
            )
        elif m.role == "tool" and m.tool_call_id is not None:
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": tool_call_id(m.tool_call_id),
                    "output": m.content,
                }
            )
        else:
            role = "assistant" if m.role == "assistant" else "user"
            items.append({"role": role, "content": m.content})
    return ("\n\n".join(system) if system else None), items


def _tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "name": t.name,
            "description": t.description,
            "parameters": dict(t.parameters),
        }
        for t in tools
    ]


def _usage(data: Any) -> TokenUsage | None:
    if data is None:
        return None
    data = need_object(data, "response.usage")
    details = opt_object(data, "input_tokens_details", "response.usage")
    return TokenUsage(
        input_tokens=count(data, "input_tokens", "response.usage"),
        output_tokens=count(data, "output_tokens", "response.usage"),
        cached_input_tokens=(
            count(details, "cached_tokens", "response.usage.input_tokens_details")
            if details
            else None
        ),
    )


def _end(response: dict[str, Any], calls: bool) -> tuple[FinishReason | None, str | None]:
    """The normalised and raw finish reason of a finished ``response``."""
    status = opt_str(response, "status", "response")
    if status == "incomplete":
        details = opt_object(response, "incomplete_details", "response")
        reason = opt_str(details, "reason", "response.incomplete_details") if details else None
        raw = reason or status
        return RESPONSES_INCOMPLETE_REASONS.get(raw, "other"), raw
    if status is None or status == "completed":
        return ("tool_calls" if calls else "stop"), status or "completed"
    return "other", status


def _failure(response: dict[str, Any]) -> Any:
    """The error of a failed ``response``, or None when it did not fail."""
    error = response.get("error")
    if error is not None:
        return error
    if response.get("status") == "failed":
        return {"message": "response failed without an error"}
    return None


def _read_output(output: list[Any], limit: int) -> tuple[list[str], list[str], list[ToolCall]]:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    for i, item in enumerate(output):
        where = f"output[{i}]"
        item = need_object(item, where)
        kind = item.get("type")
        if kind == "message":
            for j, part in enumerate(opt_list(item, "content", where) or ()):
                part = need_object(part, f"{where}.content[{j}]")
                if part.get("type") == "output_text":
                    texts.append(opt_str(part, "text", f"{where}.content[{j}]") or "")
        elif kind == "reasoning":
            for j, part in enumerate(opt_list(item, "summary", where) or ()):
                part = need_object(part, f"{where}.summary[{j}]")
                thoughts.append(opt_str(part, "text", f"{where}.summary[{j}]") or "")
        elif kind == "function_call":
            arguments = opt_str(item, "arguments", where) or "{}"
            if len(arguments) > limit:
                raise ResponseTooLarge(f"tool call arguments larger than {limit} bytes")
            calls.append(
                ToolCall(
                    id=opt_str(item, "call_id", where)
                    or opt_str(item, "id", where)
                    or f"call_{len(calls)}",
                    name=opt_str(item, "name", where) or "",
                    arguments=arguments,
                )
            )
    return texts, thoughts, calls


def _error_of(event: dict[str, Any]) -> Any:
    """The error an ``error`` event carries: nested under ``error``, or the event itself."""
    nested = event.get("error")
    return nested if type(nested) is dict else event


class OpenAIResponses(MessagesProvider):
    """A provider for the OpenAI Responses API (``/v1/responses``).

    Args:
        name: Provider name used in errors and failure trails.
        base_url: API base (``/responses`` is appended), e.g. ``https://api.openai.com/v1``.
        api_key: Bearer token; None reads ``OPENAI_API_KEY`` now.
        client: A shared ``httpx2.AsyncClient`` (the caller closes it); None
            makes the provider create one on first use and own it.
        timeout: Seconds (every phase) or an ``httpx2.Timeout`` (default
            ``DEFAULT_TIMEOUT``); None defers to the client's configuration.
        max_output_tokens: ``max_output_tokens`` of every request (None: the model's default).
        reasoning_effort: ``reasoning.effort`` (``"low"``, ``"medium"``, ...) for reasoning models.
        reasoning_summary: ``reasoning.summary`` (``"auto"``, ``"detailed"``):
            ask for reasoning summaries, delivered as reasoning.
        send_temperature: Send ``temperature``; reasoning models reject it.
        store: ``store`` of every request (None: the API's default).
        extra_headers: Headers added to every request.
        vision: The model accepts images (reported by ``supports_vision``).
        max_response_bytes: Largest response body after decompression (32 MiB).
        max_event_bytes: Largest SSE line or event (4 MiB).
        max_tool_arguments_bytes: Largest arguments of one tool call (4 MiB).
        request_timeout: Seconds a whole non-streaming call may take (600).

    Raises:
        ValueError: ``base_url`` is not an http(s) URL, or a cap is not positive.
        TypeError: A cap or timeout of the wrong type.
    """

    def __init__(
        self,
        *,
        name: str = "openai_responses",
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        client: httpx2.AsyncClient | None = None,
        timeout: TimeoutArg = DEFAULT_TIMEOUT,
        max_output_tokens: int | None = None,
        reasoning_effort: str | None = None,
        reasoning_summary: str | None = None,
        send_temperature: bool = True,
        store: bool | None = None,
        extra_headers: Mapping[str, str] | None = None,
        vision: bool = False,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_tool_arguments_bytes: int = DEFAULT_MAX_TOOL_ARGUMENTS_BYTES,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get("OPENAI_API_KEY")
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
        self._vision = vision
        self._url = f"{self._base_url}/responses"
        self._extra: dict[str, Any] = {}
        if max_output_tokens is not None:
            self._extra["max_output_tokens"] = max_output_tokens
        reasoning = {}
        if reasoning_effort is not None:
            reasoning["effort"] = reasoning_effort
        if reasoning_summary is not None:
            reasoning["summary"] = reasoning_summary
        if reasoning:
            self._extra["reasoning"] = reasoning
        if store is not None:
            self._extra["store"] = store
        self._send_temperature = send_temperature
        headers = {"content-type": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        headers.update(extra_headers or {})
        self._headers = headers

    # -- capabilities --------------------------------------------------------------

    @property
    def supports_native_tools(self) -> bool:
        return True

    @property
    def supports_vision(self) -> bool:
        return self._vision

    @property
    def supports_streaming(self) -> bool:
        return True

    @property
    def supports_streaming_tool_events(self) -> bool:
        return True

    # -- payloads ------------------------------------------------------------------

    def _payload(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] | None,
        model: str,
        temperature: float,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        instructions, items = _input(messages)
        payload: dict[str, Any] = {"model": model, "input": items}
        if instructions is not None:
            payload["instructions"] = instructions
        if self._send_temperature:
            payload["temperature"] = temperature
        if stream:
            payload["stream"] = True
        if tools:
            payload["tools"] = _tools(tools)
        payload.update(self._extra)
        return payload

    # -- non-streaming -------------------------------------------------------------

    async def _answer(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] | None,
        model: str,
        temperature: float,
    ) -> ChatResponse:
        data = await self._post_json(
            self._url, self._payload(messages, tools, model, temperature, stream=False)
        )
        try:
            error = _failure(data)
            if error is not None:
                raise self._payload_error(error, json.dumps(data))
            output = data.get("output")
            if type(output) is not list:
                if output is not None:
                    raise wrong("output", output, "a list")
                raise self._invalid_response(f"response without output: {json.dumps(data)}")
            texts, thoughts, calls = _read_output(output, self._max_tool_arguments_bytes)
            finish, raw = _end(data, bool(calls))
            response = ChatResponse(
                text="".join(texts) if texts else None,
                tool_calls=tuple(calls),
                usage=_usage(data.get("usage")),
                reasoning_content="".join(thoughts) if thoughts else None,
                finish_reason=finish,
                raw_finish_reason=raw,
                model=opt_str(data, "model", "response"),
            )
        except PARSE_FAILURES as exc:
            raise self._parse_failure(exc, data) from exc
        if finish == "content_filter" and not response.text and not response.tool_calls:
            raise self._refusal(str(raw), json.dumps(data))
        return response

    async def warmup(self) -> None:
        """Open a pooled connection (``GET {base_url}/models``); never raises."""
        await self._warmup_get(f"{self._base_url}/models")

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
        payload = self._payload(messages, tools, model, temperature, stream=True)
        return self._stream(payload, events, count_tokens)

    async def _stream(
        self, payload: dict[str, Any], events: bool, count_tokens: bool
    ) -> AsyncGenerator[Any, None]:
        """The SSE loop behind every stream kind: chunks, or events when ``events``."""
        committed = False
        # output_index -> [call_id, name, argument parts, parts size, final arguments]
        calls: dict[int, list[Any]] = {}
        done_calls = 0
        finish: FinishReason | None = None
        raw_finish: str | None = None
        model: str | None = None
        usage: TokenUsage | None = None
        limit = self._max_tool_arguments_bytes
        # No done_type: the terminal events carry the usage, so they are read here.
        sse = SSEEventDecoder(max_event_bytes=self._max_event_bytes)
        sse.terminator = "response.completed"
        try:
            async with self._open_event_stream(self._url, payload) as body:
                async for raw in body:
                    for event in sse.feed(raw):
                        kind = event.get("type")
                        if kind == "response.output_text.delta":
                            piece = event.get("delta")
                            if piece:
                                if type(piece) is not str:
                                    raise wrong("delta", piece, "a string")
                                committed = True
                                if events:
                                    yield TextDelta(piece)
                                elif count_tokens:
                                    yield StreamChunk(piece, None, False, estimate_tokens(piece))
                                else:
                                    yield StreamChunk(piece)
                        elif kind in (
                            "response.reasoning_summary_text.delta",
                            "response.reasoning_text.delta",
                        ):
                            thought = opt_str(event, "delta", kind)
                            if thought:
                                committed = True
                                yield (
                                    ReasoningDelta(thought) if events else StreamChunk("", thought)
                                )
                        elif kind == "response.function_call_arguments.delta":
                            slot = calls.get(_output_index(event))
                            if slot is not None:
                                slot[3] = append_arguments(
                                    slot[2], event.get("delta"), slot[3], limit, "delta"
                                )
                        elif kind == "response.output_item.added":
                            item = need_object(event.get("item"), "item")
                            if item.get("type") == "function_call":
                                calls[_output_index(event)] = _call_slot(item)
                        elif kind == "response.output_item.done":
                            item = need_object(event.get("item"), "item")
                            if item.get("type") == "function_call":
                                slot = calls.pop(_output_index(event), None) or _call_slot(item)
                                whole = opt_str(item, "arguments", "item")
                                if whole and len(whole) > limit:
                                    raise ResponseTooLarge(
                                        f"tool call arguments larger than {limit} bytes"
                                    )
                                done_calls += 1
                                if events:
                                    committed = True
                                    yield ToolCallEvent(_tool_call(slot, whole, done_calls))
                        elif kind in _TERMINAL:
                            response = need_object(event.get("response"), "response")
                            model = opt_str(response, "model", "response") or model
                            usage = _usage(response.get("usage"))
                            finish, raw_finish = _end(response, done_calls > 0 or bool(calls))
                            if finish == "content_filter" and not committed:
                                raise self._refusal(str(raw_finish), json.dumps(event))
                            sse.done = sse.stopped = True
                            break
                        elif kind == "response.failed":
                            response = need_object(event.get("response"), "response")
                            self._raise_inband(
                                _failure(response) or response,
                                json.dumps(event),
                                committed,
                                events and bool(calls),
                            )
                        elif kind == "error":
                            self._raise_inband(
                                _error_of(event),
                                json.dumps(event),
                                committed,
                                events and bool(calls),
                            )
                        elif kind == "response.created":
                            created = opt_object(event, "response")
                            if created:
                                model = opt_str(created, "model", "response") or model
                    if sse.stopped:
                        break
                await self._end_event_stream(body, sse, committed, tool_call=events and bool(calls))
        except STREAM_FAILURES as exc:
            # its cause is set by _stream_failure
            raise self._stream_failure(exc, committed, events and bool(calls))  # noqa: B904
        if not committed and finish == "stop" and done_calls == 0 and not calls:
            # Completed with no output at all: an empty stream, ended with the
            # bare final ReliableProvider fails over from.
            yield Final() if events else StreamChunk.final()
            return
        if events:
            for slot in calls.values():  # items never marked done: the stream completed anyway
                done_calls += 1
                yield ToolCallEvent(_tool_call(slot, None, done_calls))
            if usage is not None:
                yield UsageEvent(usage)
            yield Final(finish, raw_finish, model, usage)
        else:
            yield final_chunk(finish, raw_finish, model, usage)


def _output_index(event: dict[str, Any]) -> int:
    """An output item's ``output_index`` (-1 when absent); a non-integer is malformed."""
    index = event.get("output_index", -1)
    if type(index) is not int:
        raise wrong("output_index", index, "an integer")
    return index


def _call_slot(item: dict[str, Any]) -> list[Any]:
    return [
        opt_str(item, "call_id", "item") or opt_str(item, "id", "item") or "",
        opt_str(item, "name", "item") or "",
        [],
        0,
    ]


def _tool_call(slot: list[Any], whole: str | None, number: int) -> ToolCall:
    arguments = whole or "".join(slot[2]) or "{}"
    return ToolCall(id=slot[0] or f"call_{number - 1}", name=slot[1], arguments=arguments)
