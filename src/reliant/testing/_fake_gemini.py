"""The fake server's Gemini protocol (Generative Language API and Vertex AI paths).

Routes: ``POST /v1beta/models/{model}:generateContent`` (JSON) and
``:streamGenerateContent?alt=sse`` (SSE, ``data:`` events separated by CRLF
as Google sends them), and the same under Vertex AI's
``/v1/projects/{project}/locations/{location}/publishers/google/models/``.
The model (and so the behaviour) is the path's model id.

Shapes follow the public API reference: ``candidates[0].content.parts``
(``text``, ``thought: true`` reasoning, ``functionCall`` with whole ``args``),
``finishReason``, cumulative ``usageMetadata`` on every event,
``modelVersion``; errors as ``{"error": {"code", "message", "status",
"details"}}``. Per behaviour:

- ``status:429:retry_after=3``: ``RESOURCE_EXHAUSTED`` with a
  ``google.rpc.RetryInfo`` detail ``retryDelay: "3s"`` and no
  ``Retry-After`` header (Google sends none);
- ``inband_error``: a ``data: {"error": ...}`` event (a 200 JSON error body
  non-streaming);
- ``content_filter``: with ``after=0`` a blocked prompt
  (``promptFeedback.blockReason: SAFETY``, no candidates); with ``after=N``,
  N pieces then ``finishReason: SAFETY``;
- Gemini has no terminator: the last event carries the ``finishReason``, so
  ``no_terminator`` and ``no_done`` both end without it, and ``empty`` is
  that last event alone.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from ._fake_server import (
    Behavior,
    FakeRequest,
    Route,
    _dumps,
    _Piece,
    _Protocol,
    _text_of,
    register_protocol,
)

__all__ = ["GeminiProtocol", "gemini_model_from_path", "is_gemini_path"]

_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_METHODS = (":generateContent", ":streamGenerateContent")


def is_gemini_path(path: str) -> bool:
    """Whether ``path`` (without its query) is a Gemini or Vertex AI generate route."""
    return "/models/" in path and path.endswith(_METHODS)


def gemini_model_from_path(target: str) -> str | None:
    """The model id of a Gemini route (``.../models/{model}:generateContent``), or None."""
    path = target.split("?", 1)[0]
    if not is_gemini_path(path):
        return None
    tail = path.rsplit("/models/", 1)[1]
    return unquote(tail.rpartition(":")[0]) or None


def is_stream_path(target: str) -> bool:
    """Whether a Gemini request target asks for a stream."""
    return target.split("?", 1)[0].endswith(":streamGenerateContent")


class GeminiProtocol(_Protocol):
    """Rendering of the Gemini API."""

    retry_after_header = False

    def __init__(self, request: FakeRequest, behavior: Behavior) -> None:
        super().__init__(request, behavior)
        body = self.body
        contents = body.get("contents")
        contents = contents if isinstance(contents, list) else []
        self.prompt_chars = sum(
            len(_text_of(c.get("parts"))) for c in contents if isinstance(c, dict)
        )
        system = body.get("systemInstruction")
        if isinstance(system, dict):
            self.prompt_chars += len(_text_of(system.get("parts")))
        last = contents[-1] if contents else None
        self.prefill = (
            _text_of(last.get("parts"))
            if isinstance(last, dict) and last.get("role") == "model"
            else None
        )
        texts = None
        if self.prefill is not None and behavior.prefill:
            texts = behavior.continuation_pieces(self.prefill)
        self.texts = behavior.text_pieces() if texts is None else texts
        self.tool_names = []
        for tool in body.get("tools") or ():
            declarations = tool.get("functionDeclarations") if isinstance(tool, dict) else None
            for declaration in declarations if isinstance(declarations, list) else ():
                name = declaration.get("name") if isinstance(declaration, dict) else None
                if isinstance(name, str):
                    self.tool_names.append(name)

    def _tool_name(self, tool: dict[str, Any]) -> Any:
        return None  # read from functionDeclarations in __init__

    # -- errors ------------------------------------------------------------------

    def _error(self, status: int, message: str, details: list[Any] | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": _GOOGLE_STATUS.get(status, "UNKNOWN"),
        }
        if details:
            error["details"] = details
        return {"error": error}

    def error_payload(self, status: int) -> dict[str, Any]:
        details: list[Any] = []
        if status == 429:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/"
                            "generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        }
                    ],
                }
            )
            if self.behavior.retry_after is not None:
                details.append(
                    {
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": f"{self.behavior.retry_after}s",
                    }
                )
        message = self.behavior.message or (
            "Resource has been exhausted (e.g. check quota)."
            if status == 429
            else "The model is overloaded. Please try again later."
            if status == 503
            else f"fake error {status}"
        )
        return self._error(status, message, details)

    def context_error(self, limit: int, used: int) -> dict[str, Any]:
        return self._error(
            400,
            f"The input token count ({used}) exceeds the maximum number of tokens "
            f"allowed ({limit}).",
        )

    def prefill_error(self) -> dict[str, Any]:
        return self._error(
            400,
            "Please ensure that single turn requests end with a user role or the role "
            "field is empty.",
        )

    def content_filter_error(self) -> dict[str, Any]:  # pragma: no cover - 200 refusals only
        raise AssertionError("Gemini refuses in a 200 answer")

    # -- answers -----------------------------------------------------------------

    def _finish(self, calls: bool) -> str:
        if self.behavior.kind == "content_filter":
            return self.finish_word("SAFETY")
        return self.finish_word("STOP")

    def _usage(self, output: int | None = None) -> dict[str, Any]:
        prompt, completion, cached = self.usage_numbers()
        reasoning = self.behavior.reasoning
        candidates = (completion - reasoning) if output is None else output
        usage: dict[str, Any] = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates + reasoning,
        }
        if reasoning:
            usage["thoughtsTokenCount"] = reasoning
        if cached:
            usage["cachedContentTokenCount"] = cached
        return usage

    def _blocked(self) -> bool:
        b = self.behavior
        return b.kind == "content_filter" and b.after == 0

    def _response(self, parts: list[dict[str, Any]] | None, finish: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if parts is not None or finish is not None:
            candidate: dict[str, Any] = {"content": {"parts": parts or [], "role": "model"}}
            if finish is not None:
                candidate["finishReason"] = finish
            candidate["index"] = 0
            data["candidates"] = [candidate]
        data["usageMetadata"] = self._usage()
        data["modelVersion"] = self.model
        data["responseId"] = f"fake-{self.request.index}"
        return data

    def _block_response(self) -> dict[str, Any]:
        return {
            "promptFeedback": {
                "blockReason": self.finish_word("SAFETY"),
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
                ],
            },
            "usageMetadata": {"promptTokenCount": self.behavior.input_tokens},
            "modelVersion": self.model,
        }

    def json_answer(self) -> dict[str, Any]:
        if self._blocked():
            return self._block_response()
        b = self.behavior
        parts: list[dict[str, Any]] = []
        if b.reasoning:
            parts.append({"text": "".join(b.reasoning_pieces()), "thought": True})
        text = "" if b.kind == "empty" else "".join(self.answer_texts())
        if text or b.kind not in ("tools", "content_filter"):
            parts.append({"text": text})
        calls = self.tool_calls()
        for _cid, name, args in calls:
            parts.append({"functionCall": {"name": name, "args": json.loads(args)}})
        return self._response(parts, self._finish(bool(calls)))

    @staticmethod
    def _event(data: dict[str, Any]) -> bytes:
        return b"data: " + _dumps(data) + b"\r\n\r\n"

    @property
    def sse_terminator(self) -> bytes:  # type: ignore[override]
        """The last event: the finish reason and the whole usage (Gemini has no terminator)."""
        if self._blocked():
            return self._event(self._block_response())
        return self._event(self._response([{"text": ""}], self._finish(bool(self.tool_calls()))))

    def sse_pieces(self) -> list[_Piece]:
        if self._blocked():
            return []
        pieces: list[_Piece] = []
        for r in self.behavior.reasoning_pieces():
            thought = {"text": r, "thought": True}
            pieces.append(_Piece(self._event(self._response([thought], None)), True))
        for t in self.answer_texts():
            pieces.append(_Piece(self._event(self._response([{"text": t}], None)), True))
        for _cid, name, args in self.tool_calls():
            call = {"functionCall": {"name": name, "args": json.loads(args)}}
            pieces.append(_Piece(self._event(self._response([call], None)), True))
        # Whether the stream ends with the last event (``sse_terminator``) is
        # the server's decision: no_terminator and no_done leave it out.
        return pieces

    def sse_error(self, status: int) -> bytes:
        return self._event(self.error_payload(status))

    def sse_malformed(self) -> bytes:
        return b'data: {"candidates":[{"content":{"parts":[{"text":"tok\r\n\r\n'


register_protocol(Route(is_gemini_path, GeminiProtocol, gemini_model_from_path, is_stream_path))
