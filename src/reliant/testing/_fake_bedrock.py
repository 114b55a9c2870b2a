"""The fake server's Amazon Bedrock protocol: Converse (JSON) and ConverseStream (event stream).

Routes (see :func:`reliant.testing._fake_server._respond`)::

    POST /model/{model id}/converse         -> JSON
    POST /model/{model id}/converse-stream  -> application/vnd.amazon.eventstream

The model id is the URL-decoded path segment (Bedrock's request body has no
``model`` field), so the behaviour is chosen by the model name exactly as on
the other protocols: ``ok:chunks=3``, ``status:429:retry_after=2``,
``cut:after=2``, ... Frames are built with
:func:`reliant.providers._eventstream.encode_message`: correct preludes,
headers and CRCs, one JSON payload per frame, named by ``:event-type``.

A complete stream, as Bedrock sends it: ``messageStart`` (``role``);
``contentBlockDelta`` frames per content block (``reasoningContent.text``
pieces then a ``reasoningContent.signature``, ``text`` pieces, or a tool
call's ``toolUse.input`` fragments after its ``contentBlockStart``), each
block closed by ``contentBlockStop``; ``messageStop`` (``stopReason``:
``end_turn``, ``tool_use``, ``guardrail_intervened``, or ``finish=...``);
``metadata`` (``usage`` with ``inputTokens``, ``outputTokens``,
``totalTokens``, ``cacheReadInputTokens``, and ``metrics``).

How each behaviour reads on this protocol:

``status:N``
    HTTP N with ``x-amzn-ErrorType: {Name}Exception:http://internal.amazon.com/coral/com.amazon.bedrock/``
    and a ``{"message": ...}`` body (429 ``ThrottlingException``, 400
    ``ValidationException``, 503 ``ServiceUnavailableException``, 500
    ``InternalServerException``, 408 ``ModelTimeoutException``, 424
    ``ModelErrorException``, 403 ``AccessDeniedException``, 404
    ``ResourceNotFoundException``).
``inband_error:after=N:status=S``
    Streaming: N pieces, then an exception frame (``:message-type:
    exception``) whose ``:exception-type`` is the status's name in camel case
    (429 ``throttlingException``, 503 ``serviceUnavailableException``, 500
    ``internalServerException``, 408 ``modelTimeoutException``, 424
    ``modelStreamErrorException``, 400 ``validationException``). Converse
    never reports an error inside a 200, so non-streaming it is the status
    error above.
``cut:after=N``
    N pieces, then *half of the next frame*, then a clean close: a cut in
    the middle of a frame. Non-streaming: half the JSON body.
``reset``, ``hang_headers``, ``hang_body``
    As on the other protocols (``reset`` and ``hang_body`` between frames).
``malformed:after=N``
    N pieces, then a frame whose message CRC is wrong, then the rest of the
    stream. Non-streaming: a 200 with a broken JSON body.
``content_filter``
    ``stopReason`` ``guardrail_intervened`` (after ``after`` pieces; with
    none, the answer has no text), in a 200, as a Bedrock guardrail does.
``empty``
    What a server that has nothing to say sends: ``messageStart``, then a
    clean end of the body, with no content, no ``messageStop`` and no
    ``metadata``. Nothing says why the model stopped, so a client must treat
    it as broken (reliant's provider raises a retryable ``ProviderError``
    and fails over). Non-streaming: an answer with no content blocks.
``no_terminator``
    The content, then a clean end: no ``messageStop``, no ``metadata``.
``no_done``
    The whole stream with its ``messageStop`` but no ``metadata``.
``tools``
    ``toolUse`` blocks named after the request's ``toolConfig`` tools.
``ok:reasoning=N``
    N ``reasoningContent`` pieces before the text.
``context:N``
    A request whose text totals more than N characters gets a 400
    ``ValidationException`` "Input is too long for requested model.".
``reject_prefill``
    A trailing assistant message gets a 400 ``ValidationException``; the
    other kinds continue it, as Claude on Bedrock does.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

import h11
from anyio.abc import SocketStream

from ..providers._eventstream import encode_message
from ._fake_server import (
    Route,
    _Action,
    _dumps,
    _Piece,
    _Protocol,
    _send_json,
    _send_json_answer,
    _send_stream,
    _split3,
    _text_of,
    register_protocol,
)

__all__ = ["BedrockProtocol", "EVENT_STREAM", "error_type"]

EVENT_STREAM = "application/vnd.amazon.eventstream"

_ERROR_NAMES = {
    400: "Validation",
    403: "AccessDenied",
    404: "ResourceNotFound",
    408: "ModelTimeout",
    424: "ModelError",
    429: "Throttling",
    500: "InternalServer",
    503: "ServiceUnavailable",
}
# In a stream the model's failure is its own exception (a call's 424 ModelError).
_STREAM_ERROR_NAMES = {**_ERROR_NAMES, 424: "ModelStreamError"}


def error_type(status: int) -> str:
    """The ``x-amzn-ErrorType`` name of an HTTP status (``ThrottlingException`` for 429)."""
    name = _ERROR_NAMES.get(status) or ("InternalServer" if status >= 500 else "Validation")
    return f"{name}Exception"


def _exception_type(status: int) -> str:
    name = _STREAM_ERROR_NAMES.get(status) or ("InternalServer" if status >= 500 else "Validation")
    return f"{name[0].lower()}{name[1:]}Exception"


def _error_headers(status: int) -> list[tuple[str, str]]:
    return [
        (
            "x-amzn-ErrorType",
            f"{error_type(status)}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        ),
    ]


def _event(kind: str, data: dict[str, Any]) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, _dumps(data))


class BedrockProtocol(_Protocol):
    """Converse and ConverseStream, rendered; it writes whole responses itself."""

    continues_by_default = True
    own_response = True
    stream_headers = (("content-type", EVENT_STREAM),)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.body.get("toolConfig")
        tools = config.get("tools") if isinstance(config, dict) else None
        for tool in tools if isinstance(tools, list) else []:
            spec = tool.get("toolSpec") if isinstance(tool, dict) else None
            name = spec.get("name") if isinstance(spec, dict) else None
            if isinstance(name, str):
                self.tool_names.append(name)
        system = self.body.get("system")
        if isinstance(system, list):
            # The base class counted ``system`` only as a string.
            self.prompt_chars += len(_text_of(system))

    def _tool_name(self, tool: dict[str, Any]) -> Any:
        return None  # Bedrock's tools are in toolConfig (see __init__)

    # -- errors ---------------------------------------------------------------------

    def _validation(self, message: str) -> dict[str, Any]:
        return {"message": message}

    def context_error(self, limit: int, used: int) -> dict[str, Any]:
        return self._validation("Input is too long for requested model.")

    def prefill_error(self) -> dict[str, Any]:
        return self._validation(
            "A conversation must end with a user message. Try again with a conversation "
            "that ends with a user message."
        )

    def error_payload(self, status: int) -> dict[str, Any]:
        return {"message": self.error_message(status)}

    def sse_error(self, status: int) -> bytes:
        """The ``exception`` frame of ``inband_error``."""
        headers = {
            ":exception-type": _exception_type(status),
            ":content-type": "application/json",
            ":message-type": "exception",
        }
        return encode_message(headers, _dumps(self.error_payload(status)))

    # -- answers --------------------------------------------------------------------

    def _stop_reason(self, calls: list[tuple[str, str, str]]) -> str:
        if self.behavior.kind == "content_filter":
            return self.finish_word("guardrail_intervened")
        return self.finish_word("tool_use" if calls else "end_turn")

    def _usage(self) -> dict[str, Any]:
        prompt, completion, cached = self.usage_numbers()
        usage = {
            "inputTokens": prompt,
            "outputTokens": completion,
            "totalTokens": prompt + completion,
        }
        if cached:
            usage["cacheReadInputTokens"] = cached
            usage["cacheWriteInputTokens"] = 0
        return usage

    def json_answer(self) -> dict[str, Any]:
        b = self.behavior
        content: list[dict[str, Any]] = []
        if b.kind == "empty":
            texts: list[str] = []
        else:
            texts = self.answer_texts()
            if b.reasoning:
                thought = {"text": "".join(b.reasoning_pieces()), "signature": "sig"}
                content.append({"reasoningContent": {"reasoningText": thought}})
        if texts or b.kind not in ("tools", "content_filter", "empty"):
            content.append({"text": "".join(texts)})
        calls = [] if b.kind == "empty" else self.tool_calls()
        for cid, name, args in calls:
            content.append({"toolUse": {"toolUseId": cid, "name": name, "input": json.loads(args)}})
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": self._stop_reason(calls),
            "usage": self._usage(),
            "metrics": {"latencyMs": 42},
        }

    def sse_pieces(self) -> list[_Piece]:
        """The frames of a stream up to ``messageStop``; ``metadata`` is :attr:`sse_terminator`."""
        b = self.behavior
        pieces = [_Piece(_event("messageStart", {"role": "assistant"}), False)]
        index = 0

        def delta(delta: dict[str, Any], counts: bool = True) -> _Piece:
            return _Piece(
                _event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}), counts
            )

        def stop() -> None:
            nonlocal index
            pieces.append(_Piece(_event("contentBlockStop", {"contentBlockIndex": index}), False))
            index += 1

        if b.reasoning:
            pieces.extend(delta({"reasoningContent": {"text": r}}) for r in b.reasoning_pieces())
            pieces.append(delta({"reasoningContent": {"signature": "sig"}}, False))
            stop()
        texts = self.answer_texts()
        if texts or b.kind not in ("tools", "content_filter"):
            pieces.extend(delta({"text": t}) for t in texts)
            stop()
        calls = self.tool_calls()
        for cid, name, args in calls:
            start = {
                "contentBlockIndex": index,
                "start": {"toolUse": {"toolUseId": cid, "name": name}},
            }
            pieces.append(_Piece(_event("contentBlockStart", start), False))
            pieces.extend(delta({"toolUse": {"input": f}}) for f in _split3(args))
            stop()
        if b.kind != "no_terminator":
            stop_reason = {"stopReason": self._stop_reason(calls)}
            pieces.append(_Piece(_event("messageStop", stop_reason), False))
        return pieces

    @property
    def sse_terminator(self) -> bytes:  # type: ignore[override]
        """The ``metadata`` frame that ends a complete stream."""
        return _event("metadata", {"usage": self._usage(), "metrics": {"latencyMs": 42}})

    def stream_empty(self) -> bytes:
        """An ``empty`` stream: ``messageStart`` and nothing after it."""
        return self.sse_pieces()[0].data

    def stream_malformed(self, rest: list[bytes]) -> list[bytes]:
        """The next frame with its message CRC flipped (the prelude still checks out)."""
        frame = rest.pop(0) if rest else self.sse_terminator
        return [frame[:-4] + bytes(x ^ 0xFF for x in frame[-4:]), *rest]

    def stream_cut(self, rest: list[bytes]) -> bytes:
        """The first half of the next frame."""
        frame = rest[0] if rest else self.sse_terminator
        return frame[: len(frame) // 2]

    # -- the response -----------------------------------------------------------------

    async def respond(
        self, conn: h11.Connection, stream: SocketStream, extra: list[tuple[str, str]]
    ) -> _Action:
        """Write this request's whole response (after ``hang_headers`` and ``delay``)."""
        b = self.behavior
        extra = [("x-amzn-RequestId", f"fake-{self.request.index}"), *extra]
        rejection = self.rejection()
        if rejection is not None:
            status, error = rejection
            await _send_json(conn, stream, status, _dumps(error), extra + _error_headers(status))
            return "keep"
        error_status = b.status if b.status is not None else 500
        if b.kind == "status" or (b.kind == "inband_error" and not self.request.stream):
            status = error_status
            if b.retry_after is not None:
                extra.append(("retry-after", b.retry_after))
            if b.retry_after_ms is not None:
                extra.append(("retry-after-ms", str(b.retry_after_ms)))
            if b.body is not None:
                payload = b.body.encode()
            else:
                payload = _dumps(self.error_payload(status))
                extra += _error_headers(status)
            await _send_json(conn, stream, status, payload, extra)
            return "keep"
        if not self.request.stream or b.kind == "not_sse":
            return await self._respond_json(conn, stream, extra)
        return await _send_stream(conn, stream, self, extra)

    async def _respond_json(
        self, conn: h11.Connection, stream: SocketStream, extra: list[tuple[str, str]]
    ) -> _Action:
        b = self.behavior
        if b.kind == "malformed":
            await _send_json(conn, stream, 200, b'{"output": {"message": {"content": [', extra)
            return "keep"
        return await _send_json_answer(conn, stream, b, _dumps(self.json_answer()), extra)


_BEDROCK_PATH_RE = re.compile(r"^/model/([^/]+)/converse(-stream)?$")


def _bedrock_model(target: str) -> str | None:
    match = _BEDROCK_PATH_RE.match(target.split("?", 1)[0])
    return unquote(match.group(1)) if match is not None else None


def _bedrock_streams(path: str) -> bool:
    match = _BEDROCK_PATH_RE.match(path)
    return match is not None and match.group(2) is not None


register_protocol(
    Route(
        lambda path: _BEDROCK_PATH_RE.match(path) is not None,
        BedrockProtocol,
        _bedrock_model,
        _bedrock_streams,
    )
)
