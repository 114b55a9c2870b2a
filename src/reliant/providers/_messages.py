"""The seven call kinds of a provider whose wire takes a conversation, written once.

Every call kind of :class:`~reliant.Provider` (``chat_with_system``,
``chat_with_history``, ``chat_with_tools``, ``chat``, and the three stream
kinds) is the same request on the wire: a conversation, perhaps tools, a
model and a temperature, answered whole or streamed as chunks or as events.
A wire module that says so implements two methods, and this base maps every
call kind onto them:

- ``_answer(messages, tools, model, temperature)``: the whole answer;
- ``_streamed(messages, tools, model, temperature, events, count_tokens)``:
  the stream, an async generator of ``StreamChunk`` (or of events when
  ``events``), built (payload included) when the stream method is called.

A system prompt given to ``chat_with_system`` becomes a leading system
message, which each wire then puts where it belongs (``systemInstruction``,
``instructions``, ``system``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

from .._provider import ChunkStream, EventStream
from .._types import ChatMessage, ChatRequest, ChatResponse, StreamOptions, ToolSpec
from ._http import HTTPProvider

__all__ = ["MessagesProvider"]

_DEFAULT_OPTIONS = StreamOptions()


def _single(system_prompt: str | None, message: str) -> list[ChatMessage]:
    head = [] if system_prompt is None else [ChatMessage.system(system_prompt)]
    return [*head, ChatMessage.user(message)]


class MessagesProvider(HTTPProvider):
    """An HTTP provider whose wire takes a conversation (see the module docstring)."""

    async def _answer(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] | None,
        model: str,
        temperature: float,
    ) -> ChatResponse:
        raise NotImplementedError

    def _streamed(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] | None,
        model: str,
        temperature: float,
        events: bool,
        count_tokens: bool,
    ) -> AsyncGenerator[Any, None]:
        raise NotImplementedError

    # -- non-streaming -------------------------------------------------------------

    async def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> str:
        """Answer one message under an optional system prompt."""
        return (
            await self._answer(_single(system_prompt, message), None, model, temperature)
        ).text or ""

    async def chat_with_history(
        self, messages: Sequence[ChatMessage], model: str, temperature: float
    ) -> str:
        """Answer a conversation."""
        return (await self._answer(messages, None, model, temperature)).text or ""

    async def chat_with_tools(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        model: str,
        temperature: float,
    ) -> ChatResponse:
        """Answer a conversation with tools on offer."""
        return await self._answer(messages, tools, model, temperature)

    async def chat(self, request: ChatRequest, model: str, temperature: float) -> ChatResponse:
        """Answer a request (tools are native)."""
        return await self._answer(request.messages, request.tools, model, temperature)

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
        messages = _single(system_prompt, message)
        return aclosing(
            self._streamed(messages, None, model, temperature, False, options.count_tokens)
        )

    def stream_chat_with_history(
        self,
        messages: Sequence[ChatMessage],
        model: str,
        temperature: float,
        options: StreamOptions = _DEFAULT_OPTIONS,
    ) -> ChunkStream:
        """Stream the answer to a conversation as ``StreamChunk``s."""
        return aclosing(
            self._streamed(messages, None, model, temperature, False, options.count_tokens)
        )

    def stream_chat(
        self,
        request: ChatRequest,
        model: str,
        temperature: float,
        options: StreamOptions = _DEFAULT_OPTIONS,
    ) -> EventStream:
        """Stream the answer to a request as events (text, reasoning, tool calls, usage, final)."""
        return aclosing(
            self._streamed(
                request.messages, request.tools, model, temperature, True, options.count_tokens
            )
        )
