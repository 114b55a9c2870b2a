"""OpenAI-compatible chat completions over httpx2 (OpenAI, Groq, vLLM, Ollama, ...).

Streaming is SSE: ``data: {chunk}`` events ending with ``data: [DONE]``,
usage in a last chunk asked for with ``stream_options.include_usage``, and
tool calls arriving as deltas keyed by ``index`` that are accumulated into
whole calls and emitted when ``finish_reason`` (or ``[DONE]``) arrives.
Reasoning (DeepSeek's ``reasoning_content``, the ``reasoning`` field of
Groq, OpenRouter and others) arrives in the same deltas, also next to tool
calls, and is delivered as ``StreamChunk.reasoning`` / ``ReasoningDelta``.

How a stream ends:

- ``data: [DONE]`` after everything: complete;
- the body ends cleanly after a ``finish_reason`` but without ``[DONE]``
  (some compatible servers omit it): complete too, since the model said why
  it stopped;
- the body ends without either: a failure (``ProviderError`` before the
  first item, ``StreamError`` after it), never a silent success;
- ``finish_reason: "content_filter"`` before any item was delivered:
  ``ContentFilterError``; after text, the stream ends normally and its final
  chunk / ``Final`` says ``finish_reason="content_filter"``.

The final chunk and ``Final`` carry the normalised ``finish_reason`` (see
:mod:`reliant.providers._finish`), the server's own word, the ``model`` the
server reported and the ``usage``.

The per-event loop is the hot path the benchmarks measure: one
``json.loads`` per event, dictionary look-ups, and no per-event allocation
beyond the item yielded. See :mod:`reliant.providers._http` for the SSE
decoder measurements.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import httpx2

from .._provider import (
    ChunkStream,
    EventStream,
    Provider,
    stream_from_generator,
)
from .._types import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    Final,
    ReasoningDelta,
    StreamChunk,
    StreamEvent,
    StreamOptions,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    UsageEvent,
    estimate_tokens,
    response_events,
)
from ._finish import final_chunk, openai_finish_reason
from ._http import (
    DEFAULT_TIMEOUT,
    PARSE_FAILURES,
    STREAM_FAILURES,
    HTTPProvider,
    SSEEventDecoder,
    TimeoutArg,
)
from ._limits import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_TOOL_ARGUMENTS_BYTES,
    DEFAULT_REQUEST_TIMEOUT,
    MalformedResponse,
)
from ._wire import (
    append_arguments,
    count,
    need_list,
    need_object,
    opt_list,
    opt_object,
    opt_str,
    tool_call_id,
    wrong,
)

__all__ = ["OpenAICompatible"]

_DEFAULT_OPTIONS = StreamOptions()


def _messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    return [
        {"role": m.role, "content": m.content}
        if not m.tool_calls and m.tool_call_id is None
        else _tool_message(m)
        for m in messages
    ]


def _tool_message(m: ChatMessage) -> dict[str, Any]:
    """An assistant turn with its tool calls, or a tool result naming its call."""
    if m.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": tool_call_id(m.tool_call_id or ""),
            "content": m.content,
        }
    return {
        "role": m.role,
        "content": m.content or None,
        "tool_calls": [
            {
                "id": tool_call_id(call.id),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments or "{}"},
            }
            for call in m.tool_calls
        ],
    }


def _system_messages(system_prompt: str | None, message: str) -> list[ChatMessage]:
    if system_prompt is None:
        return [ChatMessage.user(message)]
    return [ChatMessage.system(system_prompt), ChatMessage.user(message)]


def _tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": dict(t.parameters),
            },
        }
        for t in tools
    ]


def _usage(usage: Any) -> TokenUsage | None:
    if usage is None:
        return None
    usage = need_object(usage, "usage")
    details = opt_object(usage, "prompt_tokens_details", "usage")
    return TokenUsage(
        input_tokens=count(usage, "prompt_tokens", "usage"),
        output_tokens=count(usage, "completion_tokens", "usage"),
        cached_input_tokens=(
            count(details, "cached_tokens", "usage.prompt_tokens_details") if details else None
        ),
    )


def _arguments(value: Any, path: str = "function.arguments") -> str:
    if type(value) is str:
        return value or "{}"
    if value is None or type(value) is dict:
        return json.dumps(value if value is not None else {})
    raise wrong(path, value, "a string or an object")


_TOOL_DELTAS = "choices[0].delta.tool_calls"


def _accumulate(
    calls: dict[int, list[Any]], deltas: Any, limit: int = DEFAULT_MAX_TOOL_ARGUMENTS_BYTES
) -> None:
    """Fold tool-call deltas into ``calls``: index -> [id, name, argument parts, size]."""
    for delta in need_list(deltas, _TOOL_DELTAS):
        delta = need_object(delta, f"{_TOOL_DELTAS}[]")
        index = delta.get("index")
        if not isinstance(index, int):
            # Some compatible servers omit the index: a new id starts a new call.
            call_id = opt_str(delta, "id", f"{_TOOL_DELTAS}[]")
            last = max(calls) if calls else -1
            index = last + 1 if last < 0 or (call_id and call_id != calls[last][0]) else last
        slot = calls.get(index)
        if slot is None:
            slot = calls[index] = ["", "", [], 0]
        call_id = opt_str(delta, "id", f"{_TOOL_DELTAS}[]")
        if call_id:
            slot[0] = call_id
        function = opt_object(delta, "function", f"{_TOOL_DELTAS}[]")
        if function:
            name = opt_str(function, "name", f"{_TOOL_DELTAS}[].function")
            if name:
                slot[1] = name
            arguments = function.get("arguments")
            if arguments:
                path = f"{_TOOL_DELTAS}[].function.arguments"
                if type(arguments) is dict:
                    arguments = _arguments(arguments, path)
                slot[3] = append_arguments(slot[2], arguments, slot[3], limit, path)


def _response(
    message: Any, usage: Any, raw_finish: str | None = None, model: str | None = None
) -> ChatResponse:
    where = "choices[0].message"
    message = need_object(message, where)
    reasoning = opt_str(message, "reasoning_content", where) or opt_str(message, "reasoning", where)
    calls = []
    for i, call in enumerate(opt_list(message, "tool_calls", where) or ()):
        path = f"{where}.tool_calls[{i}]"
        call = need_object(call, path)
        function = opt_object(call, "function", path) or {}
        calls.append(
            ToolCall(
                id=opt_str(call, "id", path) or f"call_{i}",
                name=opt_str(function, "name", f"{path}.function") or "",
                arguments=_arguments(function.get("arguments"), f"{path}.function.arguments"),
            )
        )
    return ChatResponse(
        text=opt_str(message, "content", where),
        tool_calls=tuple(calls),
        usage=_usage(usage),
        reasoning_content=reasoning,
        finish_reason=openai_finish_reason(raw_finish),
        raw_finish_reason=raw_finish or None,
        model=model,
    )


_DELTA = "choices[0].delta"


def _chunk_from_delta(delta: dict[str, Any], count_tokens: bool) -> StreamChunk | None:
    content = delta.get("content")
    if content and len(delta) == 1 and type(content) is str:  # the common case: only text
        if count_tokens:
            return StreamChunk(content, None, False, estimate_tokens(content))
        return StreamChunk(content)
    reasoning = opt_str(delta, "reasoning_content", _DELTA) or opt_str(delta, "reasoning", _DELTA)
    content = opt_str(delta, "content", _DELTA) or ""
    if not content and not reasoning:
        return None
    tokens = estimate_tokens(content) if count_tokens and content else 0
    return StreamChunk(content, reasoning or None, False, tokens)


def _finish(calls: dict[int, list[Any]]) -> list[ToolCall]:
    done = [
        ToolCall(id=slot[0] or f"call_{index}", name=slot[1], arguments="".join(slot[2]) or "{}")
        for index, slot in sorted(calls.items())
    ]
    calls.clear()
    return done


class OpenAICompatible(HTTPProvider):
    """A provider for any OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        name: Provider name used in errors and failure trails.
        base_url: API base, e.g. ``https://api.openai.com/v1`` or a local
            server's ``http://127.0.0.1:8000/v1``.
        api_key: Bearer token; None reads ``OPENAI_API_KEY`` now. Without a
            key no ``Authorization`` header is sent (fine for local servers).
        client: A shared ``httpx2.AsyncClient`` (the caller closes it); None
            makes the provider create one on first use and own it (close it
            with :meth:`aclose` or ``async with provider:``).
        timeout: Seconds (every phase) or an ``httpx2.Timeout``, applied to
            every request, also on a shared client; the default
            ``DEFAULT_TIMEOUT`` is connect 10, read 300, write 30, pool 30 and
            has no total limit, so long streams live. None defers to the
            client's own configuration.
        extra_headers: Headers added to every request.
        native_tools: The endpoint supports ``tools``; when False, tools are
            described in the system prompt and ``<tool_call>`` blocks parsed.
        streaming: The endpoint supports SSE streaming; when False, streams
            deliver the non-streaming answer (to the whole history) as one
            chunk, then a final chunk with its finish reason, model and usage.
        vision: The model accepts images (reported by ``supports_vision``).
        supports_prefill: The server continues a trailing assistant message
            (reported by ``supports_prefill``). False by default because the
            official OpenAI API does not: it answers anew after an assistant
            message. True for vLLM (and servers that copy its chat-template
            options): when the last message is an assistant message, the
            request also carries ``"continue_final_message": true`` and
            ``"add_generation_prompt": false``, which make vLLM render that
            message open-ended (no end-of-turn token) and generate its
            continuation; vLLM refuses the two set to true together. Servers
            that continue a trailing assistant message on their own
            (llama.cpp's server) ignore the unknown fields.
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
        name: str = "openai",
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        client: httpx2.AsyncClient | None = None,
        timeout: TimeoutArg = DEFAULT_TIMEOUT,
        extra_headers: Mapping[str, str] | None = None,
        native_tools: bool = True,
        streaming: bool = True,
        vision: bool = False,
        supports_prefill: bool = False,
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
        self._native_tools = native_tools
        self._streaming = streaming
        self._vision = vision
        self._prefill = supports_prefill
        self._url = f"{self._base_url}/chat/completions"
        headers = {"content-type": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        headers.update(extra_headers or {})
        self._headers = headers

    # -- capabilities --------------------------------------------------------------

    @property
    def supports_native_tools(self) -> bool:
        return self._native_tools

    @property
    def supports_vision(self) -> bool:
        return self._vision

    @property
    def supports_streaming(self) -> bool:
        return self._streaming

    @property
    def supports_streaming_tool_events(self) -> bool:
        return self._streaming and self._native_tools

    @property
    def supports_prefill(self) -> bool:
        """The ``supports_prefill`` constructor argument."""
        return self._prefill

    # -- payloads ------------------------------------------------------------------

    def _chat_url(self, model: str) -> str:
        """The URL a request for ``model`` goes to (Azure's deployment URLs name it)."""
        return self._url

    def _payload(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] | None,
        model: str,
        temperature: float,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": model,
            "messages": _messages(messages),
            "temperature": temperature,
            "stream": stream,
        }
        if stream:
            payload["stream_options"] = {"include_usage": True}
        if tools:
            payload["tools"] = _tools(tools)
        if self._prefill and messages and messages[-1].role == "assistant":
            # vLLM's chat-template options for continuing the last message.
            payload["continue_final_message"] = True
            payload["add_generation_prompt"] = False
        return payload

    # -- non-streaming -------------------------------------------------------------

    async def _complete(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] | None,
        model: str,
        temperature: float,
    ) -> ChatResponse:
        data = await self._post_json(
            self._chat_url(model), self._payload(messages, tools, model, temperature, stream=False)
        )
        try:
            choices = data.get("choices")
            if not choices or not isinstance(choices, list):
                error = data.get("error")
                if error is not None:
                    raise self._payload_error(error, json.dumps(data))
                if choices is not None:
                    raise wrong("choices", choices, "a non-empty list")
                raise self._invalid_response(f"response without choices: {json.dumps(data)}")
            choice = need_object(choices[0], "choices[0]")
            raw_finish = opt_str(choice, "finish_reason", "choices[0]")
            response = _response(
                choice.get("message") or {},
                data.get("usage"),
                raw_finish,
                opt_str(data, "model", "response"),
            )
        except PARSE_FAILURES as exc:
            raise self._parse_failure(exc, data) from exc
        if response.finish_reason == "content_filter" and not response.text:
            raise self._refusal(str(raw_finish), json.dumps(data))
        return response

    async def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> str:
        """Answer one message under an optional system prompt."""
        response = await self._complete(
            _system_messages(system_prompt, message), None, model, temperature
        )
        return response.text or ""

    async def chat_with_history(
        self, messages: Sequence[ChatMessage], model: str, temperature: float
    ) -> str:
        """Answer a conversation; messages are sent as they are."""
        return (await self._complete(messages, None, model, temperature)).text or ""

    async def chat_with_tools(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        model: str,
        temperature: float,
    ) -> ChatResponse:
        """Answer a conversation with tools on offer."""
        if not self._native_tools:
            return await Provider.chat(self, ChatRequest(messages, tools), model, temperature)
        return await self._complete(messages, tools, model, temperature)

    async def chat(self, request: ChatRequest, model: str, temperature: float) -> ChatResponse:
        """Answer a request, with native or prompt-guided tools."""
        if request.tools and not self._native_tools:
            return await super().chat(request, model, temperature)
        return await self._complete(request.messages, request.tools, model, temperature)

    async def warmup(self) -> None:
        """Open a pooled connection (``GET {base_url}/models``); never raises."""
        await self._warmup_get(f"{self._base_url}/models")

    # -- streaming -----------------------------------------------------------------

    def stream_chat_with_system(
        self,
        system_prompt: str | None,
        message: str,
        model: str,
        temperature: float,
        options: StreamOptions = _DEFAULT_OPTIONS,
    ) -> ChunkStream:
        """Stream the answer to one message as ``StreamChunk``s."""
        messages = _system_messages(system_prompt, message)
        if not self._streaming:
            return self._stream_via_complete(messages, model, temperature, options)
        payload = self._payload(messages, None, model, temperature, stream=True)
        return aclosing(self._stream(payload, False, options.count_tokens))

    def stream_chat_with_history(
        self,
        messages: Sequence[ChatMessage],
        model: str,
        temperature: float,
        options: StreamOptions = _DEFAULT_OPTIONS,
    ) -> ChunkStream:
        """Stream the answer to a conversation as ``StreamChunk``s."""
        if not self._streaming:
            return self._stream_via_complete(messages, model, temperature, options)
        payload = self._payload(messages, None, model, temperature, stream=True)
        return aclosing(self._stream(payload, False, options.count_tokens))

    def stream_chat(
        self,
        request: ChatRequest,
        model: str,
        temperature: float,
        options: StreamOptions = _DEFAULT_OPTIONS,
    ) -> EventStream:
        """Stream the answer to a request as events (text, tool calls, usage, final)."""
        if not self._streaming:
            return super().stream_chat(request, model, temperature, options)
        if request.tools and not self._native_tools:
            return self._stream_via_chat(request, model, temperature)
        payload = self._payload(request.messages, request.tools, model, temperature, stream=True)
        return aclosing(self._stream(payload, True, options.count_tokens))

    @stream_from_generator
    async def _stream_via_complete(
        self,
        messages: Sequence[ChatMessage],
        model: str,
        temperature: float,
        options: StreamOptions,
    ) -> AsyncGenerator[StreamChunk, None]:
        # streaming=False: the whole history (a trailing assistant message to
        # continue included) in one request, then its text and what ended it.
        response = await self._complete(messages, None, model, temperature)
        if response.text:
            chunk = StreamChunk(response.text)
            yield chunk.with_token_estimate() if options.count_tokens else chunk
        yield final_chunk(
            response.finish_reason, response.raw_finish_reason, response.model, response.usage
        )

    @stream_from_generator
    async def _stream_via_chat(
        self, request: ChatRequest, model: str, temperature: float
    ) -> AsyncGenerator[StreamEvent, None]:
        # Prompt-guided tools need the whole answer to find <tool_call> blocks.
        for event in response_events(await self.chat(request, model, temperature)):
            yield event

    async def _stream(
        self, payload: dict[str, Any], events: bool, count_tokens: bool
    ) -> AsyncGenerator[Any, None]:
        """The SSE loop behind every stream kind: chunks, or events when ``events``.

        Per event: one ``choices`` look-up, the delta, and ``finish_reason``;
        a text-only delta (the bulk of a stream) takes the short path.
        ``model`` and ``usage`` are read from the chunk with
        ``finish_reason`` and the usage chunk with empty ``choices``; usage
        on a chunk whose finish reason is null (OpenRouter sends it in a
        trailing chunk of that shape; vLLM's continuous usage stats repeat
        it on every chunk) is only kept, and the newest is read once at the
        end, so a text chunk pays one dict look-up for it.
        """
        committed = False
        calls: dict[int, list[Any]] = {}
        raw_finish: str | None = None
        model: str | None = None
        usage: TokenUsage | None = None
        limit = self._max_tool_arguments_bytes
        sse = SSEEventDecoder(done_data="[DONE]", max_event_bytes=self._max_event_bytes)
        seen_choices = bare = False
        late_usage: dict[str, Any] | None = None  # a chunk whose usage is still unread
        try:
            async with self._open_event_stream(self._chat_url(payload["model"]), payload) as body:
                async for raw in body:
                    for chunk in sse.feed(raw):
                        choices = chunk.get("choices")
                        if choices:
                            if type(choices) is not list:
                                raise wrong("choices", choices, "a list")
                            seen_choices = True
                            choice = choices[0]
                            if type(choice) is not dict:
                                raise wrong("choices[0]", choice, "an object")
                            delta = choice.get("delta")
                            if delta:
                                if type(delta) is not dict:
                                    raise wrong(_DELTA, delta, "an object")
                                content = delta.get("content")
                                if content and len(delta) == 1 and type(content) is str:
                                    committed = True
                                    if events:
                                        yield TextDelta(content)
                                    elif count_tokens:
                                        yield StreamChunk(
                                            content, None, False, estimate_tokens(content)
                                        )
                                    else:
                                        yield StreamChunk(content)
                                elif events:
                                    # Reasoning first: DeepSeek-style servers send
                                    # it before (or next to) the text and tool calls.
                                    tool_deltas = delta.get("tool_calls")
                                    if tool_deltas:
                                        _accumulate(calls, tool_deltas, limit)
                                    reasoning = opt_str(
                                        delta, "reasoning_content", _DELTA
                                    ) or opt_str(delta, "reasoning", _DELTA)
                                    if reasoning:
                                        committed = True
                                        yield ReasoningDelta(reasoning)
                                    text = opt_str(delta, "content", _DELTA)
                                    if text:
                                        committed = True
                                        yield TextDelta(text)
                                else:
                                    item = _chunk_from_delta(delta, count_tokens)
                                    if item is not None:
                                        committed = True
                                        yield item
                            reason = choice.get("finish_reason")
                            if not reason:
                                # Usage beside a null finish reason (OpenRouter's
                                # trailing chunk; vLLM's continuous stats on every
                                # chunk): kept raw, read once at the end, so a text
                                # chunk pays one look-up and no parsing.
                                late = chunk.get("usage")
                                if late:
                                    late_usage = chunk
                                continue
                            if type(reason) is not str:
                                raise wrong("choices[0].finish_reason", reason, "a string")
                            raw_finish = reason
                            model = opt_str(chunk, "model", "chunk") or model
                            if raw_finish == "content_filter" and not committed:
                                raise self._refusal(raw_finish, json.dumps(chunk))
                            for call in _finish(calls):
                                committed = True
                                yield ToolCallEvent(call)
                        elif type(choices) is not list:
                            if choices is not None:
                                raise wrong("choices", choices, "a list")
                            bare = True
                        # Usage comes in a last chunk with empty choices
                        # (OpenAI) or with the finish reason (Together, vLLM):
                        # text chunks never get here.
                        usage_data = chunk.get("usage")
                        if usage_data:
                            late_usage = None  # read here, and newer than any kept
                            usage = _usage(usage_data) or TokenUsage()
                            model = opt_str(chunk, "model", "chunk") or model
                            if events:
                                committed = True
                                yield UsageEvent(usage)
                    if sse.stopped:
                        break
                await self._end_event_stream(
                    body, sse, committed, finished=raw_finish is not None, tool_call=bool(calls)
                )
                if bare and not seen_choices:
                    raise MalformedResponse("malformed response: choices missing in every event")
            if late_usage is not None:
                usage = _usage(late_usage["usage"]) or TokenUsage()
                model = opt_str(late_usage, "model", "chunk") or model
        except STREAM_FAILURES as exc:
            # its cause is set by _stream_failure
            raise self._stream_failure(exc, committed, bool(calls))  # noqa: B904
        finish = openai_finish_reason(raw_finish)
        if events:
            if late_usage is not None and usage is not None:
                yield UsageEvent(usage)
            for call in _finish(calls):
                yield ToolCallEvent(call)
            yield Final(finish, raw_finish, model if isinstance(model, str) else None, usage)
        else:
            yield final_chunk(finish, raw_finish, model if isinstance(model, str) else None, usage)
