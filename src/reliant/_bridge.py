r"""The streaming bridge: failover before the first item, forwarding after it.

Shape
-----
``ReliableProvider.stream_*`` returns a :class:`StreamContext`. Entering it
opens a nursery in the caller's task and starts one *bridge task*; the caller
gets a :class:`ReliableStream` that reads from a bounded in-memory buffer the
bridge fills. Leaving the context (normally, by exception, by ``break`` or by
cancellation) cancels the bridge and waits for it, so no task and no upstream
connection outlives the ``async with``.

Algorithm of the bridge task
----------------------------
::

    for slot in planner.attempts(...):              # the one failover state machine
        with CancelScope(deadline=now + first_chunk_timeout) as scope:
            # (the deadline is set when the upstream first suspends the
            # bridge, which is when trio could first deliver it)
            async with open upstream stream as items:   # connect + headers are
                first = await items.__anext__()         # inside the deadline
                # first item: commit -- no failover can replay what the
                # caller is about to see
                slot.succeeded(); scope.deadline = inf
                forward first and every further item into the buffer,
                noting "now + idle_timeout" after each item; a waiting
                consumer arms that instant as the scope's deadline
        before commit: StopAsyncIteration -> EmptyStream, deadline -> retryable
                       timeout error, any Exception -> slot.failed(err)
        after commit:  upstream Exception or idle deadline -> StreamError, end

The consumer's ``aclose()`` cancels whichever cancel scope the bridge is
awaiting in, and a flag makes the bridge stop at its next step: an attempt's
own scope (the one that carries the first-chunk and idle deadlines), or, for
the awaits between attempts that can block (a backoff sleep, a shared health
store, a hedged race, the non-streaming fallback), a scope of their own
(``_guarded``). That races every await of the bridge (connect, first item,
backoff sleep inside the planner, a blocked send to a slow consumer) against
the consumer letting go: the bridge stops at whatever it awaits and the
planner hands out no further attempt. A healthy stream so enters exactly one
cancel scope besides its nursery's.

The upstream context is entered *inside* the per-attempt cancel scope and
exited before it, so scopes always nest (a nested ``ReliableProvider``'s own
nursery inside the upstream context stays correctly nested).

Hand-off cost
-------------
Items travel from the bridge to the consumer through a bounded buffer built
for exactly one producer and one consumer: a ``collections.deque`` plus two
one-task waiters (the backend's ``Waiter``, see :mod:`reliant._backend`: on
trio a ``wait_task_rescheduled`` and a ``reschedule``, as trio's
``ParkingLot`` keeps an ordered dict of waiters, which one task does not
need; on asyncio a ``Future``), one where the consumer waits for data and
one where the bridge waits for room. Measured on this machine
(``benchmarks/bench_stream.py``, back-to-back upstream), trio's general memory
channel made the bridge cost 1.03 us per item against 0.53 us for this
buffer: its ``send_nowait`` and ``receive_nowait`` are KI-protected wrappers,
and an empty channel is detected by raising ``WouldBlock``; against the
provider's own ~6 us per chunk that difference decides the 1.10x target.
Here an item that is already buffered
costs a ``popleft``, and a task switch happens only when one side actually has
to wait: once per network read, not once per item. The buffer holds at most
:data:`BUFFER_SIZE` items, so a slow consumer applies backpressure to the
upstream instead of growing memory; the bridge is woken again only when the
consumer has drained half of it, so a slow consumer does not cause a task
switch per item either.

After the first item the bridge waits once until the waiting consumer took
it, but only if the upstream made the bridge wait on the way (it is doing
I/O, and one network read may have brought a burst the bridge would
otherwise parse and buffer first); see ``_noting_waits``.

Backends: the stream binds the running loop's primitives once, when it is
entered (:func:`reliant._backend.current`): trio's own on trio, anyio's on
asyncio (cancel scopes with trio's level cancellation, a task group), so
every guarantee above holds on both, and trio pays one attribute look-up.

Errors travel out of band: the bridge stores the terminal exception on the
stream and marks it done; the consumer raises it from ``__anext__``, after
every item delivered before it, as a plain exception, never an
``ExceptionGroup``.
"""

from __future__ import annotations

import math
import types
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

from ._backend import Backend
from ._backend import current as current_backend
from ._exceptions import ContentFilterError, NoStreamingProviderError, ProviderError, StreamError
from ._failover import (
    STREAM_FAILOVER_HEADER,
    EmptyStream,
    FailoverRun,
    OnlyEmptyStreams,
    Planner,
    Slot,
)
from ._provider import Provider
from ._sanitize import sanitize_api_error
from ._types import ChatMessage, Final, StreamChunk

if TYPE_CHECKING:
    # Loaded on first use (hedging, mid-stream recovery, events).
    from ._hedge import Hedger
    from ._observe import Tally
    from ._recovery import RecoverySpec, RecoveryState

__all__ = ["BUFFER_SIZE", "BridgeSpec", "OpenUpstream", "ReliableStream", "StreamContext"]

T = TypeVar("T")
R = TypeVar("R")

BUFFER_SIZE = 256
"""Items the bridge may run ahead of the consumer (about one network read's worth)."""

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
        prompt: What routing reads of a system-prompt stream: (system prompt, message).
        open_upstream: ``(provider, model_id, messages) -> stream context``.
        no_provider_message: Message of ``NoStreamingProviderError``.
        enabled: ``StreamOptions.enabled``.
        first_chunk_timeout: Seconds allowed for connect + headers + first item.
        idle_timeout: Longest gap between items after commit.
        fallback: When set, serves the request without streaming after every
            streaming candidate failed before its first item.
        recovery: How a committed stream that breaks is recovered (None:
            it is a ``StreamError``, the default ``mid_stream="error"``).
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
        "prompt",
        "recovery",
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
        recovery: RecoverySpec[T] | None = None,
        prompt: Sequence[str | None] = (),
    ) -> None:
        self.recovery = recovery
        self.prompt = prompt
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
    tree; after one the iterator is finished. An item that is already
    buffered is returned without a checkpoint (see "Hand-off cost" above);
    waiting for one is a checkpoint as usual.
    """

    __slots__ = (
        "_armed",
        "_be",
        "_buffer",
        "_data",
        "_detached",
        "_done",
        "_error",
        "_exited",
        "_finished",
        "_idle_at",
        "_idle_scope",
        "_reader_parked",
        "_room",
        "_scope",
        "_stopped",
        "_writer_parked",
    )

    def __init__(self, be: Backend) -> None:
        self._be = be  # the running loop's primitives (see _backend), bound once
        self._buffer: deque[T] = deque()
        self._data = be.Waiter()  # the consumer waits here for items
        self._room = be.Waiter()  # the bridge waits here for space
        # Who is parked, as plain flags: asking a ParkingLot (its __bool__)
        # twice per item was a measurable share of the hot path.
        self._reader_parked = False
        self._writer_parked = False
        # The cancel scope the bridge is awaiting in: the current attempt's,
        # or one around a backoff sleep or a hedged race (see "Detaching").
        self._scope: Any = None  # a trio or anyio CancelScope
        self._detached = False  # the consumer let go: the bridge must stop
        self._exited = False  # the bridge task has finished
        self._stopped: Any = None  # an Event made by aclose() if it must wait
        self._error: Exception | None = None
        self._done = False  # the bridge will put nothing more
        self._finished = False  # the consumer has seen the end
        # After commit: the instant the upstream has been silent for the idle
        # timeout, and the committed attempt's cancel scope (see __anext__).
        self._idle_at = math.inf
        self._idle_scope: Any = None
        self._armed = False  # the consumer set the idle deadline on _idle_scope

    def __aiter__(self) -> ReliableStream[T]:
        return self

    async def __anext__(self) -> T:
        buffer = self._buffer
        while not buffer:
            if self._done or self._finished:
                self._end()
            # Wait, written out here (a coroutine per wait was a measurable
            # share of a short stream). The idle timeout is armed only while
            # the consumer waits. The bridge notes "last item time + idle" per
            # item (a clock read and a float store); the consumer, before it
            # parks, copies that instant onto the committed attempt's cancel
            # scope as its deadline, and the bridge lifts the deadline again
            # when it hands the waiting consumer an item. So the deadline
            # moves twice per *wait* (~1.4 us each) instead of once per item,
            # and no timer task is needed. If the upstream stays silent, the
            # deadline cancels the bridge's read at exactly last item + idle,
            # and the bridge ends the stream with StreamError. A consumer busy
            # elsewhere is not waiting, and a bridge blocked on a full buffer
            # marks idle_at as inf, so slow consumers never count.
            scope = self._idle_scope
            if scope is not None and self._idle_at != math.inf:
                scope.deadline = self._idle_at
                self._armed = True
            self._reader_parked = True
            try:
                await self._data.wait()
            finally:
                self._reader_parked = False
        item = buffer.popleft()
        if self._writer_parked and len(buffer) <= BUFFER_SIZE // 2:
            self._writer_parked = False
            self._room.wake()
        return item

    def _end(self) -> NoReturn:
        error, self._error = self._error, None
        self._finished = True
        if error is not None:
            raise error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop the bridge now and wait until it has closed its upstream.

        Afterwards iteration just stops: buffered items and an unread
        failure are dropped, as the caller said it wants nothing more.
        """
        self._detach()
        if self._exited:
            await self._be.checkpoint()
            return
        if self._stopped is None:
            self._stopped = self._be.Event()
        await self._stopped.wait()

    def _detach(self) -> None:
        self._finished = True
        self._detached = True
        self._buffer.clear()
        self._error = None
        if not self._done and self._scope is not None:
            # A bridge that already put its end has nothing left to stop;
            # cancelling its (exited) scope would only cost a deadline update.
            self._scope.cancel()

    @property
    def closed(self) -> bool:
        """True once the stream ended, failed or was closed."""
        return self._finished or self._detached

    # -- the bridge's side ---------------------------------------------------

    def _watch_idle(self, idle: float, scope: Any) -> None:
        # On asyncio the consumer's per-wait deadline is a lazy one (see
        # reliant._backend._LazyIdleDeadline); on trio the scope itself.
        if self._idle_scope is not None:  # a recovered stream's earlier attempt
            self._be.release_idle(self._idle_scope)
        self._idle_scope = self._be.idle_deadline(scope) if idle != math.inf else scope
        self._idle_at = self._be.current_time() + idle

    def _offer(self, item: T) -> bool:
        """Put ``item`` if there is room (no coroutine); False if the bridge must wait."""
        if len(self._buffer) >= BUFFER_SIZE:
            return False
        self._buffer.append(item)
        if self._reader_parked:
            self._wake_reader()
        return True

    async def _put(self, item: T) -> None:
        while len(self._buffer) >= BUFFER_SIZE:
            self._writer_parked = True
            try:
                await self._room.wait()
            finally:
                self._writer_parked = False
        self._buffer.append(item)
        if self._reader_parked:
            self._wake_reader()

    async def _handed_over(self) -> None:
        # Time to first token: after the first item, wait until the waiting
        # consumer has taken it. Without this the bridge would go on reading
        # whatever the upstream already sent (a whole burst of chunks) before
        # the scheduler runs the consumer; measured over loopback that delayed
        # the first token by ~0.4 ms (1.3x the provider called directly). It
        # costs one scheduler round trip per stream, once.
        if self._buffer and not self._finished:
            self._writer_parked = True
            try:
                await self._room.wait()
            finally:
                self._writer_parked = False

    def _wake_reader(self) -> None:
        # The waiting consumer armed the idle deadline (see __anext__): lift it,
        # since an item (or the end) has come.
        self._reader_parked = False
        if self._armed:
            self._armed = False
            assert self._idle_scope is not None
            self._idle_scope.deadline = math.inf
        self._data.wake()

    def _close(self, error: Exception | None = None) -> None:
        if error is not None and not self._finished:
            self._error = error
        self._done = True
        if self._idle_scope is not None:
            self._be.release_idle(self._idle_scope)
        if self._reader_parked:
            self._wake_reader()


class StreamContext(Generic[T]):
    """``async with`` entry point of a reliable stream (an ``open_*``-style owner).

    Entering starts the bridge task in a nursery; leaving cancels it and waits,
    so nothing outlives the block. An exception raised by the caller inside
    the block comes out unchanged.
    """

    __slots__ = ("_nursery_cm", "_spec", "_stream")

    def __init__(self, spec: BridgeSpec[T]) -> None:
        self._spec = spec
        self._nursery_cm: AbstractAsyncContextManager[Any] | None = None
        self._stream: ReliableStream[T] | None = None

    def __aiter__(self) -> None:
        raise TypeError(
            "a reliant stream must be entered first: "
            "`async with provider.stream_chat(...) as events: async for e in events: ...`"
        )

    async def __aenter__(self) -> ReliableStream[T]:
        if self._nursery_cm is not None:
            raise RuntimeError("a stream context can be entered only once")
        be = current_backend()
        stream: ReliableStream[T] = ReliableStream(be)
        self._nursery_cm = be.open_stream_nursery()
        nursery = await self._nursery_cm.__aenter__()
        # Named up front: without a name trio formats one from the
        # function's module and qualname on every spawn.
        nursery.start_soon(_bridge, self._spec, stream, name=_BRIDGE_TASK)
        self._stream = stream
        return stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._nursery_cm is not None and self._stream is not None
        self._stream._detach()
        # The caller's exception is deliberately not fed into the nursery:
        # the nursery would wrap it in an ExceptionGroup. The bridge never
        # raises, so the nursery can only end with cancellation.
        try:
            await self._nursery_cm.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            if exc is not None:
                return  # the caller's own exception wins, unchanged
            cancelled, rest = group.split(self._stream._be.Cancelled)
            if rest is not None or cancelled is None:
                raise
            raise _first_leaf(cancelled) from None


_BRIDGE_TASK = "reliant stream bridge"


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _bridge(spec: BridgeSpec[T], stream: ReliableStream[T]) -> None:
    error: Exception | None = None
    try:
        await _run(spec, stream)
    except _Detached:
        pass
    except Exception as err:
        error = err
    finally:
        stream._close(error)
        stream._exited = True
        if stream._stopped is not None:
            stream._stopped.set()


async def _run(spec: BridgeSpec[T], stream: ReliableStream[T]) -> None:
    if not spec.enabled:
        raise NoStreamingProviderError(spec.no_provider_message)
    if not spec.candidates:
        if spec.fallback is None:
            raise NoStreamingProviderError(spec.no_provider_message)
        await _guarded(stream, _serve_fallback, spec.fallback, stream)
        return
    pool: Sequence[tuple[str, Provider]] = spec.candidates
    decision: Any = None
    if spec.planner.router is not None:  # no coroutine per stream without routing
        pool, decision = await spec.planner.routed(pool, spec.model, spec.messages, spec.prompt)
    run = spec.planner.attempts(
        model=spec.model,
        messages=spec.messages,
        candidates=pool,
        header=STREAM_FAILOVER_HEADER,
        primary=None if decision is None else decision.chosen,
    )
    rec: RecoveryState[T] | None = None
    if spec.recovery is not None:
        from ._recovery import RecoveryState

        rec = RecoveryState(spec.recovery.mode, spec.recovery.max_recoveries, spec.recovery.ops)
    broken: StreamError | None = None  # the break being recovered, if any
    obs = run.obs
    if obs is not None:
        obs.request_started(True, decision)
    error: BaseException | None = None
    exhausted = False
    try:
        hedger = spec.planner.hedger
        while True:
            try:
                if run.immediate:  # no backoff to sleep: nothing to guard
                    slot = await run.__anext__()
                else:
                    slot = await _guarded(stream, run.__anext__)
            except StopAsyncIteration:
                break
            try:
                if hedger is None:
                    done = await _attempt(spec, slot, stream, run, rec)
                else:
                    done = await _guarded(stream, _hedged, spec, slot, stream, run, rec, hedger)
                if done:
                    return
                broken = None
            except _Broke as brk:
                assert rec is not None and spec.recovery is not None
                broken = brk.error
                _recover(spec.recovery, rec, run, slot, brk)
        exhausted = True
    except BaseException as err:
        error = err
        raise
    finally:
        if run.unsettled:
            await run.aclose()
        if decision is not None and spec.planner.unsettled:
            await spec.planner.settle()
        if obs is not None and not exhausted:
            run.finish(error)  # served, failed after commit, or cancelled
    failure = run.failure()
    if broken is not None or (rec is not None and (rec.continuing or rec.restart_pending)):
        # Text was delivered and no candidate could finish the answer: the
        # caller gets the break, never a partial answer passed off as whole.
        unrecovered = StreamError(f"stream broke mid-way and could not be recovered: {failure}")
        if obs is not None:
            run.finish(unrecovered)
        raise unrecovered from failure
    if obs is not None:
        # A streaming failure ends this request; a non-streaming fallback
        # below is a request of its own (its own events and record).
        run.finish(None if isinstance(failure, OnlyEmptyStreams) else failure)
    if isinstance(failure, OnlyEmptyStreams):
        # Every candidate was empty and none failed: a clean, empty answer,
        # with the bare final one of them sent (as that leaf alone would).
        if failure.final is not None:
            await _guarded(stream, stream._put, failure.final)
        return
    if spec.fallback is None:
        raise failure
    try:
        await _guarded(stream, _serve_fallback, spec.fallback, stream)
    except _Detached:
        raise
    except Exception as err:
        raise err from failure


async def _serve_fallback(
    fallback: Callable[[], Awaitable[Sequence[T]]] | None, stream: ReliableStream[T]
) -> None:
    assert fallback is not None
    for item in await fallback():
        await stream._put(item)


class _Detached(BaseException):
    """The consumer let go of the stream: the bridge stops, quietly (like a cancellation)."""


async def _guarded(stream: ReliableStream[Any], fn: Callable[..., Awaitable[R]], *args: Any) -> R:
    # Detaching: the consumer's aclose() cancels whatever scope the bridge is
    # awaiting in. An attempt registers its own scope (the one that carries
    # the first-chunk and idle deadlines); every other await of the bridge
    # that can block (a backoff sleep, a shared health store, a hedged race,
    # the non-streaming fallback) runs in a scope of its own, registered
    # here. So the bridge needs no scope around all of it, which saved one
    # cancel scope per stream; a healthy stream enters exactly one.
    with stream._be.CancelScope() as scope:
        stream._scope = scope
        if stream._detached:
            raise _Detached()
        return await fn(*args)
    raise _Detached()  # reached only when the scope caught the detach's cancellation


class _Broke(Exception):
    """A committed attempt broke and the request may recover (mid_stream is not "error")."""

    def __init__(self, error: StreamError, cause: Exception) -> None:
        super().__init__(str(error))
        self.error = error
        self.cause = cause


def _recover(
    spec: RecoverySpec[T], rec: RecoveryState[T], run: FailoverRun, slot: Slot, brk: _Broke
) -> None:
    # The planner records the break and moves on; then the mode for the next
    # attempt: continue only if a remaining candidate can take a prefill.
    after = len(rec.text)
    run.recover(slot, brk.cause, after_chars=after, mode=spec.mode)
    can_continue = any(p.supports_prefill for p in run.remaining())
    if rec.plan(brk.cause, can_continue) == "continue":
        run.skip_if = _cannot_continue
    else:
        run.skip_if = None
        run.recovery_mode("restart")


def _cannot_continue(provider: Provider) -> bool:
    return not provider.supports_prefill


async def _hedged(
    spec: BridgeSpec[T],
    slot: Slot,
    stream: ReliableStream[T],
    run: FailoverRun,
    rec: RecoveryState[T] | None,
    hedger: Hedger,
) -> bool:
    # The same attempt, raced against hedges (see _hedge): each racer claims
    # the win at its first item, and only the winner forwards.
    async def attempt(racer: Slot, claim: Callable[[], bool]) -> bool:
        return await _attempt(spec, racer, stream, run, rec, claim)

    from ._hedge import race

    won = await race(run, slot, attempt, hedger)
    return won is not None and won[1]


async def _attempt(
    spec: BridgeSpec[T],
    slot: Slot,
    stream: ReliableStream[T],
    run: FailoverRun,
    rec: RecoveryState[T] | None,
    claim: Callable[[], bool] | None = None,
) -> bool:
    """Run one attempt: True when it committed and ended cleanly, False when it failed
    before its first item (the run decides what is next); a committed stream that
    broke raises ``StreamError`` (or ``_Broke`` when it may be recovered).

    In a hedged race (``claim`` given) the attempt claims the win at its
    first item (``Lost`` when another racer was first), and a failure before
    that is raised for the race to report instead of ``slot.failed``.
    """
    # Outside a hedged race the attempt's scope is the one the consumer's
    # aclose() cancels (a race has one around all of it, see _guarded).
    owns_scope = claim is None
    if owns_scope and stream._detached:
        raise _Detached()
    committed = False
    idle = spec.idle_timeout
    first_deadline = (  # counted from the moment the run handed the attempt out
        math.inf if spec.first_chunk_timeout is None else slot.started_at + spec.first_chunk_timeout
    )
    continuing = rec is not None and rec.continuing
    if continuing:
        assert rec is not None and spec.recovery is not None
        from ._recovery import continuation_messages

        base = slot.messages if slot.messages is not None else spec.recovery.conversation
        opening = spec.recovery.open_continuation(
            slot.provider, slot.model_id, continuation_messages(base, rec.text)
        )
    else:
        opening = spec.open_upstream(slot.provider, slot.model_id, slot.messages)
    try:
        with stream._be.CancelScope() as attempt_scope:
            if owns_scope:
                stream._scope = attempt_scope
            # The first-chunk deadline is set on the scope when the upstream
            # first suspends the bridge (see _Upstream), not here.
            upstream = _Upstream(opening, attempt_scope, first_deadline)
            async with upstream as items:
                try:
                    if upstream.waited:  # opening it waited: nothing left to learn
                        first = await items.__anext__()
                    else:
                        first = await _noting_waits(items.__anext__(), upstream)
                except StopAsyncIteration:
                    raise EmptyStream() from None
                if _bare_final(first):
                    # A terminator alone ("data: [DONE]", "message_stop") is
                    # no answer: the next candidate is asked, and the item is
                    # kept for the caller in case every candidate is empty.
                    raise EmptyStream(first)
                if (
                    attempt_scope.cancel_called
                    if upstream.waited
                    else stream._be.current_time() >= first_deadline
                ):
                    # The deadline passed while this item was already on its
                    # way (returned without a checkpoint). Committing now
                    # would deliver it and then die of the pending
                    # cancellation as a bogus "stalled" error; it is a
                    # first-chunk timeout, judged at the commit point. (If
                    # the consumer let go instead, the handler below says so.)
                    # An upstream that never suspended the bridge has no
                    # deadline on the scope, and the consumer cannot have
                    # run: only the clock can say it was too slow (it worked
                    # past the deadline without a checkpoint).
                    raise _LateFirstChunk()
                if claim is None:
                    slot.succeeded()
                elif not claim():
                    from ._hedge import Lost

                    raise Lost()
                committed = True
                if upstream.waited:
                    attempt_scope.deadline = math.inf  # the first-chunk deadline is lifted
                gap = math.inf if idle is None else idle
                stream._watch_idle(gap, attempt_scope)  # the idle clock starts at commit
                if rec is None:
                    waiting = stream._reader_parked
                    if not stream._offer(first):
                        await stream._put(first)
                    if waiting and upstream.waited:
                        await stream._handed_over()
                    if run.unsettled:
                        await run.aclose()  # tell provider health after the item is on its way
                    tally = None if run.obs is None else run.obs.tally
                    if tally is not None:
                        tally.note(first)
                    await _forward(items, stream, gap, tally)
                else:
                    await _forward_recording(items, first, stream, gap, rec, run, upstream.waited)
    except Exception as err:
        if owns_scope and stream._detached:
            raise _Detached() from None  # whatever the upstream made of the cancellation
        if not committed:
            late = isinstance(err, _LateFirstChunk)
            failure = _first_chunk_timeout(spec, slot) if late else err
            if continuing and rec is not None and _rejects_prefill(failure):
                # The continuation was refused (e.g. 400 about the final
                # assistant message): the recovery becomes a restart, with
                # its signal; the refusal stays in the trail.
                rec.to_restart()
                run.skip_if = None
                run.recovery_mode("restart")
            if claim is not None:
                raise failure from (None if late else err.__cause__)  # the race reports it
            slot.failed(failure)
            return False
        if isinstance(err, StreamError):
            # The leaf's own break: raised as it is, so its direct cause (the
            # ProviderError with status, kind and Retry-After) stays intact.
            raise _recoverable(err, err, slot, run, rec) from err.__cause__
        broken = _broken(slot, err)
        broken.__cause__ = err
        raise _recoverable(broken, err, slot, run, rec) from err
    if attempt_scope.cancelled_caught:
        if owns_scope and stream._detached:
            raise _Detached()
        if committed:
            stalled = StreamError(
                f"stream from {slot.name} (model {slot.model_id}) stalled: "
                f"no data for {idle:g} s after it started",
                tool_call_in_progress=spec.recovery is not None and spec.recovery.tools,
            )
            raise _recoverable(stalled, stalled, slot, run, rec)
        if claim is not None:
            raise _first_chunk_timeout(spec, slot)
        slot.failed(_first_chunk_timeout(spec, slot))
        return False
    if committed and run.obs is not None:
        run.obs.stream_finished(slot)
    return committed


def _recoverable(
    broken: StreamError,
    cause: Exception,
    slot: Slot,
    run: FailoverRun,
    rec: RecoveryState[T] | None,
) -> Exception:
    # A ContentFilterError after commit is a safety decision, never recovered,
    # whether it comes bare or as the cause of the leaf's StreamError.
    filtered = isinstance(cause, ContentFilterError) or isinstance(
        cause.__cause__, ContentFilterError
    )
    if rec is not None and rec.left > 0 and not filtered:
        return _Broke(broken, cause)
    run.broke(slot, cause)  # provider health hears of it; the caller gets the error
    return broken


def _rejects_prefill(err: Exception) -> bool:
    status = getattr(err, "status_code", None)
    return status is not None and 400 <= status < 500 and status not in (408, 429)


class _Upstream(Generic[T]):
    """An upstream stream context, entered noting whether opening it made the bridge wait.

    See :func:`_noting_waits`: ``waited`` says whether the upstream ever
    suspended the bridge between the attempt's start and its first item;
    when it first does, the attempt's first-chunk ``deadline`` is set on its
    cancel ``scope``.
    """

    __slots__ = ("_cm", "deadline", "scope", "waited")

    def __init__(
        self,
        cm: AbstractAsyncContextManager[AsyncIterator[T]],
        scope: Any,
        deadline: float,
    ) -> None:
        self._cm = cm
        self.scope = scope
        self.deadline = deadline
        self.waited = False

    def suspending(self) -> None:
        """The upstream is about to suspend the bridge for the first time."""
        self.waited = True
        if self.deadline != math.inf:
            self.scope.deadline = self.deadline

    def __aenter__(self) -> Awaitable[AsyncIterator[T]]:
        return _noting_waits(self._cm.__aenter__(), self)

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[bool | None]:
        return self._cm.__aexit__(exc_type, exc, tb)


@types.coroutine
def _noting_waits(awaitable: Awaitable[R], note: _Upstream[Any]) -> Generator[Any, Any, R]:
    # ``await awaitable``, noting on ``note`` whether it suspended the task.
    # Two things hang on that. The hand-over after the first item
    # (ReliableStream._handed_over): an upstream that made the bridge wait is
    # doing I/O, and one network read may have brought a whole burst of
    # items, which the bridge must not parse and buffer before the waiting
    # consumer has the first; an upstream that never suspended (an
    # in-process generator) gains nothing from the hand-over, which costs two
    # task switches. And the first-chunk deadline: trio can only deliver a
    # deadline's cancellation to a task that suspends (at a trap), so the
    # deadline is set on the attempt's scope just before the first trap
    # goes up, with the instant computed when the attempt started. That
    # cancels at exactly the same moment as a scope entered with the
    # deadline, and an upstream that never suspends (it cannot be timed
    # out anyway) skips registering the deadline and lifting it at commit.
    # The loop is what ``yield from`` does (PEP 380), written out because
    # only the first step differs: every trap goes up to trio unchanged,
    # every value or exception trio sends comes back down.
    steps = awaitable.__await__()
    try:
        trap = steps.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    note.suspending()
    while True:
        try:
            sent = yield trap
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as exc:
            try:
                trap = steps.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                trap = steps.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


class _LateFirstChunk(Exception):
    """The first item came after the first-chunk deadline had already fired."""


def _first_chunk_timeout(spec: BridgeSpec[T], slot: Slot) -> ProviderError:
    assert spec.first_chunk_timeout is not None
    return ProviderError(
        f"{slot.name}: no first chunk within {spec.first_chunk_timeout:g} s "
        f"(model {slot.model_id}); timed out",
        provider=slot.name,
        kind="timeout",
    )


async def _forward_recording(
    items: AsyncIterator[T],
    first: T,
    stream: ReliableStream[T],
    idle: float,
    rec: RecoveryState[T],
    run: FailoverRun,
    waited: bool,
) -> None:
    # The forwarding loop when mid-stream recovery is on: every delivered
    # item is noted (its text, whether it is a tool call) so a break can be
    # continued or restarted. A restarted answer's first item carries the
    # signal; a continuation's first items pass the overlap trimmer.
    now = stream._be.clock()
    tally = None if run.obs is None else run.obs.tally
    from ._recovery import OverlapTrimmer

    trimmer = OverlapTrimmer(rec.text, rec.ops) if rec.continuing else None
    if rec.restart_pending:
        rec.restart_pending = False
        pending = rec.ops.restarted(first)
    elif trimmer is not None:
        pending = trimmer.feed(first)
    else:
        pending = [first]
    rec.continuing = False
    waiting = stream._reader_parked
    for item in pending:
        rec.note(item)
        if tally is not None:
            tally.note(item)
        await stream._put(item)
    if waiting and waited and pending:
        await stream._handed_over()
    if run.unsettled:
        await run.aclose()
    async for item in items:
        stream._idle_at = math.inf
        pending = trimmer.feed(item) if trimmer is not None and not trimmer.done else [item]
        for out in pending:
            rec.note(out)
            if tally is not None:
                tally.note(out)
            await stream._put(out)
        stream._idle_at = now() + idle
    if trimmer is not None and not trimmer.done:
        for out in trimmer.finish():
            rec.note(out)
            if tally is not None:
                tally.note(out)
            await stream._put(out)


async def _forward(
    items: AsyncIterator[T],
    stream: ReliableStream[T],
    idle: float,
    tally: Tally | None = None,
) -> None:
    # The hot loop of every committed stream: a deque append, a clock read and
    # a float store per item. The float is the idle deadline the consumer
    # waits against (see ReliableStream.__anext__); with no idle timeout it stays
    # inf and the consumer never arms a deadline. ``tally`` counts what is
    # delivered when someone observes the request (one None check otherwise).
    now = stream._be.clock()
    buffer = stream._buffer
    append = buffer.append
    size = BUFFER_SIZE
    async for item in items:
        if tally is not None:
            tally.note(item)
        if len(buffer) >= size:
            stream._idle_at = math.inf  # waiting for the consumer is not idleness
            await stream._put(item)
        else:
            append(item)
            if stream._reader_parked:
                stream._wake_reader()
        stream._idle_at = now() + idle


def _bare_final(item: object) -> bool:
    """Whether a first item is a final that says nothing (an empty stream's end)."""
    if type(item) is StreamChunk:
        return (
            item.is_final
            and not item.delta
            and item.reasoning is None
            and item.finish_reason is None
            and item.raw_finish_reason is None
            and item.usage is None
        )
    if type(item) is Final:
        return item.finish_reason is None and item.raw_finish_reason is None and item.usage is None
    return False


def _broken(slot: Slot, err: Exception) -> StreamError:
    detail = sanitize_api_error(str(err) or type(err).__name__)
    return StreamError(
        f"stream from {slot.name} (model {slot.model_id}) broke after it started: {detail}"
    )
