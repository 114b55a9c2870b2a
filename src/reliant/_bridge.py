"""The streaming bridge: failover before the first item, forwarding after it.

Shape
-----
``ReliableProvider.stream_*`` returns a :class:`StreamContext`. Entering it
opens a nursery in the caller's task and starts one *bridge task*; the caller
gets a :class:`ReliableStream` that reads from a bounded memory channel the
bridge fills. Leaving the context (normally, by exception, by ``break`` or by
cancellation) cancels the bridge and waits for it, so no task and no upstream
connection outlives the ``async with``.

Algorithm of the bridge task
----------------------------
::

    for slot in planner.attempts(...):              # the one failover state machine
        with CancelScope(deadline=now + first_chunk_timeout) as scope:
            async with open upstream stream as items:   # connect + headers are
                first = await items.__anext__()         # inside the deadline
                # first item: commit -- no failover can replay what the
                # caller is about to see
                slot.succeeded(); scope.deadline = idle deadline
                forward first and every further item into the channel,
                moving the deadline forward after each item (idle timeout)
        before commit: StopAsyncIteration -> EmptyStream, deadline -> retryable
                       timeout error, any Exception -> slot.failed(err)
        after commit:  idle deadline or upstream Exception -> StreamError, end

The whole bridge runs inside ``self._scope``; the consumer's ``aclose()``
cancels it. That single cancel scope is what races every await of the bridge
(connect, first item, backoff sleep inside the planner, a blocked send to a
slow consumer) against the consumer letting go: the bridge stops at whatever
it awaits and the planner hands out no further attempt.

The upstream context is entered *inside* the per-attempt cancel scope and
exited before it, so scopes always nest (a nested ``ReliableProvider``'s own
nursery inside the upstream context stays correctly nested).

Hand-off cost
-------------
A trio memory channel costs ~14 us per item when every send and every
receive blocks. Both ends therefore try the non-blocking operation first
(``send_nowait``/``receive_nowait``) and only block when the buffer is full or
empty. When the upstream delivers several items per network read, the bridge
queues them all without a task switch and the consumer drains them the same
way; a task switch happens once per read, not once per item. The buffer is
bounded (:data:`BUFFER_SIZE`), so a slow consumer applies backpressure to the
upstream instead of growing memory.

Errors travel out of band: the bridge stores the terminal exception on the
stream and closes the channel; the consumer raises it from ``__anext__`` as
a plain exception, never an ``ExceptionGroup``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Generic, NoReturn, TypeVar

import trio

from ._exceptions import NoStreamingProviderError, ProviderError, StreamError
from ._failover import (
    STREAM_FAILOVER_HEADER,
    EmptyStream,
    OnlyEmptyStreams,
    Planner,
    Slot,
)
from ._provider import Provider
from ._sanitize import sanitize_api_error
from ._types import ChatMessage

__all__ = ["BUFFER_SIZE", "BridgeSpec", "ReliableStream", "StreamContext"]

T = TypeVar("T")

BUFFER_SIZE = 32
"""Items the bridge may run ahead of the consumer."""

OpenUpstream = Callable[
    [Provider, str, Sequence[ChatMessage] | None],
    AbstractAsyncContextManager[AsyncIterator[T]],
]


class BridgeSpec(Generic[T]):
    """Everything one stream request needs; built by ``ReliableProvider``.

    Attributes:
        planner: The failover planner of the ``ReliableProvider``.
        candidates: Streaming-capable providers, in priority order.
        model: The requested model.
        messages: The conversation (None for system-prompt streams).
        open_upstream: ``(provider, model_id, messages) -> stream context``.
        no_provider_message: Message of ``NoStreamingProviderError``.
        enabled: ``StreamOptions.enabled``.
        first_chunk_timeout: Seconds allowed for connect + headers + first item.
        idle_timeout: Longest gap between items after commit.
        fallback: When set, serves the request without streaming after every
            streaming candidate failed before its first item.
    """

    __slots__ = (
        "candidates",
        "enabled",
        "fallback",
        "first_chunk_timeout",
        "idle_timeout",
        "messages",
        "model",
        "no_provider_message",
        "open_upstream",
        "planner",
    )

    def __init__(
        self,
        *,
        planner: Planner,
        candidates: Sequence[tuple[str, Provider]],
        model: str,
        messages: Sequence[ChatMessage] | None,
        open_upstream: OpenUpstream[T],
        no_provider_message: str,
        enabled: bool,
        first_chunk_timeout: float | None,
        idle_timeout: float | None,
        fallback: Callable[[], Awaitable[Sequence[T]]] | None,
    ) -> None:
        self.planner = planner
        self.candidates = tuple(candidates)
        self.model = model
        self.messages = messages
        self.open_upstream = open_upstream
        self.no_provider_message = no_provider_message
        self.enabled = enabled
        self.first_chunk_timeout = first_chunk_timeout
        self.idle_timeout = idle_timeout
        self.fallback = fallback


class ReliableStream(Generic[T]):
    """The consumer's end of a reliable stream: an async iterator with ``aclose()``.

    Failures are raised from ``async for`` as plain exceptions of the reliant
    tree; after one the iterator is finished.
    """

    __slots__ = ("_error", "_finished", "_recv", "_scope", "_stopped")

    def __init__(
        self, recv: trio.MemoryReceiveChannel[T], scope: trio.CancelScope, stopped: trio.Event
    ) -> None:
        self._recv = recv
        self._scope = scope
        self._stopped = stopped
        self._error: Exception | None = None
        self._finished = False

    def __aiter__(self) -> ReliableStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        # Fast path: an item is already buffered, take it without a task switch.
        try:
            return self._recv.receive_nowait()
        except trio.WouldBlock:
            pass
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self._end()
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self._end()

    def _end(self) -> NoReturn:
        error, self._error = self._error, None
        self._finished = True
        if error is not None:
            raise error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop the bridge now and wait until it has closed its upstream."""
        self._finished = True
        self._scope.cancel()
        self._recv.close()
        await self._stopped.wait()

    @property
    def closed(self) -> bool:
        """True once the stream ended, failed or was closed."""
        return self._finished or self._scope.cancel_called


class StreamContext(Generic[T]):
    """``async with`` entry point of a reliable stream (an ``open_*``-style owner).

    Entering starts the bridge task in a nursery; leaving cancels it and waits,
    so nothing outlives the block. An exception raised by the caller inside
    the block comes out unchanged.
    """

    __slots__ = ("_nursery_cm", "_spec", "_stream")

    def __init__(self, spec: BridgeSpec[T]) -> None:
        self._spec = spec
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._stream: ReliableStream[T] | None = None

    def __aiter__(self) -> None:
        raise TypeError(
            "a reliant stream must be entered first: "
            "`async with provider.stream_chat(...) as events: async for e in events: ...`"
        )

    async def __aenter__(self) -> ReliableStream[T]:
        if self._nursery_cm is not None:
            raise RuntimeError("a stream context can be entered only once")
        send, recv = trio.open_memory_channel[T](BUFFER_SIZE)
        scope = trio.CancelScope()
        stopped = trio.Event()
        stream = ReliableStream(recv, scope, stopped)
        self._nursery_cm = trio.open_nursery()
        nursery = await self._nursery_cm.__aenter__()
        nursery.start_soon(_bridge, self._spec, send, stream, scope, stopped)
        self._stream = stream
        return stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._nursery_cm is not None and self._stream is not None
        self._stream._scope.cancel()
        self._stream._recv.close()
        # The caller's exception is deliberately not fed into the nursery:
        # the nursery would wrap it in an ExceptionGroup. The bridge never
        # raises, so the nursery can only end with cancellation.
        try:
            await self._nursery_cm.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            if exc is not None:
                return  # the caller's own exception wins, unchanged
            cancelled, rest = group.split(trio.Cancelled)
            if rest is not None or cancelled is None:
                raise
            raise _first_leaf(cancelled) from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _bridge(
    spec: BridgeSpec[T],
    send: trio.MemorySendChannel[T],
    stream: ReliableStream[T],
    scope: trio.CancelScope,
    stopped: trio.Event,
) -> None:
    try:
        with scope, send:
            try:
                await _run(spec, send, stream)
            except Exception as err:
                stream._error = err
    finally:
        stopped.set()


async def _put(send: trio.MemorySendChannel[T], item: T) -> None:
    try:
        send.send_nowait(item)
    except trio.WouldBlock:
        await send.send(item)


async def _run(
    spec: BridgeSpec[T], send: trio.MemorySendChannel[T], stream: ReliableStream[T]
) -> None:
    if not spec.enabled:
        raise NoStreamingProviderError(spec.no_provider_message)
    if not spec.candidates:
        if spec.fallback is None:
            raise NoStreamingProviderError(spec.no_provider_message)
        for item in await spec.fallback():
            await _put(send, item)
        return
    run = spec.planner.attempts(
        model=spec.model,
        messages=spec.messages,
        candidates=spec.candidates,
        header=STREAM_FAILOVER_HEADER,
    )
    async for slot in run:
        if await _attempt(spec, slot, send, stream):
            return
    failure = run.failure()
    if isinstance(failure, OnlyEmptyStreams):
        return  # every candidate was empty and none failed: a clean, empty answer
    if spec.fallback is None:
        raise failure
    try:
        items = await spec.fallback()
    except Exception as err:
        raise err from failure
    for item in items:
        await _put(send, item)


async def _attempt(
    spec: BridgeSpec[T], slot: Slot, send: trio.MemorySendChannel[T], stream: ReliableStream[T]
) -> bool:
    """Run one attempt; True once it committed (whatever happened after)."""
    committed = False
    idle = spec.idle_timeout
    first_deadline = (
        math.inf
        if spec.first_chunk_timeout is None
        else trio.current_time() + spec.first_chunk_timeout
    )
    try:
        with trio.CancelScope(deadline=first_deadline) as attempt_scope:
            async with spec.open_upstream(slot.provider, slot.model_id, slot.messages) as items:
                try:
                    first = await items.__anext__()
                except StopAsyncIteration:
                    raise EmptyStream() from None
                committed = True
                slot.succeeded()
                attempt_scope.deadline = math.inf
                await _put(send, first)
                await _forward(items, send, attempt_scope, idle)
    except Exception as err:
        if not committed:
            slot.failed(err)
            return False
        stream._error = _broken(slot, err)
        return True
    if attempt_scope.cancelled_caught:
        if not committed:
            assert spec.first_chunk_timeout is not None
            slot.failed(
                ProviderError(
                    f"{slot.name}: no first chunk within {spec.first_chunk_timeout:g} s "
                    f"(model {slot.model_id}); timed out",
                    provider=slot.name,
                )
            )
            return False
        stream._error = StreamError(
            f"stream from {slot.name} (model {slot.model_id}) stalled: "
            f"no data for {idle:g} s after it started"
        )
    return committed


async def _forward(
    items: AsyncIterator[T],
    send: trio.MemorySendChannel[T],
    scope: trio.CancelScope,
    idle: float | None,
) -> None:
    # The idle deadline covers waiting for the upstream only, never waiting
    # for a slow consumer: it is lifted while a send blocks.
    if idle is None:
        async for item in items:
            await _put(send, item)
        return
    now = trio.current_time
    while True:
        scope.deadline = now() + idle
        try:
            item = await items.__anext__()
        except StopAsyncIteration:
            return
        try:
            send.send_nowait(item)
        except trio.WouldBlock:
            scope.deadline = math.inf
            await send.send(item)


def _broken(slot: Slot, err: Exception) -> StreamError:
    if isinstance(err, StreamError):
        return err
    detail = sanitize_api_error(str(err) or type(err).__name__)
    broken = StreamError(
        f"stream from {slot.name} (model {slot.model_id}) broke after it started: {detail}"
    )
    broken.__cause__ = err
    return broken
