"""Records that cross the provider boundary.

Every type here is a frozen, slotted dataclass: requests are shared between
retries and failover candidates, so nothing may mutate them in flight, and
streams create many chunks, so they should be small.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "Final",
    "FinishReason",
    "ReasoningDelta",
    "StreamChunk",
    "StreamEvent",
    "StreamOptions",
    "StreamRestart",
    "TextDelta",
    "TokenUsage",
    "ToolCall",
    "ToolCallEvent",
    "ToolSpec",
    "UsageEvent",
]

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]

FinishReason: TypeAlias = Literal["stop", "length", "tool_calls", "content_filter", "other"]
"""Why the model stopped, normalised across providers.

``"stop"`` (a natural end or a stop sequence), ``"length"`` (a token limit
cut the answer), ``"tool_calls"`` (the model asks for tools),
``"content_filter"`` (a safety system stopped it) and ``"other"`` (anything
else the provider said; its own word is kept as ``raw_finish_reason``).
"""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation.

    Attributes:
        role: ``"system"``, ``"user"``, ``"assistant"`` or ``"tool"``.
        content: The message text.
        tool_calls: On an assistant message, the tool calls the model made in
            that turn (as a ``ChatResponse`` or its ``ToolCallEvent`` events gave them),
            so a conversation that used tools can be sent again, to any provider.
        tool_call_id: On a tool message, the ``ToolCall.id`` whose result it carries.
    """

    role: str
    content: str
    tool_calls: Sequence[ToolCall] = ()
    tool_call_id: str | None = None

    def __post_init__(self) -> None:
        if self.tool_calls and not isinstance(self.tool_calls, tuple):
            object.__setattr__(self, "tool_calls", tuple(self.tool_calls))

    @classmethod
    def system(cls, text: str) -> ChatMessage:
        """A system message."""
        return cls("system", text)

    @classmethod
    def user(cls, text: str) -> ChatMessage:
        """A user message."""
        return cls("user", text)

    @classmethod
    def assistant(cls, text: str, tool_calls: Sequence[ToolCall] = ()) -> ChatMessage:
        """An assistant message, with the tool calls it made, if any."""
        return cls("assistant", text, tool_calls)

    @classmethod
    def tool(cls, text: str, tool_call_id: str | None = None) -> ChatMessage:
        """A tool-result message, answering the call ``tool_call_id`` when given."""
        return cls("tool", text, (), tool_call_id)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool invocation requested by the model.

    Attributes:
        id: Provider-assigned call id, echoed back with the tool result.
        name: Tool name.
        arguments: The arguments as a JSON string, exactly as the model produced them.
    """

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool offered to the model.

    Attributes:
        name: Tool name.
        description: What the tool does, for the model.
        parameters: JSON schema of the arguments.
    """

    name: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token accounting reported by the provider (each figure optional)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A conversation plus, optionally, the tools the model may call."""

    messages: Sequence[ChatMessage]
    tools: Sequence[ToolSpec] | None = None

    def __post_init__(self) -> None:
        # Freeze the sequences too: a request is shared by every retry and
        # failover candidate, so a caller's later list mutation must not leak in.
        if not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(self.messages))
        if self.tools is not None and not isinstance(self.tools, tuple):
            object.__setattr__(self, "tools", tuple(self.tools))


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """The answer of a non-streaming call.

    ``finish_reason`` says why the model stopped (normalised, see
    :data:`FinishReason`), ``raw_finish_reason`` the provider's own word, and
    ``model`` the model id the server reported; each is None when unknown.
    """

    text: str | None = None
    tool_calls: Sequence[ToolCall] = ()
    usage: TokenUsage | None = None
    reasoning_content: str | None = None
    finish_reason: FinishReason | None = None
    raw_finish_reason: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tool_calls, tuple):
            object.__setattr__(self, "tool_calls", tuple(self.tool_calls))

    @property
    def has_tool_calls(self) -> bool:
        """True when the model asked for at least one tool call."""
        return bool(self.tool_calls)


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One piece of a streamed text answer.

    The last chunk of a stream has ``is_final`` set and an empty delta; it
    carries what is known at the end: ``finish_reason`` (normalised),
    ``raw_finish_reason``, the ``model`` id the server reported and the
    ``usage``. ``token_count`` is an estimate (ceil(len(delta) / 4)) filled
    in only when ``StreamOptions.count_tokens`` asked for it.

    ``restarted`` is True on the first chunk of a new answer after a stream
    broke mid-way and ``ReliableProvider(mid_stream="restart")`` asked
    another candidate: discard everything received before this chunk.
    """

    delta: str = ""
    reasoning: str | None = None
    is_final: bool = False
    token_count: int = 0
    restarted: bool = False
    finish_reason: FinishReason | None = None
    raw_finish_reason: str | None = None
    model: str | None = None
    usage: TokenUsage | None = None

    @classmethod
    def final(cls) -> StreamChunk:
        """The terminating chunk."""
        return _FINAL_CHUNK

    def with_token_estimate(self) -> StreamChunk:
        """This chunk with ``token_count`` set to ceil(len(delta) / 4)."""
        return StreamChunk(
            self.delta,
            self.reasoning,
            self.is_final,
            estimate_tokens(self.delta),
            self.restarted,
            self.finish_reason,
            self.raw_finish_reason,
            self.model,
            self.usage,
        )


_FINAL_CHUNK = StreamChunk(is_final=True)


def estimate_tokens(text: str) -> int:
    """The seed's cheap token estimate: ceil(len(text) / 4)."""
    return math.ceil(len(text) / 4)


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Stream event: a piece of answer text."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """Stream event: a piece of the model's reasoning (DeepSeek ``reasoning_content``,
    Anthropic thinking), never part of the answer text."""

    text: str


@dataclass(frozen=True, slots=True)
class StreamRestart:
    """Stream event: the stream broke mid-way and another candidate starts the answer
    anew; discard every event received before this one (``mid_stream="restart"``)."""


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    """Stream event: a complete tool call."""

    call: ToolCall


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """Stream event: token usage, usually just before the end."""

    usage: TokenUsage


@dataclass(frozen=True, slots=True)
class Final:
    """Stream event: the stream ended normally.

    Attributes:
        finish_reason: Why the model stopped, normalised (None when unknown).
        raw_finish_reason: The provider's own word for it.
        model: The model id the server reported.
        usage: Token usage, when the provider reported it.
    """

    finish_reason: FinishReason | None = None
    raw_finish_reason: str | None = None
    model: str | None = None
    usage: TokenUsage | None = None


StreamEvent: TypeAlias = (
    TextDelta | ReasoningDelta | ToolCallEvent | UsageEvent | StreamRestart | Final
)


def response_events(response: ChatResponse) -> list[StreamEvent]:
    """A non-streaming answer as the events its stream would carry.

    ``ReasoningDelta`` (if there is reasoning), ``TextDelta`` (if there is
    text), one ``ToolCallEvent`` per tool call, ``UsageEvent`` (if usage is
    known), then ``Final`` with the finish reason, model and usage. Used wherever an
    event stream is served from ``chat`` (not exported).
    """
    events: list[StreamEvent] = []
    if response.reasoning_content:
        events.append(ReasoningDelta(response.reasoning_content))
    if response.text:
        events.append(TextDelta(response.text))
    events.extend(ToolCallEvent(call) for call in response.tool_calls)
    if response.usage is not None:
        events.append(UsageEvent(response.usage))
    events.append(
        Final(response.finish_reason, response.raw_finish_reason, response.model, response.usage)
    )
    return events


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How a stream is requested.

    Attributes:
        enabled: False makes every stream method fail with
            ``NoStreamingProviderError`` without calling anyone.
        count_tokens: Fill ``StreamChunk.token_count`` with an estimate.
    """

    enabled: bool = True
    count_tokens: bool = False
