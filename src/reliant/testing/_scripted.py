"""An in-process provider that follows a script and records its calls.

:class:`ScriptedProvider` answers each call with the next *outcome* of its
script (:class:`Reply`, :class:`Stream`, :class:`Fail`, :class:`Hang`,
:class:`Empty`) and records every call with virtual timestamps in
:attr:`ScriptedProvider.calls`. All waiting is done with the running loop's
sleep (trio's, or anyio's on asyncio), so under pytest-trio's
``autojump_clock`` (or a virtual-time asyncio loop such as looptime's) a
failover scenario that would take
minutes of wall time runs in milliseconds, and exact times can be asserted.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, NoReturn, TypeAlias, TypeVar

from .. import _backend
from .._exceptions import ProviderError, StreamError
from .._provider import Provider
from .._types import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    Final,
    FinishReason,
    StreamChunk,
    StreamEvent,
    StreamOptions,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolSpec,
    response_events,
)

__all__ = [
    "Empty",
    "Fail",
    "Hang",
    "Outcome",
    "Reply",
    "Script",
    "ScriptedCall",
    "ScriptedProvider",
    "Stream",
]

_T = TypeVar("_T")

_DEFAULT_OPTIONS = StreamOptions()


def _check_delay(name: str, value: float) -> None:
    # `not >=` also rejects NaN, which trio.sleep would choke on later, far
    # from the script line that caused it.
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer ``text`` after ``delay`` seconds.

    Non-streaming calls return the text (``chat``/``chat_with_tools`` return a
    ``ChatResponse`` carrying ``tool_calls``, ``usage``, ``reasoning`` as
    ``reasoning_content`` and ``finish_reason``). Chunk streams wait
    ``delay``, then yield the reasoning as one chunk (if any), the text as
    one chunk (if non-empty) and the final chunk; ``stream_chat`` yields
    ``ReasoningDelta`` (if any), ``TextDelta`` (if non-empty), one
    ``ToolCallEvent`` per tool call, a ``UsageEvent`` if ``usage`` is set,
    then ``Final``. The final chunk and ``Final`` carry ``finish_reason``
    and ``usage`` (``raw_finish_reason`` stays None: a scripted provider has
    no wire word of its own).

    ``finish_reason`` defaults to ``"tool_calls"`` when there are tool calls,
    else ``"stop"``; give ``"length"``, ``"content_filter"``, ... to script
    other endings.
    """

    text: str = "ok"
    delay: float = field(default=0.0, kw_only=True)
    tool_calls: Sequence[ToolCall] = field(default=(), kw_only=True)
    usage: TokenUsage | None = field(default=None, kw_only=True)
    reasoning: str | None = field(default=None, kw_only=True)
    finish_reason: FinishReason | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        _check_delay("delay", self.delay)
        object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        if self.finish_reason is None:
            natural: FinishReason = "tool_calls" if self.tool_calls else "stop"
            object.__setattr__(self, "finish_reason", natural)


@dataclass(frozen=True, slots=True)
class Stream:
    """Stream ``chunks`` with the given timing, then end, stop, or fail.

    Streams wait ``first_delay`` before the first item and ``gap`` between
    chunks, yield one ``StreamChunk(delta=c)`` (or ``TextDelta(c)`` from
    ``stream_chat``) per chunk, then raise ``error`` if given (a mid-stream
    failure), else yield the final chunk if ``terminated``, else just end (a
    cut stream). The final chunk and ``Final`` carry ``finish_reason``
    (default ``"stop"``). Non-streaming calls
    sleep the same total time (``first_delay + gap * (len(chunks) - 1)``)
    and return the joined chunks (a ``ChatResponse`` with ``finish_reason``
    from ``chat``) or raise ``error``.

    A stream that breaks mid-way, as a leaf provider reports it, is
    ``Stream(["a", "b"], error=StreamError("cut"))``, or
    :meth:`Stream.broken`, which also marks a break in the middle of a tool
    call (``StreamError.tool_call_in_progress``).
    """

    chunks: Sequence[str]
    first_delay: float = field(default=0.0, kw_only=True)
    gap: float = field(default=0.0, kw_only=True)
    error: Exception | None = field(default=None, kw_only=True)
    terminated: bool = field(default=True, kw_only=True)
    finish_reason: FinishReason = field(default="stop", kw_only=True)

    def __post_init__(self) -> None:
        if isinstance(self.chunks, str):
            raise TypeError("Stream chunks must be a sequence of strings, not one str")
        _check_delay("first_delay", self.first_delay)
        _check_delay("gap", self.gap)
        object.__setattr__(self, "chunks", tuple(self.chunks))

    @classmethod
    def broken(
        cls,
        chunks: Sequence[str],
        *,
        tool_call_in_progress: bool = False,
        message: str = "scripted stream broke after the first chunk",
        first_delay: float = 0.0,
        gap: float = 0.0,
    ) -> Stream:
        """``chunks``, then a ``StreamError`` as a leaf provider raises it for a broken stream.

        Args:
            chunks: The text delivered before the break.
            tool_call_in_progress: Set the error's ``tool_call_in_progress``:
                the break happened while a tool call's arguments were being
                received (such an answer can only be restarted, never continued).
            message: The error message.
            first_delay: Seconds before the first chunk.
            gap: Seconds between chunks (and before the break).
        """
        return cls(
            chunks,
            first_delay=first_delay,
            gap=gap,
            error=StreamError(message, tool_call_in_progress=tool_call_in_progress),
        )

    @property
    def total_delay(self) -> float:
        """Time from the start of the call to the last chunk (or the error/end)."""
        return self.first_delay + self.gap * max(len(self.chunks) - 1, 0)


@dataclass(frozen=True, slots=True)
class Fail:
    """Raise ``error`` after ``delay`` seconds.

    Non-streaming calls raise from the call; streams raise from the first
    ``__anext__`` (entering the ``async with`` always succeeds). The same
    instance is raised every time the outcome is used, with its traceback
    reset; use a callable script if each call needs a fresh instance.
    """

    error: Exception
    delay: float = field(default=0.0, kw_only=True)

    def __post_init__(self) -> None:
        _check_delay("delay", self.delay)


@dataclass(frozen=True, slots=True)
class Hang:
    """Never answer (``trio.sleep_forever``): for timeout and cancellation tests."""


@dataclass(frozen=True, slots=True)
class Empty:
    """A stream that ends without any item; non-streaming calls return ``""``."""


Outcome: TypeAlias = Reply | Stream | Fail | Hang | Empty
"""What one call does."""

Script: TypeAlias = (
    Sequence[Outcome] | Mapping[str, Sequence[Outcome]] | Callable[[int, str], Outcome]
)
"""A sequence of outcomes, a mapping model -> outcomes, or ``(call_index, model) -> outcome``."""

_OUTCOME_TYPES = (Reply, Stream, Fail, Hang, Empty)


def _checked(outcome: object, where: str) -> Outcome:
    if not isinstance(outcome, _OUTCOME_TYPES):
        raise TypeError(
            f"{where}: expected Reply, Stream, Fail, Hang or Empty, got {type(outcome).__name__}"
        )
    return outcome


def _checked_sequence(outcomes: Sequence[Outcome], where: str) -> tuple[Outcome, ...]:
    if isinstance(outcomes, str) or not isinstance(outcomes, Sequence):
        raise TypeError(f"{where}: expected a sequence of outcomes")
    if not outcomes:
        raise ValueError(f"{where}: the script needs at least one outcome")
    return tuple(_checked(o, f"{where}[{i}]") for i, o in enumerate(outcomes))


def _raise(error: Exception) -> NoReturn:
    # The same instance may be raised on every retry; without the reset each
    # raise would append its frames to the previous traceback.
    raise error.with_traceback(None)


@dataclass(slots=True, kw_only=True)
class ScriptedCall:
    """One recorded call; fields are filled in as the call progresses.

    Attributes:
        method: The Provider method called, e.g. ``"chat_with_system"``.
        model: The model requested.
        messages: The conversation as sent; for ``*_with_system`` and
            ``simple_chat``: the system message (if the prompt is not None)
            then the user message.
        tools: The tools on offer (empty when none).
        started_at: The loop's clock when the call started (for
            streams: when the ``async with`` was entered).
        finished_at: When the call returned or raised; for streams, when the
            stream was exhausted, failed, or closed, whichever came first.
            None while in flight.
        cancelled: True if the call was cancelled, or the stream was closed or
            cancelled, before its outcome was fully delivered. A stream counts
            as delivered once its last item has been handed out or its error
            raised.
        outcome: The outcome drawn from the script for this call.
        temperature: The temperature passed.
        options: The stream options passed (None for non-streaming calls).
    """

    method: str
    model: str
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    started_at: float
    finished_at: float | None = None
    cancelled: bool = False
    outcome: Outcome
    temperature: float = 0.0
    options: StreamOptions | None = None

    @property
    def duration(self) -> float | None:
        """``finished_at - started_at``, or None while the call is in flight."""
        return None if self.finished_at is None else self.finished_at - self.started_at


def _system_and_user(system_prompt: str | None, message: str) -> tuple[ChatMessage, ...]:
    user = ChatMessage.user(message)
    return (user,) if system_prompt is None else (ChatMessage.system(system_prompt), user)


@dataclass(slots=True)
class _Plan(Generic[_T]):
    """A stream outcome as items with the delay before each, then how it ends."""

    steps: list[tuple[float, _T]]
    tail_delay: float | None = None
    error: Exception | None = None
    hang: bool = False


def _reply_response(reply: Reply) -> ChatResponse:
    return ChatResponse(
        text=reply.text,
        tool_calls=reply.tool_calls,
        usage=reply.usage,
        reasoning_content=reply.reasoning,
        finish_reason=reply.finish_reason,
    )


def _final_chunk(finish_reason: FinishReason | None, usage: TokenUsage | None) -> StreamChunk:
    return StreamChunk(is_final=True, finish_reason=finish_reason, usage=usage)


def _plan(
    outcome: Outcome,
    text_item: Callable[[str], _T],
    reply_items: Callable[[Reply], list[_T]],
    final: Callable[[Stream], _T],
) -> _Plan[_T]:
    if isinstance(outcome, Reply):
        items = reply_items(outcome)  # ``final`` included
        return _Plan([(outcome.delay if i == 0 else 0.0, it) for i, it in enumerate(items)])
    if isinstance(outcome, Stream):
        steps = [
            (outcome.first_delay if i == 0 else outcome.gap, text_item(c))
            for i, c in enumerate(outcome.chunks)
        ]
        if outcome.error is None and outcome.terminated:
            steps.append((0.0 if steps else outcome.first_delay, final(outcome)))
            return _Plan(steps)
        return _Plan(steps, tail_delay=None if steps else outcome.first_delay, error=outcome.error)
    if isinstance(outcome, Fail):
        return _Plan([], tail_delay=outcome.delay, error=outcome.error)
    if isinstance(outcome, Hang):
        return _Plan([], hang=True)
    return _Plan([], tail_delay=0.0)


class _ScriptedStream(AbstractAsyncContextManager[AsyncGenerator[_T, None]], Generic[_T]):
    """The context manager a stream method returns.

    The call is recorded and its outcome drawn on entry, not when the method
    is called; leaving always closes the generator and settles the record,
    even when the stream was never iterated (an unstarted async generator's
    ``finally`` would never run).
    """

    def __init__(
        self,
        provider: ScriptedProvider,
        begin: Callable[[], ScriptedCall],
        make_plan: Callable[[Outcome], _Plan[_T]],
    ) -> None:
        self._provider = provider
        self._begin = begin
        self._make_plan = make_plan
        self._call: ScriptedCall | None = None
        self._generator: AsyncGenerator[_T, None] | None = None
        self._delivered = False

    async def __aenter__(self) -> AsyncGenerator[_T, None]:
        if self._call is not None:
            raise RuntimeError("a scripted stream can be entered only once")
        call = self._call = self._begin()
        self._provider._open_streams += 1
        self._generator = self._play(call, self._make_plan(call.outcome))
        return self._generator

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._call is not None and self._generator is not None
        try:
            await self._generator.aclose()
        finally:
            self._settle(self._call)
            self._provider._open_streams -= 1

    def _settle(self, call: ScriptedCall) -> None:
        if call.finished_at is None:
            call.finished_at = _backend.current_time()
            call.cancelled = not self._delivered

    async def _play(self, call: ScriptedCall, plan: _Plan[_T]) -> AsyncGenerator[_T, None]:
        try:
            last = len(plan.steps) - 1
            for i, (delay, item) in enumerate(plan.steps):
                await _backend.current().sleep(delay)
                if i == last and plan.error is None and not plan.hang:
                    # Closing right after the last item is a normal finish,
                    # not a cancellation: the consumer has everything.
                    self._delivered = True
                yield item
            if plan.hang:
                await _backend.current().sleep(math.inf)
            if plan.tail_delay is not None:
                await _backend.current().sleep(plan.tail_delay)
            self._delivered = True
            if plan.error is not None:
                _raise(plan.error)
        finally:
            self._settle(call)


class ScriptedProvider(Provider):
    """A provider that follows a script of outcomes and records every call.

    Args:
        script: One of

            * a sequence of outcomes, consumed one per call of any kind
              (streaming or not); the last outcome repeats once the sequence
              is exhausted;
            * a mapping ``model -> sequence of outcomes``, with one cursor per
              model (each repeating its last outcome); a model missing from
              the mapping fails with ``ProviderError(..., status_code=404)``;
            * a callable ``(call_index, model) -> outcome``, where
              ``call_index`` is the 0-based index of the call on this
              provider (``call_count`` before the call).
        name: Provider name, used in errors and ``repr``.
        streaming: Value of ``supports_streaming``.
        native_tools: Value of ``supports_native_tools``.
        tool_events: Value of ``supports_streaming_tool_events``.
        vision: Value of ``supports_vision``.
        supports_prefill: Value of ``supports_prefill`` (the script decides
            what a call with a trailing assistant message answers; the
            recorded ``messages`` show what was sent).

    Every call method records exactly one :class:`ScriptedCall` under its own
    name, including ``simple_chat`` (recorded as ``"simple_chat"``, not as the
    ``chat_with_system`` the base class would delegate to). Streams follow
    the script whatever the capability flags say: the flags only tell
    wrappers such as ``ReliableProvider`` what to expect. ``chat`` returns the
    scripted reply as is (no prompt-guided tool protocol).

    Example, under pytest-trio's ``autojump_clock``::

        async def test_slow_then_hung(autojump_clock):
            p = ScriptedProvider([Reply("hi", delay=2.0), Hang()])
            assert await p.simple_chat("q", "m", 0.0) == "hi"
            assert trio.current_time() == 2.0
            with trio.move_on_after(5.0):
                await p.simple_chat("q", "m", 0.0)
            assert p.calls[1].cancelled and p.calls[1].finished_at == 7.0

            async with p.stream_chat_with_system(None, "q", "m", 0.0) as chunks:
                with trio.move_on_after(1.0):
                    async for _ in chunks:
                        pass
            assert p.open_streams == 0
    """

    calls: list[ScriptedCall]
    """Every call so far, in the order the calls started."""

    def __init__(
        self,
        script: Script,
        *,
        name: str = "scripted",
        streaming: bool = True,
        native_tools: bool = False,
        tool_events: bool = False,
        vision: bool = False,
        supports_prefill: bool = False,
    ) -> None:
        self.name = name
        self.calls = []
        self._streaming = streaming
        self._native_tools = native_tools
        self._tool_events = tool_events
        self._vision = vision
        self._prefill = supports_prefill
        self._open_streams = 0
        self._sequence: tuple[Outcome, ...] | None = None
        self._by_model: dict[str, tuple[Outcome, ...]] | None = None
        self._function: Callable[[int, str], Outcome] | None = None
        self._cursors: dict[str | None, int] = {}
        if isinstance(script, Mapping):
            self._by_model = {
                model: _checked_sequence(outcomes, f"script[{model!r}]")
                for model, outcomes in script.items()
            }
        elif callable(script):
            self._function = script
        else:
            self._sequence = _checked_sequence(script, "script")

    def __repr__(self) -> str:
        return f"ScriptedProvider(name={self.name!r}, calls={len(self.calls)})"

    # -- records -------------------------------------------------------------

    @property
    def call_count(self) -> int:
        """Number of calls so far."""
        return len(self.calls)

    @property
    def models(self) -> list[str]:
        """The model of every call, in call order."""
        return [c.model for c in self.calls]

    @property
    def open_streams(self) -> int:
        """Streams entered and not yet closed (0 once every ``async with`` has exited)."""
        return self._open_streams

    # -- capabilities --------------------------------------------------------

    @property
    def supports_native_tools(self) -> bool:
        """The ``native_tools`` constructor argument."""
        return self._native_tools

    @property
    def supports_vision(self) -> bool:
        """The ``vision`` constructor argument."""
        return self._vision

    @property
    def supports_streaming(self) -> bool:
        """The ``streaming`` constructor argument."""
        return self._streaming

    @property
    def supports_streaming_tool_events(self) -> bool:
        """The ``tool_events`` constructor argument."""
        return self._tool_events

    @property
    def supports_prefill(self) -> bool:
        """The ``supports_prefill`` constructor argument."""
        return self._prefill

    # -- script --------------------------------------------------------------

    def _next_in(self, key: str | None, outcomes: tuple[Outcome, ...]) -> Outcome:
        index = self._cursors.get(key, 0)
        self._cursors[key] = index + 1
        return outcomes[min(index, len(outcomes) - 1)]

    def _draw(self, model: str) -> Outcome:
        if self._function is not None:
            return _checked(self._function(len(self.calls), model), "script()")
        if self._by_model is not None:
            outcomes = self._by_model.get(model)
            if outcomes is None:
                # A fresh error per call: this one is ours, not the user's.
                return Fail(
                    ProviderError(
                        f"{self.name}: model {model} not found",
                        provider=self.name,
                        status_code=404,
                    )
                )
            return self._next_in(model, outcomes)
        assert self._sequence is not None
        return self._next_in(None, self._sequence)

    def _begin(
        self,
        method: str,
        model: str,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] | None,
        temperature: float,
        options: StreamOptions | None = None,
    ) -> ScriptedCall:
        outcome = self._draw(model)
        call = ScriptedCall(
            method=method,
            model=model,
            messages=tuple(messages),
            tools=tuple(tools or ()),
            started_at=_backend.current_time(),
            outcome=outcome,
            temperature=temperature,
            options=options,
        )
        self.calls.append(call)
        return call

    async def _answer(self, call: ScriptedCall) -> ChatResponse:
        """Play a non-streaming outcome; the text is never None."""
        outcome = call.outcome
        try:
            if isinstance(outcome, Reply):
                await _backend.current().sleep(outcome.delay)
                return _reply_response(outcome)
            if isinstance(outcome, Stream):
                await _backend.current().sleep(outcome.total_delay)
                if outcome.error is not None:
                    _raise(outcome.error)
                return ChatResponse(
                    text="".join(outcome.chunks),
                    finish_reason=outcome.finish_reason,
                )
            if isinstance(outcome, Fail):
                await _backend.current().sleep(outcome.delay)
                _raise(outcome.error)
            if isinstance(outcome, Hang):
                await _backend.current().sleep(math.inf)
            # Empty still checkpoints, like every other outcome.
            await _backend.current().checkpoint()
            return ChatResponse(text="")
        except BaseException as exc:
            if not isinstance(exc, Exception):
                call.cancelled = True
            raise
        finally:
            call.finished_at = _backend.current_time()

    async def _answer_text(self, call: ScriptedCall) -> str:
        return (await self._answer(call)).text or ""

    # -- non-streaming calls ---------------------------------------------------

    async def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> str:
        """Play the next outcome; records ``"chat_with_system"``."""
        messages = _system_and_user(system_prompt, message)
        return await self._answer_text(
            self._begin("chat_with_system", model, messages, None, temperature)
        )

    async def simple_chat(self, message: str, model: str, temperature: float) -> str:
        """Play the next outcome; records ``"simple_chat"`` with the user message."""
        messages = _system_and_user(None, message)
        return await self._answer_text(
            self._begin("simple_chat", model, messages, None, temperature)
        )

    async def chat_with_history(
        self, messages: Sequence[ChatMessage], model: str, temperature: float
    ) -> str:
        """Play the next outcome; records ``"chat_with_history"``."""
        return await self._answer_text(
            self._begin("chat_with_history", model, messages, None, temperature)
        )

    async def chat_with_tools(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        model: str,
        temperature: float,
    ) -> ChatResponse:
        """Play the next outcome as a ``ChatResponse``; records ``"chat_with_tools"``."""
        return await self._answer(
            self._begin("chat_with_tools", model, messages, tools, temperature)
        )

    async def chat(self, request: ChatRequest, model: str, temperature: float) -> ChatResponse:
        """Play the next outcome as a ``ChatResponse``; records ``"chat"``."""
        return await self._answer(
            self._begin("chat", model, request.messages, request.tools, temperature)
        )

    # -- streams ---------------------------------------------------------------

    def _chunk_stream(
        self,
        method: str,
        model: str,
        messages: Sequence[ChatMessage],
        temperature: float,
        options: StreamOptions,
    ) -> _ScriptedStream[StreamChunk]:
        def text_chunk(text: str) -> StreamChunk:
            chunk = StreamChunk(delta=text)
            return chunk.with_token_estimate() if options.count_tokens else chunk

        def reply_chunks(reply: Reply) -> list[StreamChunk]:
            chunks = [StreamChunk(reasoning=reply.reasoning)] if reply.reasoning else []
            if reply.text:
                chunks.append(text_chunk(reply.text))
            chunks.append(_final_chunk(reply.finish_reason, reply.usage))
            return chunks

        def stream_final(stream: Stream) -> StreamChunk:
            return _final_chunk(stream.finish_reason, None)

        return _ScriptedStream(
            self,
            lambda: self._begin(method, model, messages, None, temperature, options),
            lambda outcome: _plan(outcome, text_chunk, reply_chunks, stream_final),
        )

    def stream_chat_with_system(
        self,
        system_prompt: str | None,
        message: str,
        model: str,
        temperature: float,
        options: StreamOptions = _DEFAULT_OPTIONS,
    ) -> AbstractAsyncContextManager[AsyncGenerator[StreamChunk, None]]:
        """Stream the next outcome as chunks; records ``"stream_chat_with_system"`` on entry."""
        messages = _system_and_user(system_prompt, message)
        return self._chunk_stream("stream_chat_with_system", model, messages, temperature, options)

    def stream_chat_with_history(
        self,
        messages: Sequence[ChatMessage],
        model: str,
        temperature: float,
        options: StreamOptions = _DEFAULT_OPTIONS,
    ) -> AbstractAsyncContextManager[AsyncGenerator[StreamChunk, None]]:
        """Stream the next outcome as chunks; records ``"stream_chat_with_history"`` on entry."""
        return self._chunk_stream("stream_chat_with_history", model, messages, temperature, options)

    def stream_chat(
        self,
        request: ChatRequest,
        model: str,
        temperature: float,
        options: StreamOptions = _DEFAULT_OPTIONS,
    ) -> AbstractAsyncContextManager[AsyncGenerator[StreamEvent, None]]:
        """Stream the next outcome as events; records ``"stream_chat"`` on entry."""

        def reply_events(reply: Reply) -> list[StreamEvent]:
            return response_events(_reply_response(reply))

        def stream_final(stream: Stream) -> StreamEvent:
            return Final(stream.finish_reason)

        def make_plan(outcome: Outcome) -> _Plan[StreamEvent]:
            return _plan(outcome, TextDelta, reply_events, stream_final)

        return _ScriptedStream(
            self,
            lambda: self._begin(
                "stream_chat", model, request.messages, request.tools, temperature, options
            ),
            make_plan,
        )
