"""Google Gemini: the Generative Language API (AI Studio) and Vertex AI, over httpx2.

``POST {base_url}/v1beta/models/{model}:generateContent`` answers with one
``GenerateContentResponse``; ``:streamGenerateContent?alt=sse`` streams them
as SSE ``data:`` events. The API key travels in the ``x-goog-api-key``
header, never in the URL's ``?key=`` query, so it cannot show up in a URL
that a log line or a transport error quotes. With ``project`` set the
provider talks to Vertex AI instead
(``/v1/projects/{project}/locations/{location}/publishers/google/models/...``)
with ``api_key`` sent as an OAuth bearer token.

Wire shape read here (every field through the typed accessors of
:mod:`reliant.providers._wire`):

- ``candidates[0].content.parts[]``: ``text`` (a ``thought: true`` part is
  reasoning), ``functionCall`` (``name``, ``args`` as a whole object, an
  ``id`` on newer models; missing ids become ``call_{n}``);
- ``candidates[0].finishReason``: ``STOP`` -> ``stop`` (``tool_calls`` when
  the answer carries a function call: Gemini says ``STOP`` for those),
  ``MAX_TOKENS`` -> ``length``, the safety words -> ``content_filter``
  (:data:`reliant.providers._finish.GEMINI_FINISH_REASONS`);
  ``MALFORMED_FUNCTION_CALL`` is a ``ProviderError(kind="malformed_response")``
  (or a ``StreamError`` after the first item), since the model produced no
  usable answer;
- ``promptFeedback.blockReason``: the prompt itself was blocked, a
  :class:`~reliant.ContentFilterError`;
- ``usageMetadata``: ``promptTokenCount``, ``candidatesTokenCount`` plus
  ``thoughtsTokenCount`` (thinking is billed as output) as output tokens,
  ``cachedContentTokenCount`` as cached input. In a stream it is cumulative
  and repeated on every event: the last one counts, and is read once at the
  end;
- ``modelVersion``: the model that answered.

How a stream ends: Gemini sends no terminator; the last event carries the
``finishReason``. A body that ends without any ``finishReason`` is a failure
(never a silent success). A stream that says ``STOP`` without any part
(Gemini's known empty response) ends with a bare final, the shape
``ReliableProvider`` recognises as an empty stream and fails over from. Errors use Google's shape
``{"error": {"code", "status", "message", "details"}}``, in a non-2xx body or
as an SSE event; a ``RESOURCE_EXHAUSTED`` 429 takes its Retry-After from the
``google.rpc.RetryInfo`` detail's ``retryDelay`` (``"30s"``).

Converting a conversation: system messages become ``systemInstruction``;
assistant turns are ``role: "model"``; consecutive turns of one role are
merged into one content (Gemini wants them alternating). An assistant
message's ``tool_calls`` become ``functionCall`` parts, and a tool result
naming its call (``ChatMessage.tool(text, tool_call_id)``) a
``functionResponse`` part with that call's function name (its ``response``
is the result's JSON object, else ``{"result": text}``); ids are mapped by
:func:`~reliant.providers._wire.tool_call_id`. A tool result without an id
travels as user text. Tool specs become one ``functionDeclarations`` tool; the JSON
Schema keys Gemini's ``parameters`` (an OpenAPI subset) rejects
(``$schema``, ``additionalProperties``) are dropped. Gemini does not continue
a trailing model turn (``supports_prefill`` is False), so mid-stream
recovery restarts.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

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
from ._finish import final_chunk, gemini_finish_reason
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
    MalformedResponse,
    ResponseTooLarge,
)
from ._messages import MessagesProvider
from ._wire import (
    arguments_object,
    count,
    need_object,
    opt_list,
    opt_object,
    opt_str,
    tool_call_id,
    wrong,
)

__all__ = ["Gemini"]


# JSON Schema keys Gemini's ``parameters`` (an OpenAPI 3.0 subset) refuses.
_UNSUPPORTED_SCHEMA_KEYS = frozenset({"$schema", "additionalProperties"})

_MALFORMED_CALL = "MALFORMED_FUNCTION_CALL"


def _contents(messages: Sequence[ChatMessage]) -> tuple[dict[str, Any] | None, list[Any]]:
    """``systemInstruction`` and ``contents`` of a conversation."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool-call id -> function name, for the results
    for m in messages:
        if m.role == "system":
            system.append(m.content)
            continue
        role = "model" if m.role == "assistant" else "user"
        parts: list[dict[str, Any]]
        if m.tool_calls and m.role == "assistant":
            parts = [{"text": m.content}] if m.content else []
            for call in m.tool_calls:
                call_id = tool_call_id(call.id)
                names[call_id] = call.name
                args = arguments_object(call.arguments)
                parts.append({"functionCall": {"id": call_id, "name": call.name, "args": args}})
        elif m.role == "tool" and m.tool_call_id is not None:
            # functionResponse needs the function's name: the call's, found by its id.
            call_id = tool_call_id(m.tool_call_id)
            parts = [
                {
                    "functionResponse": {
                        "id": call_id,
                        "name": names.get(call_id, "tool"),
                        "response": _function_response(m.content),
                    }
                }
            ]
        else:
            parts = [{"text": m.content}]
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    instruction = {"parts": [{"text": "\n\n".join(system)}]} if system else None
    return instruction, contents


def _function_response(text: str) -> dict[str, Any]:
    """A tool result as ``functionResponse.response``: its JSON object, else {"result": text}."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    return value if type(value) is dict else {"result": text}


def _schema(value: Any) -> Any:
    """A JSON Schema without the keys Gemini rejects, at every depth."""
    if isinstance(value, Mapping):
        return {
            k: _schema(v)
            for k, v in value.items()
            if not (isinstance(k, str) and k in _UNSUPPORTED_SCHEMA_KEYS)
        }
    if isinstance(value, list | tuple):
        return [_schema(v) for v in value]
    return value


def _tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    declarations = []
    for t in tools:
        declaration: dict[str, Any] = {"name": t.name, "description": t.description}
        if t.parameters:
            declaration["parameters"] = _schema(t.parameters)
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}]


def _usage(data: Any) -> TokenUsage | None:
    if data is None:
        return None
    data = need_object(data, "usageMetadata")
    where = "usageMetadata"
    output = count(data, "candidatesTokenCount", where)
    thoughts = count(data, "thoughtsTokenCount", where)
    if thoughts is not None:
        output = (output or 0) + thoughts
    return TokenUsage(
        input_tokens=count(data, "promptTokenCount", where),
        output_tokens=output,
        cached_input_tokens=count(data, "cachedContentTokenCount", where),
    )


class _Answer:
    """What one ``GenerateContentResponse`` says, read and type-checked."""

    __slots__ = ("block", "calls", "finish", "model", "texts", "usage")

    def __init__(self, data: dict[str, Any], calls_before: int, limit: int) -> None:
        # (is_thought, text) in order; tool calls; finishReason; blockReason.
        self.texts: list[tuple[bool, str]] = []
        self.calls: list[ToolCall] = []
        self.finish: str | None = None
        feedback = opt_object(data, "promptFeedback")
        self.block = opt_str(feedback, "blockReason", "promptFeedback") if feedback else None
        self.model = opt_str(data, "modelVersion")
        self.usage = data.get("usageMetadata")
        candidates = opt_list(data, "candidates")
        if not candidates:
            return
        where = "candidates[0]"
        candidate = need_object(candidates[0], where)
        self.finish = opt_str(candidate, "finishReason", where)
        content = opt_object(candidate, "content", where)
        if not content:
            return
        for i, part in enumerate(opt_list(content, "parts", f"{where}.content") or ()):
            path = f"{where}.content.parts[{i}]"
            part = need_object(part, path)
            text = opt_str(part, "text", path)
            if text:
                thought = part.get("thought")
                if thought is not None and type(thought) is not bool:
                    raise wrong(f"{path}.thought", thought, "a boolean")
                self.texts.append((bool(thought), text))
            call = opt_object(part, "functionCall", path)
            if call is not None:
                args = opt_object(call, "args", f"{path}.functionCall")
                arguments = json.dumps(args if args is not None else {})
                if len(arguments) > limit:
                    raise ResponseTooLarge(f"tool call arguments larger than {limit} bytes")
                self.calls.append(
                    ToolCall(
                        id=opt_str(call, "id", f"{path}.functionCall")
                        or f"call_{calls_before + len(self.calls)}",
                        name=opt_str(call, "name", f"{path}.functionCall") or "",
                        arguments=arguments,
                    )
                )


class Gemini(MessagesProvider):
    """A provider for Google's Gemini models: the Gemini API, or Vertex AI.

    Args:
        name: Provider name used in errors and failure trails.
        base_url: API root. Default: ``https://generativelanguage.googleapis.com``,
            or with ``project`` ``https://{location}-aiplatform.googleapis.com``
            (``https://aiplatform.googleapis.com`` for ``location="global"``).
        api_key: Gemini API key, sent as ``x-goog-api-key``; None reads
            ``GEMINI_API_KEY`` (then ``GOOGLE_API_KEY``) now. With ``project``:
            an OAuth access token, sent as ``Authorization: Bearer``.
        project: A Google Cloud project: talk to Vertex AI instead.
        location: The Vertex AI region (with ``project``).
        api_version: Path version of the Gemini API (``v1beta``; Vertex: ``v1``).
        client: A shared ``httpx2.AsyncClient`` (the caller closes it); None
            makes the provider create one on first use and own it.
        timeout: Seconds (every phase) or an ``httpx2.Timeout`` (default
            ``DEFAULT_TIMEOUT``); None defers to the client's configuration.
        max_output_tokens: ``generationConfig.maxOutputTokens`` (None: the model's default).
        include_thoughts: Ask thinking models for their thought summaries
            (``thinkingConfig.includeThoughts``), delivered as reasoning.
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
        name: str = "gemini",
        base_url: str | None = None,
        api_key: str | None = None,
        project: str | None = None,
        location: str = "us-central1",
        api_version: str | None = None,
        client: httpx2.AsyncClient | None = None,
        timeout: TimeoutArg = DEFAULT_TIMEOUT,
        max_output_tokens: int | None = None,
        include_thoughts: bool = False,
        extra_headers: Mapping[str, str] | None = None,
        vision: bool = False,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_tool_arguments_bytes: int = DEFAULT_MAX_TOOL_ARGUMENTS_BYTES,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        if api_key is None and project is None:
            api_key = os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
        if base_url is None:
            if project is None:
                base_url = "https://generativelanguage.googleapis.com"
            elif location == "global":
                base_url = "https://aiplatform.googleapis.com"
            else:
                base_url = f"https://{location}-aiplatform.googleapis.com"
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
        self._max_output_tokens = max_output_tokens
        self._include_thoughts = include_thoughts
        self._vertex = project is not None
        if project is None:
            self._models_url = f"{self._base_url}/{api_version or 'v1beta'}/models"
        else:
            self._models_url = (
                f"{self._base_url}/{api_version or 'v1'}/projects/{quote(project, safe='')}"
                f"/locations/{quote(location, safe='')}/publishers/google/models"
            )
        headers = {"content-type": "application/json"}
        if self._api_key:
            if self._vertex:
                headers["authorization"] = f"Bearer {self._api_key}"
            else:
                headers["x-goog-api-key"] = self._api_key
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

    def _url(self, model: str, stream: bool) -> str:
        # Colons stay readable (``models/gemini-2.5-pro:generateContent``);
        # a slash or a query character in a model id cannot change the route.
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{self._models_url}/{quote(model, safe=':=')}:{method}"

    def _payload(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] | None,
        temperature: float,
    ) -> dict[str, Any]:
        instruction, contents = _contents(messages)
        config: dict[str, Any] = {"temperature": temperature}
        if self._max_output_tokens is not None:
            config["maxOutputTokens"] = self._max_output_tokens
        if self._include_thoughts:
            config["thinkingConfig"] = {"includeThoughts": True}
        payload: dict[str, Any] = {"contents": contents, "generationConfig": config}
        if instruction is not None:
            payload["systemInstruction"] = instruction
        if tools:
            payload["tools"] = _tools(tools)
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
            self._url(model, False), self._payload(messages, tools, temperature)
        )
        try:
            error = data.get("error")
            if error is not None:
                raise self._payload_error(error, json.dumps(data))
            answer = _Answer(data, 0, self._max_tool_arguments_bytes)
            if answer.block is not None:
                raise self._refusal(answer.block, json.dumps(data))
            if answer.finish == _MALFORMED_CALL:
                raise MalformedResponse(
                    f"malformed response: the model produced an invalid function call "
                    f"(finishReason {_MALFORMED_CALL})"
                )
            if "candidates" not in data:
                raise self._invalid_response(f"response without candidates: {json.dumps(data)}")
            texts = [t for thought, t in answer.texts if not thought]
            thoughts = [t for thought, t in answer.texts if thought]
            finish = gemini_finish_reason(answer.finish, bool(answer.calls))
            response = ChatResponse(
                text="".join(texts) if texts else None,
                tool_calls=tuple(answer.calls),
                usage=_usage(answer.usage),
                reasoning_content="".join(thoughts) if thoughts else None,
                finish_reason=finish,
                raw_finish_reason=answer.finish,
                model=answer.model,
            )
        except PARSE_FAILURES as exc:
            raise self._parse_failure(exc, data) from exc
        if finish == "content_filter" and not response.text and not response.tool_calls:
            raise self._refusal(str(answer.finish), json.dumps(data))
        return response

    async def warmup(self) -> None:
        """Open a pooled connection (``GET`` the model list); never raises."""
        await self._warmup_get(self._models_url)

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
        return self._stream(
            model, self._payload(messages, tools, temperature), events, count_tokens
        )

    async def _stream(
        self, model: str, payload: dict[str, Any], events: bool, count_tokens: bool
    ) -> AsyncGenerator[Any, None]:
        """The SSE loop behind every stream kind: chunks, or events when ``events``."""
        committed = False
        raw_finish: str | None = None
        served: str | None = None
        usage_data: Any = None
        calls = 0
        limit = self._max_tool_arguments_bytes
        sse = SSEEventDecoder(max_event_bytes=self._max_event_bytes)
        sse.terminator = "a finishReason"
        try:
            async with self._open_event_stream(self._url(model, True), payload) as body:
                async for raw in body:
                    for event in sse.feed(raw):
                        answer = _Answer(event, calls, limit)
                        if answer.block is not None and not committed:
                            raise self._refusal(answer.block, json.dumps(event))
                        served = answer.model or served
                        if answer.usage is not None:
                            usage_data = answer.usage
                        for thought, text in answer.texts:
                            committed = True
                            if thought:
                                yield ReasoningDelta(text) if events else StreamChunk("", text)
                            elif events:
                                yield TextDelta(text)
                            elif count_tokens:
                                yield StreamChunk(text, None, False, estimate_tokens(text))
                            else:
                                yield StreamChunk(text)
                        calls += len(answer.calls)
                        if events:
                            for call in answer.calls:
                                committed = True
                                yield ToolCallEvent(call)
                        if answer.finish is not None:
                            raw_finish = answer.finish
                            if raw_finish == _MALFORMED_CALL:
                                raise MalformedResponse(
                                    "the model produced an invalid function call "
                                    f"(finishReason {_MALFORMED_CALL})"
                                )
                            reason = gemini_finish_reason(raw_finish)
                            if reason == "content_filter" and not committed:
                                raise self._refusal(raw_finish, json.dumps(event))
                        elif answer.block is not None:
                            raw_finish = answer.block
                    if sse.stopped:
                        break
                await self._end_event_stream(body, sse, committed, finished=raw_finish is not None)
            usage = _usage(usage_data)
        except STREAM_FAILURES as exc:
            # its cause is set by _stream_failure
            raise self._stream_failure(exc, committed)  # noqa: B904
        finish = gemini_finish_reason(raw_finish, calls > 0)
        if not committed and finish == "stop" and calls == 0:
            # STOP with no part at all: Gemini's known empty response. It ends
            # as a bare final, which ReliableProvider treats as an empty
            # stream (the next candidate is asked), as it does OpenAI's
            # ``[DONE]`` alone.
            yield Final() if events else StreamChunk.final()
            return
        if events:
            if usage is not None:
                yield UsageEvent(usage)
            yield Final(finish, raw_finish, served, usage)
        else:
            yield final_chunk(finish, raw_finish, served, usage)
