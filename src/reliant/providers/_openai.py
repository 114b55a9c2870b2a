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
    STREAM_FAILURES,
    HTTPProvider,
    SSEEventDecoder,
    TimeoutArg,
)

__all__ = ["OpenAICompatible"]

_DEFAULT_OPTIONS = StreamOptions()


def _messages(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


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
    if not isinstance(usage, Mapping):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    return TokenUsage(
        input_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        cached_input_tokens=cached,
    )


def _arguments(value: Any) -> str:
    if isinstance(value, str):
        return value or "{}"
    return json.dumps(value if value is not None else {})


def _accumulate(calls: dict[int, list[Any]], deltas: Any) -> None:
    """Fold tool-call deltas into ``calls``: index -> [id, name, argument parts]."""
    for delta in deltas:
        index = delta.get("index")
        if not isinstance(index, int):
            # Some compatible servers omit the index: a new id starts a new call.
            call_id = delta.get("id")
            last = max(calls) if calls else -1
            index = last + 1 if last < 0 or (call_id and call_id != calls[last][0]) else last
        slot = calls.get(index)
        if slot is None:
            slot = calls[index] = ["", "", []]
        call_id = delta.get("id")
        if call_id:
            slot[0] = call_id
        function = delta.get("function")
        if function:
            name = function.get("name")
            if name:
                slot[1] = name
            arguments = function.get("arguments")
            if arguments:
                slot[2].append(arguments if isinstance(arguments, str) else json.dumps(arguments))


def _response(
    message: dict[str, Any], usage: Any, raw_finish: Any = None, model: Any = None
) -> ChatResponse:
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    calls = tuple(
        ToolCall(
            id=call.get("id") or f"call_{i}",
            name=(call.get("function") or {}).get("name", ""),
            arguments=_arguments((call.get("function") or {}).get("arguments")),
        )
        for i, call in enumerate(message.get("tool_calls") or ())
    )
    content = message.get("content")
    return ChatResponse(
        text=content if isinstance(content, str) else None,
        tool_calls=calls,
        usage=_usage(usage),
        reasoning_content=reasoning if isinstance(reasoning, str) else None,
        finish_reason=openai_finish_reason(raw_finish),
        raw_finish_reason=raw_finish if isinstance(raw_finish, str) and raw_finish else None,
        model=model if isinstance(model, str) else None,
    )


def _chunk_from_delta(delta: dict[str, Any], count_tokens: bool) -> StreamChunk | None:
    content = delta.get("content")
    if content and len(delta) == 1:  # the common case: nothing but text
        if count_tokens:
            return StreamChunk(content, None, False, estimate_tokens(content))
        return StreamChunk(content)
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if not isinstance(reasoning, str):
        reasoning = None
    if not isinstance(content, str):
        content = ""
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
    ) -> None:
        if api_key is None:
            api_key = os.environ.get("OPENAI_API_KEY")
        super().__init__(
            name=name, base_url=base_url, api_key=api_key, client=client, timeout=timeout
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
            self._url, self._payload(messages, tools, model, temperature, stream=False)
        )
        choices = data.get("choices")
        if not choices or not isinstance(choices, list):
            error = data.get("error")
            if error is not None:
                raise self._payload_error(error, json.dumps(data))
            raise self._invalid_response(f"response without choices: {json.dumps(data)}")
        try:
            choice = choices[0]
            raw_finish = choice.get("finish_reason")
            response = _response(
                choice.get("message") or {}, data.get("usage"), raw_finish, data.get("model")
            )
        except (AttributeError, TypeError) as exc:
            raise self._invalid_response(f"unexpected response: {json.dumps(data)}") from exc
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
        ``model`` and ``usage`` are read only from the last chunks (the one
        with ``finish_reason`` and the usage chunk with empty ``choices``),
        so the common event pays nothing for them; a server that repeats
        usage on every chunk (vLLM's continuous usage stats) is read once,
        at the end.
        """
        committed = False
        calls: dict[int, list[Any]] = {}
        raw_finish: str | None = None
        model: str | None = None
        usage: TokenUsage | None = None
        sse = SSEEventDecoder(done_data="[DONE]")
        try:
            async with self._open_event_stream(self._url, payload) as body:
                async for raw in body:
                    for chunk in sse.feed(raw):
                        choices = chunk.get("choices")
                        if choices:
                            choice = choices[0]
                            delta = choice.get("delta")
                            if delta:
                                content = delta.get("content")
                                if content and len(delta) == 1:
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
                                        _accumulate(calls, tool_deltas)
                                    reasoning = delta.get("reasoning_content") or delta.get(
                                        "reasoning"
                                    )
                                    if reasoning and isinstance(reasoning, str):
                                        committed = True
                                        yield ReasoningDelta(reasoning)
                                    if content and isinstance(content, str):
                                        committed = True
                                        yield TextDelta(content)
                                else:
                                    item = _chunk_from_delta(delta, count_tokens)
                                    if item is not None:
                                        committed = True
                                        yield item
                            reason = choice.get("finish_reason")
                            if not reason:
                                continue
                            raw_finish = str(reason)
                            model = chunk.get("model") or model
                            if raw_finish == "content_filter" and not committed:
                                raise self._refusal(raw_finish, json.dumps(chunk))
                            for call in _finish(calls):
                                committed = True
                                yield ToolCallEvent(call)
                        # Usage comes in a last chunk with empty choices
                        # (OpenAI) or with the finish reason (Together, vLLM):
                        # text chunks never get here.
                        usage_data = chunk.get("usage")
                        if usage_data:
                            usage = _usage(usage_data) or TokenUsage()
                            model = chunk.get("model") or model
                            if events:
                                committed = True
                                yield UsageEvent(usage)
                    if sse.stopped:
                        break
                await self._end_event_stream(
                    body, sse, committed, finished=raw_finish is not None, tool_call=bool(calls)
                )
        except STREAM_FAILURES as exc:
            raise self._stream_failure(exc, committed, bool(calls)) from exc
        finish = openai_finish_reason(raw_finish)
        if events:
            for call in _finish(calls):
                yield ToolCallEvent(call)
            yield Final(finish, raw_finish, model if isinstance(model, str) else None, usage)
        else:
            yield final_chunk(finish, raw_finish, model if isinstance(model, str) else None, usage)
