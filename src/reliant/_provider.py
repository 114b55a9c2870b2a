"""The abstract provider every leaf (and ``ReliableProvider`` itself) implements.

Only :meth:`Provider.chat_with_system` is required. Every other method has a
default built on it, so a ten-line custom provider already works with every
call kind, streaming included: a provider that cannot stream "streams" its
whole non-streaming answer as one chunk followed by the final chunk (the seed
returned an empty stream there, a known source of empty answers).

Stream methods are plain methods returning an async context manager that
yields an async iterator::

    async with provider.stream_chat_with_history(messages, "m", 0.0) as chunks:
        async for chunk in chunks:
            ...

Leaving the ``async with`` closes the upstream deterministically. To
implement streaming in a custom provider, write a plain async generator and
return ``contextlib.aclosing(generator)``, or use :func:`stream_from_generator`
as a decorator on the generator method.
"""

from __future__ import annotations

import functools
import json
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, aclosing
from typing import Concatenate, ParamSpec, TypeAlias, TypeVar

from ._types import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    Final,
    ReasoningDelta,
    StreamChunk,
    StreamEvent,
    StreamOptions,
    TextDelta,
    ToolCall,
    ToolSpec,
    UsageEvent,
    response_events,
)

__all__ = [
    "ChunkStream",
    "EventStream",
    "Provider",
    "split_history",
    "stream_from_generator",
    "tool_use_protocol",
]

ChunkStream: TypeAlias = AbstractAsyncContextManager[AsyncIterator[StreamChunk]]
EventStream: TypeAlias = AbstractAsyncContextManager[AsyncIterator[StreamEvent]]

_DEFAULT_OPTIONS = StreamOptions()

_P = ParamSpec("_P")
_T = TypeVar("_T")
_S = TypeVar("_S")


def stream_from_generator(
    method: Callable[Concatenate[_S, _P], AsyncGenerator[_T, None]],
) -> Callable[Concatenate[_S, _P], AbstractAsyncContextManager[AsyncIterator[_T]]]:
    """Turn an async-generator method into a stream method.

    The generator is wrapped in ``contextlib.aclosing`` so that leaving the
    ``async with`` runs its ``finally`` blocks at once, in the caller's task,
    instead of whenever the garbage collector gets to it.
    """

    @functools.wraps(method)
    def wrapper(
        self: _S, /, *args: _P.args, **kwargs: _P.kwargs
    ) -> AbstractAsyncContextManager[AsyncIterator[_T]]:
        return aclosing(method(self, *args, **kwargs))

    return wrapper


def split_history(messages: Sequence[ChatMessage]) -> tuple[str | None, str]:
    """The seed's reduction of a history to (system prompt, message).

    The first system message becomes the system prompt and the last user
    message (or ``""``) the message; everything else is dropped. Providers
    without a native notion of history use it.
    """
    system = next((m.content for m in messages if m.role == "system"), None)
    user = next((m.content for m in reversed(messages) if m.role == "user"), "")
    return system, user


def tool_use_protocol(tools: Sequence[ToolSpec]) -> str:
    """The prompt-guided tool instructions for providers without native tools."""
    lines = [
        "## Tool Use Protocol",
        "",
        "To use a tool, answer with one block per call, exactly:",
        '<tool_call>{"name": "<tool name>", "arguments": {<arguments as JSON>}}</tool_call>',
        "",
        "Available tools:",
    ]
    for tool in tools:
        schema = json.dumps(dict(tool.parameters), sort_keys=True)
        lines.append(f"- {tool.name}: {tool.description} Parameters: {schema}")
    return "\n".join(lines)


_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{(?:(?!</tool_call>).)*?\})\s*</tool_call>", re.DOTALL)


def _parse_prompt_guided(text: str) -> tuple[str | None, tuple[ToolCall, ...]]:
    """Extract ``<tool_call>`` blocks; blocks that are not valid JSON stay in the text."""
    calls: list[ToolCall] = []

    def take(match: re.Match[str]) -> str:
        try:
            payload = json.loads(match.group(1))
        except ValueError:
            return match.group(0)
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            return match.group(0)
        arguments = payload.get("arguments", {})
        calls.append(
            ToolCall(
                id=f"call_{len(calls) + 1}",
                name=payload["name"],
                arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
            )
        )
        return ""

    rest = _TOOL_CALL_RE.sub(take, text).strip()
    return (rest or None), tuple(calls)


class Provider(ABC):
    """Base class of every LLM provider.

    Subclasses must implement :meth:`chat_with_system`; everything else has a
    working default. Capability flags are read-only properties so that
    wrappers can compute them from what they wrap.
    """

    @abstractmethod
    async def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> str:
        """Answer one message under an optional system prompt."""

    async def simple_chat(self, message: str, model: str, temperature: float) -> str:
        """Answer one message with no system prompt."""
        return await self.chat_with_system(None, message, model, temperature)

    async def chat_with_history(
        self, messages: Sequence[ChatMessage], model: str, temperature: float
    ) -> str:
        """Answer a conversation.

        The default keeps the first system message and the last user message
        (see :func:`split_history`); providers with real history support
        override it.
        """
        system, message = split_history(messages)
        return await self.chat_with_system(system, message, model, temperature)

    async def chat_with_tools(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        model: str,
        temperature: float,
    ) -> ChatResponse:
        """Answer a conversation with tools on offer; the default ignores the tools."""
        text = await self.chat_with_history(messages, model, temperature)
        return ChatResponse(text=text)

    async def chat(self, request: ChatRequest, model: str, temperature: float) -> ChatResponse:
        """Answer a request.

        With tools and no native tool calling, the tool-use protocol is added
        to the system prompt and ``<tool_call>`` blocks of the answer are
        parsed into ``tool_calls``.
        """
        messages = list(request.messages)
        if request.tools and not self.supports_native_tools:
            protocol = tool_use_protocol(request.tools)
            for i, m in enumerate(messages):
                if m.role == "system":
                    messages[i] = ChatMessage.system(f"{m.content}\n\n{protocol}")
                    break
            else:
                messages.insert(0, ChatMessage.system(protocol))
            text, calls = _parse_prompt_guided(
                await self.chat_with_history(messages, model, temperature)
            )
            return ChatResponse(text=text, tool_calls=calls)
        return ChatResponse(text=await self.chat_with_history(messages, model, temperature))

    async def warmup(self) -> None:
        """Open connections ahead of the first request; the default does nothing."""
        return None

    @property
    def supports_native_tools(self) -> bool:
        """The provider accepts tool specs and returns structured tool calls."""
        return False

    @property
    def supports_vision(self) -> bool:
        """The provider accepts images."""
        return False

    @property
    def supports_streaming(self) -> bool:
        """The provider streams incrementally (the stream defaults work regardless)."""
        return False

    @property
    def supports_streaming_tool_events(self) -> bool:
        """The provider's ``stream_chat`` emits structured tool-call events."""
        return False

    @property
    def supports_prefill(self) -> bool:
        """The provider continues a trailing assistant message instead of answering anew.

        ``ReliableProvider(mid_stream="continue")`` sends a broken stream's
        delivered text as such a message only to providers that say so.
        """
        return False

    # -- streams -----------------------------------------------------------

    @stream_from_generator
    async def stream_chat_with_system(
        self,
        system_prompt: str | None,
        message: str,
        model: str,
        temperature: float,
        options: StreamOptions = _DEFAULT_OPTIONS,
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream the answer to one message.

        The default delivers the whole non-streaming answer as one chunk,
        then the final chunk.
        """
        text = await self.chat_with_system(system_prompt, message, model, temperature)
        if text:
            chunk = StreamChunk(delta=text)
            yield chunk.with_token_estimate() if options.count_tokens else chunk
        yield StreamChunk.final()

    def stream_chat_with_history(
        self,
        messages: Sequence[ChatMessage],
        model: str,
        temperature: float,
        options: StreamOptions = _DEFAULT_OPTIONS,
    ) -> ChunkStream:
        """Stream the answer to a conversation.

        The default reduces the history with :func:`split_history` and calls
        :meth:`stream_chat_with_system`.
        """
        system, message = split_history(messages)
        return self.stream_chat_with_system(system, message, model, temperature, options)

    @stream_from_generator
    async def stream_chat(
        self,
        request: ChatRequest,
        model: str,
        temperature: float,
        options: StreamOptions = _DEFAULT_OPTIONS,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Stream the answer to a request as events.

        The default maps :meth:`stream_chat_with_history` chunks to events:
        ``reasoning`` to ``ReasoningDelta``, ``delta`` to ``TextDelta``, and
        the final chunk to ``UsageEvent`` (when it carries usage) and a
        ``Final`` with its finish reason, model and usage. A provider that
        cannot stream serves requests with tools through :meth:`chat` and
        emits its text, tool calls and usage as events.
        """
        if request.tools and not self.supports_streaming:
            for event in response_events(await self.chat(request, model, temperature)):
                yield event
            return
        async with self.stream_chat_with_history(
            request.messages, model, temperature, options
        ) as chunks:
            async for chunk in chunks:
                if chunk.reasoning:
                    yield ReasoningDelta(chunk.reasoning)
                if chunk.delta:
                    yield TextDelta(chunk.delta)
                if chunk.is_final:
                    if chunk.usage is not None:
                        yield UsageEvent(chunk.usage)
                    yield Final(
                        chunk.finish_reason, chunk.raw_finish_reason, chunk.model, chunk.usage
                    )
