"""Why a model stopped: each provider's own words mapped to :data:`reliant.FinishReason`.

The one place these maps live, so the streaming and non-streaming paths of
every provider agree. A word we do not know maps to ``"other"`` and is kept
as ``raw_finish_reason``: callers can still see it, and a new provider word
never breaks parsing.
"""

from __future__ import annotations

from typing import Any

from .._types import FinishReason, StreamChunk, TokenUsage

__all__ = [
    "ANTHROPIC_STOP_REASONS",
    "BEDROCK_STOP_REASONS",
    "GEMINI_FINISH_REASONS",
    "OPENAI_FINISH_REASONS",
    "RESPONSES_INCOMPLETE_REASONS",
    "anthropic_finish_reason",
    "bedrock_finish_reason",
    "final_chunk",
    "gemini_finish_reason",
    "openai_finish_reason",
]

OPENAI_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    # The deprecated single-function form of tool calls.
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
"""OpenAI-compatible ``finish_reason`` -> normalised reason."""

ANTHROPIC_STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    # Claude's streaming classifiers stopped the answer.
    "refusal": "content_filter",
    # "pause_turn" (a server tool paused a long turn) and anything newer: "other".
}
"""Anthropic ``stop_reason`` -> normalised reason."""


BEDROCK_STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    # A guardrail, or the model's own safety system, stopped the answer.
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    # "model_context_window_exceeded" and anything newer: "other".
}
"""Bedrock Converse ``stopReason`` -> normalised reason."""


def bedrock_finish_reason(raw: Any) -> FinishReason | None:
    """The normalised reason of a Bedrock ``stopReason`` (None when absent or not a string)."""
    if not isinstance(raw, str) or not raw:
        return None
    return BEDROCK_STOP_REASONS.get(raw, "other")


GEMINI_FINISH_REASONS: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    # "MALFORMED_FUNCTION_CALL" is an error, not a finish (see _gemini.py);
    # "LANGUAGE", "OTHER", "FINISH_REASON_UNSPECIFIED" and newer words: "other".
}
"""Gemini ``finishReason`` -> normalised reason (a function call turns ``STOP`` into
``tool_calls`` in the provider, since Gemini says ``STOP`` for those too)."""

RESPONSES_INCOMPLETE_REASONS: dict[str, FinishReason] = {
    "max_output_tokens": "length",
    "content_filter": "content_filter",
}
"""OpenAI Responses ``incomplete_details.reason`` -> normalised reason."""


def gemini_finish_reason(raw: Any, tool_calls: bool = False) -> FinishReason | None:
    """The normalised reason of a Gemini ``finishReason`` (None when absent or not a string)."""
    if not isinstance(raw, str) or not raw:
        return None
    reason = GEMINI_FINISH_REASONS.get(raw, "other")
    return "tool_calls" if tool_calls and reason == "stop" else reason


def openai_finish_reason(raw: Any) -> FinishReason | None:
    """The normalised reason of an OpenAI ``finish_reason`` (None when absent or not a string)."""
    if not isinstance(raw, str) or not raw:
        return None
    return OPENAI_FINISH_REASONS.get(raw, "other")


def anthropic_finish_reason(raw: Any) -> FinishReason | None:
    """The normalised reason of an Anthropic ``stop_reason`` (None when absent or not a string)."""
    if not isinstance(raw, str) or not raw:
        return None
    return ANTHROPIC_STOP_REASONS.get(raw, "other")


def final_chunk(
    finish: FinishReason | None, raw: str | None, model: str | None, usage: TokenUsage | None
) -> StreamChunk:
    """The terminating chunk of a stream, carrying what is known at its end."""
    if finish is None and model is None and usage is None:
        return StreamChunk.final()
    return StreamChunk("", None, True, 0, False, finish, raw, model, usage)
