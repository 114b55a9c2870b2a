"""Mid-stream recovery: what the bridge needs to restart or continue a broken stream.

A committed stream that breaks (cut, reset, stall, malformed or in-band error
event) is an error by default: the caller has seen text, and a silent switch
would duplicate or contradict it. ``ReliableProvider(mid_stream=...)`` offers
the two honest ways out, and this module holds their item-level parts; the
bridge (``_bridge``) drives them and the planner (``FailoverRun.recover``)
picks the next candidate.

``"restart"``
    The next candidate is asked the original request. Its first item is
    preceded by a restart signal (``StreamChunk.restarted`` on the chunk API,
    a ``StreamRestart`` event on the event API): the consumer discards what
    it had and receives one whole new answer.

``"continue"``
    The next candidate that can continue a prefill
    (``Provider.supports_prefill``) is sent the conversation plus the text
    delivered so far as a trailing assistant message, and its output is
    forwarded as the rest of the same answer. No candidate can continue, a
    tool call was delivered or in progress, or the continuation is rejected:
    it falls back to a restart, with its signal. Never a silent switch.

Overlap trimming (continue)
---------------------------
A continuation may repeat the end of the prefill ("...blue because" +
"because the sky..."), and Anthropic strips the prefill's trailing
whitespace, so a continuation often starts with the space already delivered.
:class:`OverlapTrimmer` holds the continuation's first items until the
decision is safe, then drops the longest prefix of the continuation text that
is also a suffix of the delivered text, if it is whitespace only or at least
:data:`MIN_OVERLAP` characters (shorter matches are coincidence: "a" + "a
cat"). The decision is safe once the held text no longer occurs in the tail
of the delivered text (no longer overlap can follow) or the stream ends;
usually after the first item, so the continuation is not delayed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Generic, Literal, TypeAlias, TypeVar

from ._provider import Provider
from ._types import (
    ChatMessage,
    StreamChunk,
    StreamEvent,
    StreamRestart,
    TextDelta,
    ToolCallEvent,
)

__all__ = [
    "MAX_OVERLAP",
    "MIN_OVERLAP",
    "ChunkItems",
    "EventItems",
    "ItemOps",
    "MidStream",
    "OverlapTrimmer",
    "OpenContinuation",
    "RecoverySpec",
    "RecoveryState",
    "continuation_messages",
    "overlap",
]

T = TypeVar("T")

MidStream: TypeAlias = Literal["error", "restart", "continue"]
MID_STREAM_MODES: tuple[MidStream, ...] = ("error", "restart", "continue")

MIN_OVERLAP = 8
"""Shortest repeated text (not whitespace only) that is trimmed from a continuation."""

MAX_OVERLAP = 512
"""Only this much of the end of the delivered text is compared."""


class ItemOps(Generic[T]):
    """How recovery reads and rewrites the items of one stream API."""

    def text_of(self, item: T) -> str:
        """The answer text the item carries ("" for none)."""
        raise NotImplementedError

    def is_tool(self, item: T) -> bool:
        """True for a tool-call item (an answer with one is never continued)."""
        raise NotImplementedError

    def restarted(self, first: T) -> list[T]:
        """The first item of a restarted answer, with the restart signal."""
        raise NotImplementedError

    def with_text(self, item: T, text: str) -> T | None:
        """``item`` with its text replaced; None when nothing is left to deliver."""
        raise NotImplementedError


class ChunkItems(ItemOps[StreamChunk]):
    """``StreamChunk`` streams (``stream_chat_with_system`` / ``_with_history``)."""

    def text_of(self, item: StreamChunk) -> str:
        return item.delta

    def is_tool(self, item: StreamChunk) -> bool:
        return False

    def restarted(self, first: StreamChunk) -> list[StreamChunk]:
        return [replace(first, restarted=True)]

    def with_text(self, item: StreamChunk, text: str) -> StreamChunk | None:
        if not text and item.reasoning is None and not item.is_final:
            return None
        return replace(item, delta=text)


class EventItems(ItemOps[StreamEvent]):
    """Event streams (``stream_chat``)."""

    def text_of(self, item: StreamEvent) -> str:
        return item.text if isinstance(item, TextDelta) else ""

    def is_tool(self, item: StreamEvent) -> bool:
        return isinstance(item, ToolCallEvent)

    def restarted(self, first: StreamEvent) -> list[StreamEvent]:
        return [StreamRestart(), first]

    def with_text(self, item: StreamEvent, text: str) -> StreamEvent | None:
        if isinstance(item, TextDelta):
            return TextDelta(text) if text else None
        return item


OpenContinuation: TypeAlias = Callable[
    [Provider, str, Sequence[ChatMessage]],
    AbstractAsyncContextManager[AsyncIterator[T]],
]


@dataclass(frozen=True, slots=True)
class RecoverySpec(Generic[T]):
    """How one stream request recovers from a mid-stream break (built by ``ReliableProvider``).

    Attributes:
        mode: ``"restart"`` or ``"continue"`` (``"error"`` needs no spec).
        max_recoveries: Recoveries allowed per request.
        ops: Item access for the stream's API.
        conversation: The whole request as messages (a system-prompt stream
            included), the base of a continuation request.
        open_continuation: ``(provider, model_id, messages) -> stream context``
            for a continuation (``messages`` ends with the prefill).
        tools: The request offers tools. A stall is then treated as a break
            inside a tool call (the bridge cancelled the leaf, so the leaf
            could not say), which is restarted, never continued.
    """

    mode: MidStream
    max_recoveries: int
    ops: ItemOps[T]
    conversation: Sequence[ChatMessage]
    open_continuation: OpenContinuation[T]
    tools: bool = False


class RecoveryState(Generic[T]):
    """What one request delivered, and what the next attempt must do about it."""

    __slots__ = ("continuing", "left", "mode", "ops", "parts", "restart_pending", "tool_seen")

    def __init__(self, mode: MidStream, max_recoveries: int, ops: ItemOps[T]) -> None:
        self.mode = mode
        self.left = max_recoveries
        self.ops = ops
        self.parts: list[str] = []
        self.tool_seen = False
        self.continuing = False
        self.restart_pending = False

    def note(self, item: T) -> None:
        """Remember a delivered item (its text, whether it was a tool call)."""
        text = self.ops.text_of(item)
        if text:
            self.parts.append(text)
        elif self.ops.is_tool(item):
            self.tool_seen = True

    @property
    def text(self) -> str:
        """The answer text delivered so far."""
        if len(self.parts) > 1:
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def plan(self, err: Exception, can_continue: bool) -> Literal["continue", "restart"]:
        """Decide how the next attempt recovers; call once per break."""
        self.left -= 1
        tool = self.tool_seen or bool(getattr(err, "tool_call_in_progress", False))
        if self.mode == "continue" and can_continue and not tool and self.text:
            self.continuing, self.restart_pending = True, False
            return "continue"
        self.to_restart()
        return "restart"

    def to_restart(self) -> None:
        """The next attempt answers anew: signal it, and forget the old text."""
        self.continuing, self.restart_pending = False, True
        self.parts.clear()
        self.tool_seen = False


class OverlapTrimmer(Generic[T]):
    """Holds a continuation's first items until its overlap with the delivered text is known."""

    __slots__ = ("_held", "_held_text", "_ops", "_tail", "done")

    def __init__(self, delivered: str, ops: ItemOps[T]) -> None:
        self._tail = delivered[-MAX_OVERLAP:]
        self._ops = ops
        self._held: list[T] = []
        self._held_text = ""
        self.done = False

    def feed(self, item: T) -> list[T]:
        """Take one continuation item; return the items that can be delivered now."""
        self._held.append(item)
        self._held_text += self._ops.text_of(item)
        if self._held_text and self._held_text not in self._tail:
            return self.finish()
        return []

    def finish(self) -> list[T]:
        """Decide with what is held (the stream ended or the text diverged) and release it."""
        self.done = True
        cut = overlap(self._tail, self._held_text)
        out: list[T] = []
        for item in self._held:
            if cut:
                text = self._ops.text_of(item)
                if text:
                    drop = min(cut, len(text))
                    cut -= drop
                    trimmed = self._ops.with_text(item, text[drop:])
                    if trimmed is not None:
                        out.append(trimmed)
                    continue
            out.append(item)
        self._held.clear()
        return out


def overlap(delivered: str, continuation: str) -> int:
    """Characters at the start of ``continuation`` that repeat the end of ``delivered``.

    The longest such run counts if it is whitespace only or at least
    :data:`MIN_OVERLAP` characters long; otherwise 0.
    """
    longest = min(len(delivered), len(continuation))
    for size in range(longest, 0, -1):
        piece = continuation[:size]
        if delivered.endswith(piece) and (size >= MIN_OVERLAP or piece.isspace()):
            return size
    return 0


def continuation_messages(messages: Sequence[ChatMessage], text: str) -> list[ChatMessage]:
    """``messages`` plus the delivered text as a trailing assistant message (the prefill)."""
    return [*messages, ChatMessage.assistant(text)]
