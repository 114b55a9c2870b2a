"""The fake server's OpenAI Responses API protocol (``POST /v1/responses``).

JSON: a ``response`` object (``status``, ``output`` items ``reasoning`` /
``message`` / ``function_call``, ``usage`` with ``input_tokens_details``
and ``output_tokens_details``, ``incomplete_details``, ``error``).
Streaming: typed SSE events (``event: <type>`` plus ``data:`` with the same
``type`` and a ``sequence_number``): ``response.created``,
``response.in_progress``, ``response.output_item.added``,
``response.reasoning_summary_text.delta``, ``response.content_part.added``,
``response.output_text.delta``, ``response.function_call_arguments.delta``,
``...done`` events, and the terminator ``response.completed`` carrying the
whole response with its usage.

Per behaviour:

- ``inband_error``: ``response.failed`` after HTTP 200, its
  ``response.error.code`` following ``status`` (``server_error``,
  ``rate_limit_exceeded``, ...); non-streaming a 200 whose response has
  ``status: "failed"``;
- ``content_filter``: with ``after=0`` OpenAI's ``content_policy_violation``
  400 (``status=200``: a ``response.incomplete`` without text); with
  ``after=N``, N pieces then ``response.incomplete`` whose
  ``incomplete_details.reason`` is ``content_filter``;
- ``finish=max_output_tokens`` (any word): ends with ``response.incomplete``
  and that reason;
- ``empty``: ``response.completed`` alone.
"""

from __future__ import annotations

from typing import Any

from ._fake_server import (
    Behavior,
    FakeRequest,
    Route,
    _dumps,
    _OpenAI,
    _Piece,
    _split3,
    _text_of,
    register_protocol,
)

__all__ = ["ResponsesProtocol"]

_ERROR_CODES = {
    400: "invalid_prompt",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "server_error",
}


class ResponsesProtocol(_OpenAI):
    """Rendering of the OpenAI Responses API (errors as the Chat Completions API's)."""

    def __init__(self, request: FakeRequest, behavior: Behavior) -> None:
        super().__init__(request, behavior)
        body = self.body
        items = body.get("input")
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        items = items if isinstance(items, list) else []
        self.prompt_chars = sum(
            len(_text_of(m.get("content"))) for m in items if isinstance(m, dict)
        ) + len(_text_of(body.get("instructions")))
        last = items[-1] if items else None
        self.prefill = (
            _text_of(last.get("content"))
            if isinstance(last, dict) and last.get("role") == "assistant"
            else None
        )
        texts = None
        if self.prefill is not None and behavior.prefill:
            texts = behavior.continuation_pieces(self.prefill)
        self.texts = behavior.text_pieces() if texts is None else texts
        self._sequence = 0
        self._id = f"resp_fake_{request.index}"

    def _tool_name(self, tool: dict[str, Any]) -> Any:
        return tool.get("name")

    # -- answers -----------------------------------------------------------------

    def _usage(self) -> dict[str, Any]:
        prompt, completion, cached = self.usage_numbers()
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": self.behavior.reasoning},
            "total_tokens": prompt + completion,
        }

    def _incomplete_reason(self) -> str | None:
        b = self.behavior
        if b.kind == "content_filter":
            return b.finish or "content_filter"
        return b.finish

    def _output(self, with_text: bool = True) -> list[dict[str, Any]]:
        b = self.behavior
        output: list[dict[str, Any]] = []
        if b.reasoning:
            summary = [{"type": "summary_text", "text": "".join(b.reasoning_pieces())}]
            output.append({"type": "reasoning", "id": "rs_fake", "summary": summary})
        text = "".join(self.answer_texts()) if with_text and b.kind != "empty" else ""
        if text or b.kind not in ("tools", "content_filter", "empty"):
            output.append(
                {
                    "type": "message",
                    "id": "msg_fake",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            )
        for i, (cid, name, args) in enumerate(self.tool_calls()):
            output.append(
                {
                    "type": "function_call",
                    "id": f"fc_fake_{i}",
                    "call_id": cid,
                    "name": name,
                    "arguments": args,
                    "status": "completed",
                }
            )
        return output

    def _response(self, status: str, output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        reason = self._incomplete_reason() if status != "in_progress" else None
        if status == "completed" and reason is not None:
            status = "incomplete"
        return {
            "id": self._id,
            "object": "response",
            "created_at": 0,
            "status": status,
            "model": self.model,
            "output": output if output is not None else [],
            "incomplete_details": {"reason": reason} if status == "incomplete" else None,
            "error": None,
            "usage": self._usage() if status not in ("in_progress",) else None,
        }

    def json_answer(self) -> dict[str, Any]:
        return self._response("completed", self._output())

    def inband_payload(self, status: int) -> dict[str, Any]:
        response = self._response("failed")
        response["usage"] = None
        response["error"] = {
            "code": _ERROR_CODES.get(status, "server_error"),
            "message": self.error_message(status),
        }
        return response

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + _dumps(data) + b"\n\n"

    @property
    def sse_terminator(self) -> bytes:  # type: ignore[override]
        """``response.completed`` (or ``response.incomplete``) with the whole response."""
        response = self._response("completed", self._output())
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return self._event(kind, {"response": response})

    def sse_pieces(self) -> list[_Piece]:
        b = self.behavior
        pieces: list[_Piece] = []

        def add(kind: str, data: dict[str, Any], counts: bool = False) -> None:
            pieces.append(_Piece(self._event(kind, data), counts))

        add("response.created", {"response": self._response("in_progress")})
        add("response.in_progress", {"response": self._response("in_progress")})
        index = 0
        if b.reasoning:
            item: dict[str, Any] = {"type": "reasoning", "id": "rs_fake", "summary": []}
            add("response.output_item.added", {"output_index": index, "item": item})
            where: dict[str, Any] = {"item_id": "rs_fake", "output_index": index}
            for r in b.reasoning_pieces():
                delta = {**where, "summary_index": 0, "delta": r}
                add("response.reasoning_summary_text.delta", delta, True)
            index += 1
        texts = self.answer_texts()
        if texts or b.kind not in ("tools", "content_filter"):
            item = {"type": "message", "id": "msg_fake", "status": "in_progress"}
            add("response.output_item.added", {"output_index": index, "item": item})
            where = {"item_id": "msg_fake", "output_index": index, "content_index": 0}
            part = {"type": "output_text", "text": "", "annotations": []}
            add("response.content_part.added", {**where, "part": part})
            for t in texts:
                add("response.output_text.delta", {**where, "delta": t}, True)
            add("response.output_text.done", {**where, "text": "".join(texts)})
            index += 1
        for i, (cid, name, args) in enumerate(self.tool_calls()):
            item = {
                "type": "function_call",
                "id": f"fc_fake_{i}",
                "call_id": cid,
                "name": name,
                "arguments": "",
                "status": "in_progress",
            }
            add("response.output_item.added", {"output_index": index, "item": item})
            where = {"item_id": f"fc_fake_{i}", "output_index": index}
            for fragment in _split3(args):
                add("response.function_call_arguments.delta", {**where, "delta": fragment}, True)
            add("response.function_call_arguments.done", {**where, "arguments": args})
            item = {**item, "arguments": args, "status": "completed"}
            add("response.output_item.done", {"output_index": index, "item": item})
            index += 1
        return pieces

    def sse_error(self, status: int) -> bytes:
        return self._event("response.failed", {"response": self.inband_payload(status)})

    def sse_malformed(self) -> bytes:
        return (
            b"event: response.output_text.delta\n"
            b'data: {"type":"response.output_text.delta","delta":"tok\n\n'
        )


register_protocol(
    Route(lambda path: path == "/v1/responses", ResponsesProtocol, lambda t: None, lambda p: False)
)
