"""Amazon Bedrock's Converse and ConverseStream APIs over httpx2.

``POST {base_url}/model/{model id}/converse`` answers JSON;
``POST {base_url}/model/{model id}/converse-stream`` answers AWS event-stream
frames (``application/vnd.amazon.eventstream``, see
:mod:`reliant.providers._eventstream`), one JSON payload per frame, named by
the ``:event-type`` header: ``messageStart``, ``contentBlockStart`` (a tool
call's id and name), ``contentBlockDelta`` (``text``, ``toolUse.input``
fragments, ``reasoningContent.text``), ``contentBlockStop``, ``messageStop``
(``stopReason``) and ``metadata`` (``usage``). The model id goes in the path,
URL-encoded (inference-profile ARNs hold ``:`` and ``/``).

Authentication: a Bedrock API key (``api_key``, or ``AWS_BEARER_TOKEN_BEDROCK``)
is sent as ``Authorization: Bearer``; otherwise every request is SigV4-signed
with botocore's signer (the ``bedrock`` extra), from explicit credentials or
from botocore's standard chain (environment, shared config and credentials
files, SSO, container and instance roles), resolved once, in a worker thread
(the chain may do network I/O), on the first request, and refreshed in a
worker thread when temporary credentials are due; signing itself does no I/O.
Without botocore, or with no credentials anywhere, or when the chain fails,
the request is not sent: a final ``ProviderError`` (status 401) says why.
Every secret key and session token seen is registered with the sanitizer
(once), as is the bearer key; the ``authorization`` and
``x-amz-security-token`` headers of any request kept in an exception chain
are masked; and botocore's own debug records of a signing (the canonical
request quotes the session token, the last one the signature) are dropped
while reliant signs. So none of them reaches a message, a log, a trail or a
traceback.

Errors. A failed call is an HTTP status with ``x-amzn-ErrorType`` and a JSON
``{"message": ...}`` body (``ThrottlingException`` 429, ``ValidationException``
400, ``ServiceUnavailableException`` 503, ...), mapped like every other
status, the error type's name in place of the reason phrase
(``bedrock API error (429 ThrottlingException): ...``); a
``ModelTimeoutException`` is ``kind="timeout"``. A stream fails *inside*
its 200 with an exception frame (``:message-type: exception``,
``:exception-type``); each becomes the
``ProviderError`` of the status Bedrock gives the same error in a call:

=================================  ======  ===================================
exception frame                    status  so it is
=================================  ======  ===================================
``throttlingException``            429     retryable, rate limited
``serviceUnavailableException``    503     retryable
``internalServerException``        500     retryable
``modelStreamErrorException``      500     retryable (the model's stream failed)
``modelTimeoutException``          408     retryable, ``kind="timeout"``
``validationException``            400     final for this route (or the context
                                           window, when its message says so)
anything else                      500     retryable
=================================  ======  ===================================

Before the stream's first item that ``ProviderError`` is raised (failover
may move on); after it, a ``StreamError`` whose direct ``__cause__`` is the
``ProviderError``. A frame whose CRC does not match is a
``malformed_response`` (the frames before it, even in the same read, are
dispatched first), a frame over ``max_event_bytes`` a ``response_too_large``.
How a stream ends: ``messageStop`` says why the model stopped; a body that
ends without it, or in the middle of a frame, is broken, never a silent
success.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from typing import Any
from urllib.parse import quote

import httpx2

from .._backend import current as current_backend
from .._exceptions import ErrorKind, ProviderError, ReliantError, StreamError
from .._sanitize import register_secret
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
from ._eventstream import EventMessage, EventStreamDecoder
from ._finish import bedrock_finish_reason, final_chunk
from ._http import (
    DEFAULT_TIMEOUT,
    PARSE_FAILURES,
    STREAM_FAILURES,
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
    count,
    loads,
    need_list,
    need_object,
    opt_object,
    opt_str,
    wrong,
)

__all__ = ["Bedrock"]

_EVENT_STREAM = "application/vnd.amazon.eventstream"

# Exception frame -> (status, kind): the status Bedrock gives the same error in a call.
_EXCEPTIONS: dict[str, tuple[int, ErrorKind | None]] = {
    "throttlingException": (429, None),
    "serviceUnavailableException": (503, None),
    "internalServerException": (500, None),
    "modelStreamErrorException": (500, None),
    "modelTimeoutException": (408, "timeout"),
    "validationException": (400, None),
    "accessDeniedException": (403, None),
    "resourceNotFoundException": (404, None),
    "serviceQuotaExceededException": (429, None),
}


def _region(region: str | None) -> str:
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return region or "us-east-1"


def _blocks(text: str) -> list[dict[str, Any]]:
    return [{"text": text}]


def _conversation(
    messages: Sequence[ChatMessage],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System blocks, and the turns as Converse wants them: alternating, never empty.

    System messages go to ``system``. Converse knows only user and assistant
    turns and rejects two turns of one role in a row, so a tool result
    without its ``toolUseId`` travels as user text and consecutive turns of
    one role are merged into one turn with several blocks. Blank texts are
    left out (Converse rejects a blank text block).
    """
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            if m.content.strip():
                system.append({"text": m.content})
            continue
        if not m.content.strip():
            continue
        role = "assistant" if m.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].append({"text": m.content})
        else:
            turns.append({"role": role, "content": _blocks(m.content)})
    if turns and turns[-1]["role"] == "assistant":
        # A trailing assistant turn (a prefill) must not end in whitespace.
        last = turns[-1]["content"][-1]
        last["text"] = last["text"].rstrip()
    return system, turns


def _tool_config(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    return {
        "tools": [
            {
                "toolSpec": {
                    "name": t.name,
                    "description": t.description or t.name,
                    "inputSchema": {"json": dict(t.parameters)},
                }
            }
            for t in tools
        ]
    }


def _usage(usage: Any) -> TokenUsage | None:
    if usage is None:
        return None
    usage = need_object(usage, "usage")
    return TokenUsage(
        input_tokens=count(usage, "inputTokens", "usage"),
        output_tokens=count(usage, "outputTokens", "usage"),
        cached_input_tokens=count(usage, "cacheReadInputTokens", "usage"),
    )


def _response(data: dict[str, Any], model: str) -> ChatResponse:
    output = need_object(data.get("output"), "output")
    message = need_object(output.get("message"), "output.message")
    content = need_list(message.get("content"), "output.message.content")
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    for i, block in enumerate(content):
        where = f"output.message.content[{i}]"
        block = need_object(block, where)
        text = opt_str(block, "text", where)
        if text is not None:
            texts.append(text)
        tool = opt_object(block, "toolUse", where)
        if tool is not None:
            arguments = opt_object(tool, "input", f"{where}.toolUse")
            calls.append(
                ToolCall(
                    id=opt_str(tool, "toolUseId", f"{where}.toolUse") or f"tooluse_{len(calls)}",
                    name=opt_str(tool, "name", f"{where}.toolUse") or "",
                    arguments=json.dumps(arguments if arguments is not None else {}),
                )
            )
        reasoning = opt_object(block, "reasoningContent", where)
        if reasoning is not None:
            said = opt_object(reasoning, "reasoningText", f"{where}.reasoningContent")
            thought = (
                opt_str(said, "text", f"{where}.reasoningContent.reasoningText") if said else None
            )
            if thought:
                thoughts.append(thought)
    stop = opt_str(data, "stopReason", "response")
    return ChatResponse(
        text="".join(texts) if texts else None,
        tool_calls=tuple(calls),
        usage=_usage(data.get("usage")),
        reasoning_content="".join(thoughts) if thoughts else None,
        finish_reason=bedrock_finish_reason(stop),
        raw_finish_reason=stop,
        model=model,
    )


_signing = threading.local()


class _QuietSigning(logging.Filter):
    """Drops ``botocore.auth``'s records while reliant signs a request, in that thread only.

    At DEBUG level botocore logs the canonical request (which quotes the
    session token) and the signature itself; neither may reach a log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_signing, "active", False)


_QUIET_SIGNING = _QuietSigning()


class _SigV4(httpx2.Auth):
    """SigV4-signs each request with botocore's signer (see the module docstring)."""

    requires_request_body = True

    def __init__(self, credentials: Callable[[], Any], region: str) -> None:
        self._credentials = credentials
        self._region = region

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        signed = AWSRequest(
            method=request.method,
            url=str(request.url),
            data=request.content,
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )
        quiet = logging.getLogger("botocore.auth")
        if _QUIET_SIGNING not in quiet.filters:
            quiet.addFilter(_QUIET_SIGNING)
        _signing.active = True
        try:
            SigV4Auth(self._credentials(), "bedrock", self._region).add_auth(signed)
        finally:
            _signing.active = False
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            value = signed.headers.get(name)
            if value:
                request.headers[name] = value
        yield request


class Bedrock(MessagesProvider):
    """A provider for Amazon Bedrock's Converse and ConverseStream APIs.

    Args:
        name: Provider name used in errors and failure trails.
        region: AWS region; None reads ``AWS_REGION`` / ``AWS_DEFAULT_REGION``
            (else ``us-east-1``).
        base_url: API root; None is ``https://bedrock-runtime.{region}.amazonaws.com``.
        api_key: A Bedrock API key, sent as a bearer token; None reads
            ``AWS_BEARER_TOKEN_BEDROCK``, and without one requests are
            SigV4-signed (needs the ``bedrock`` extra: ``pip install 'reliant[bedrock]'``).
        aws_access_key_id: Explicit credentials for SigV4 (with the secret
            key, and the session token for temporary ones); None uses
            botocore's standard chain.
        aws_secret_access_key: See ``aws_access_key_id``.
        aws_session_token: See ``aws_access_key_id``.
        client: A shared ``httpx2.AsyncClient`` (the caller closes it); None
            makes the provider own one.
        timeout: Seconds (every phase) or an ``httpx2.Timeout`` per request.
        max_tokens: ``inferenceConfig.maxTokens`` of every request.
        max_response_bytes: Largest response body after decompression (32 MiB).
        max_event_bytes: Largest event-stream frame (4 MiB).
        max_tool_arguments_bytes: Largest arguments of one streamed tool call (4 MiB).
        request_timeout: Seconds a whole non-streaming call may take (600).

    Raises:
        ValueError: ``base_url`` is not an http(s) URL, or a cap is not positive.
        TypeError: A cap or timeout of the wrong type.
    """

    def __init__(
        self,
        *,
        name: str = "bedrock",
        region: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        client: httpx2.AsyncClient | None = None,
        timeout: TimeoutArg = DEFAULT_TIMEOUT,
        max_tokens: int = 4096,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_tool_arguments_bytes: int = DEFAULT_MAX_TOOL_ARGUMENTS_BYTES,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self._region = _region(region)
        if api_key is None:
            api_key = os.environ.get("AWS_BEARER_TOKEN_BEDROCK")
        super().__init__(
            name=name,
            base_url=base_url or f"https://bedrock-runtime.{self._region}.amazonaws.com",
            api_key=api_key,
            client=client,
            timeout=timeout,
            max_response_bytes=max_response_bytes,
            max_event_bytes=max_event_bytes,
            max_tool_arguments_bytes=max_tool_arguments_bytes,
            request_timeout=request_timeout,
        )
        self._max_tokens = max_tokens
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        self._explicit: tuple[str, str, str | None] | None = None
        self._credentials: Any = None  # botocore credentials, once resolved
        self._frozen: Any = None  # their current frozen values, what requests are signed with
        self._registered: set[str] = set()  # secrets already given to the sanitizer
        if aws_access_key_id or aws_secret_access_key or aws_session_token:
            if not (aws_access_key_id and aws_secret_access_key):
                raise ValueError(
                    "Bedrock needs both aws_access_key_id and aws_secret_access_key, or neither "
                    "(aws_session_token only with them)"
                )
            self._explicit = (aws_access_key_id, aws_secret_access_key, aws_session_token)
            for secret in (aws_secret_access_key, aws_session_token):
                if secret:
                    self._registered.add(secret)
                    weakref.finalize(self, register_secret(secret))
        if self._api_key:
            self._headers["authorization"] = f"Bearer {self._api_key}"
        else:
            self._auth = _SigV4(self._frozen_credentials, self._region)

    _stream_format = "event-stream"

    def __repr__(self) -> str:
        return f"Bedrock(name={self._name!r}, region={self._region!r}, base_url={self.base_url!r})"

    # -- errors --------------------------------------------------------------------

    def _error_reason(self, response: httpx2.Response) -> str:
        """``x-amzn-ErrorType``'s name (``ThrottlingException``), else the reason phrase."""
        name = _error_type(response)
        return name or super()._error_reason(response)

    def _status_error(self, response: httpx2.Response, body: str) -> ProviderError:
        error = super()._status_error(response, body)
        if error.kind is None and _error_type(response) == "ModelTimeoutException":
            error.kind = "timeout"
        return error

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

    # -- credentials ---------------------------------------------------------------

    async def _ensure_credentials(self) -> None:
        """Resolve SigV4 credentials once, and refresh them when due, in a worker thread.

        botocore's chain (and a refresh of temporary credentials) may do
        network I/O, so neither runs on the event loop; signing itself
        (:class:`_SigV4`) then only reads :attr:`_frozen`. Each secret key and
        session token seen is registered with the sanitizer, once.
        """
        if self._api_key:
            return
        if self._credentials is None:
            self._credentials = await self._resolve_credentials()
        credentials = self._credentials
        refresh_needed: Any = getattr(credentials, "refresh_needed", None)
        refreshable = callable(refresh_needed)
        if self._frozen is None or (refreshable and refresh_needed()):
            if refreshable:
                frozen = await current_backend().run_sync_in_thread(
                    credentials.get_frozen_credentials
                )
            else:  # static credentials: nothing to fetch
                frozen = credentials.get_frozen_credentials()
            for secret in (frozen.secret_key, frozen.token):
                if secret and secret not in self._registered:
                    self._registered.add(secret)
                    weakref.finalize(self, register_secret(secret))
            self._frozen = frozen

    async def _resolve_credentials(self) -> Any:
        try:
            import botocore.session
            from botocore.credentials import Credentials
        except ImportError:
            raise ProviderError(
                f"{self._name} API error: SigV4 signing needs botocore: "
                "pip install 'reliant[bedrock]' (or pass api_key)",
                provider=self._name,
                status_code=401,
            ) from None
        if self._explicit is not None:
            return Credentials(*self._explicit)
        try:
            found = await current_backend().run_sync_in_thread(
                lambda: botocore.session.get_session().get_credentials()
            )
        except Exception as exc:
            # A broken config file, an unknown AWS_PROFILE, a failed SSO or
            # role login: a configuration problem retrying will not fix.
            raise ProviderError(
                self._clean(
                    f"{self._name} API error: resolving AWS credentials failed: "
                    f"{type(exc).__name__}: {exc}"
                ),
                provider=self._name,
                status_code=401,
            ) from None
        if found is None:
            raise ProviderError(
                f"{self._name} API error: no AWS credentials found (environment, shared "
                "config or credentials file, SSO, container or instance role); pass "
                "aws_access_key_id/aws_secret_access_key or api_key",
                provider=self._name,
                status_code=401,
            )
        return found

    def _frozen_credentials(self) -> Any:
        return self._frozen

    # -- payloads ------------------------------------------------------------------

    def _url(self, model: str, stream: bool) -> str:
        action = "converse-stream" if stream else "converse"
        return f"{self._base_url}/model/{quote(model, safe='')}/{action}"

    def _payload(
        self,
        system: list[dict[str, Any]],
        turns: list[dict[str, Any]],
        tools: Sequence[ToolSpec] | None,
        temperature: float,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "messages": turns,
            "inferenceConfig": {"maxTokens": self._max_tokens, "temperature": temperature},
        }
        if system:
            payload["system"] = system
        if tools:
            payload["toolConfig"] = _tool_config(tools)
        return payload

    def _history_payload(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] | None, temperature: float
    ) -> dict[str, Any]:
        system, turns = _conversation(messages)
        return self._payload(system, turns, tools, temperature)

    # -- non-streaming -------------------------------------------------------------

    async def _complete(self, payload: dict[str, Any], model: str) -> ChatResponse:
        await self._ensure_credentials()
        data = await self._post_json(self._url(model, False), payload)
        try:
            response = _response(data, model)
        except PARSE_FAILURES as exc:
            raise self._parse_failure(exc, data) from exc
        if response.finish_reason == "content_filter" and not response.text:
            raise self._refusal(str(response.raw_finish_reason), json.dumps(data))
        return response

    async def _answer(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] | None,
        model: str,
        temperature: float,
    ) -> ChatResponse:
        return await self._complete(self._history_payload(messages, tools, temperature), model)

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
        payload = self._history_payload(messages, tools, temperature)
        return self._stream(payload, model, events, count_tokens)

    async def _stream(
        self, payload: dict[str, Any], model: str, events: bool, count_tokens: bool
    ) -> AsyncGenerator[Any, None]:
        """The frame loop behind every stream kind: chunks, or events when ``events``."""
        await self._ensure_credentials()
        committed = False
        usage: TokenUsage | None = None
        stop_reason: str | None = None
        # content block index -> [id, name, argument parts, None, parts size]
        calls: dict[int, list[Any]] = {}
        limit = self._max_tool_arguments_bytes
        decoder = EventStreamDecoder(self._max_event_bytes)
        url = self._url(model, True)
        try:
            async with self._open_event_stream(url, payload, _EVENT_STREAM) as body:
                async for raw in body:
                    for frame in decoder.feed(raw):
                        if frame.message_type != "event":
                            raise self._frame_error(frame, committed, bool(calls))
                        kind = frame.text(":event-type")
                        data = need_object(loads(frame.payload, f"{kind} event"), f"{kind}")
                        if kind == "contentBlockDelta":
                            delta = need_object(data.get("delta"), "contentBlockDelta.delta")
                            text = opt_str(delta, "text", "delta")
                            if text:
                                committed = True
                                if events:
                                    yield TextDelta(text)
                                elif count_tokens:
                                    yield StreamChunk(text, None, False, estimate_tokens(text))
                                else:
                                    yield StreamChunk(text)
                                continue
                            tool = opt_object(delta, "toolUse", "delta")
                            if tool is not None:
                                slot = calls.get(_index(data))
                                piece = opt_str(tool, "input", "delta.toolUse")
                                if slot is not None and piece:
                                    slot[4] = append_arguments(
                                        slot[2], piece, slot[4], limit, "delta.toolUse.input"
                                    )
                                continue
                            reasoning = opt_object(delta, "reasoningContent", "delta")
                            thought = (
                                opt_str(reasoning, "text", "delta.reasoningContent")
                                if reasoning is not None
                                else None
                            )
                            if thought:
                                committed = True
                                yield (
                                    ReasoningDelta(thought) if events else StreamChunk("", thought)
                                )
                        elif kind == "contentBlockStart":
                            start = opt_object(data, "start", "contentBlockStart") or {}
                            tool = opt_object(start, "toolUse", "contentBlockStart.start")
                            if tool is not None:
                                where = "contentBlockStart.start.toolUse"
                                calls[_index(data)] = [
                                    opt_str(tool, "toolUseId", where) or "",
                                    opt_str(tool, "name", where) or "",
                                    [],
                                    None,
                                    0,
                                ]
                        elif kind == "contentBlockStop":
                            slot = calls.pop(_index(data), None)
                            if slot is not None and events:
                                committed = True
                                yield ToolCallEvent(_tool_call(slot))
                        elif kind == "messageStop":
                            stop_reason = opt_str(data, "stopReason", "messageStop")
                            finish = bedrock_finish_reason(stop_reason)
                            if finish == "content_filter" and not committed:
                                raise self._refusal(str(stop_reason), json.dumps(data))
                        elif kind == "metadata":
                            usage = _usage(data.get("usage"))
                            if events and usage is not None:
                                committed = True
                                yield UsageEvent(usage)
                    decoder.check()  # a bad frame after the good ones of this read
                if not decoder.finish():
                    raise self._broken(
                        "stream cut inside an event-stream frame", committed, tool_call=bool(calls)
                    )
                if stop_reason is None:
                    raise self._broken(
                        "stream ended without messageStop", committed, tool_call=bool(calls)
                    )
        except STREAM_FAILURES as exc:
            raise self._stream_failure(exc, committed, bool(calls))  # noqa: B904
        finish = bedrock_finish_reason(stop_reason)
        if events:
            for slot in calls.values():
                yield ToolCallEvent(_tool_call(slot))
            yield Final(finish, stop_reason, model, usage)
        else:
            yield final_chunk(finish, stop_reason, model, usage)

    def _frame_error(self, frame: EventMessage, committed: bool, tool_call: bool) -> ReliantError:
        """An exception or error frame: a ``ProviderError``, or after the first item a
        ``StreamError`` whose direct cause it is (see the module docstring)."""
        name = frame.text(":exception-type") or frame.text(":error-code") or "unknown"
        text = frame.text(":error-message")
        if text is None:
            try:
                said = json.loads(frame.payload)
            except (ValueError, RecursionError):
                said = None
            message = said.get("message") if isinstance(said, dict) else None
            text = (
                message
                if isinstance(message, str)
                else frame.payload[:2000].decode("utf-8", errors="replace")
            )
        status, kind = _EXCEPTIONS.get(name, (500, None))
        failure = ProviderError(
            self._clean(f"{self._name} API error ({status} {name}): {text}"),
            provider=self._name,
            status_code=status,
            kind=kind,
        )
        if not committed:
            return failure
        broken = StreamError(
            self._clean(f"{self._name} stream broke after the first chunk: {failure}"),
            tool_call_in_progress=tool_call,
        )
        broken.__cause__ = failure
        return broken


def _error_type(response: httpx2.Response) -> str | None:
    """The error name of ``x-amzn-ErrorType`` (``ThrottlingException:http://...``), if sane."""
    raw = response.headers.get("x-amzn-errortype", "").partition(":")[0].strip()
    return raw if _ERROR_TYPE_RE.fullmatch(raw) else None


_ERROR_TYPE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,99}")


def _index(data: dict[str, Any]) -> int:
    index = data.get("contentBlockIndex", -1)
    if type(index) is not int:
        raise wrong("contentBlockIndex", index, "an integer")
    return index


def _tool_call(slot: list[Any]) -> ToolCall:
    return ToolCall(id=slot[0] or "tooluse", name=slot[1], arguments="".join(slot[2]) or "{}")
