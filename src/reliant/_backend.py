"""The two backends: trio natively, asyncio through anyio.

reliant is written against a small set of primitives (a cancel scope, a
task group, an event, a one-task waiter, the clock, sleep, a checkpoint, a
worker thread). This module gives each of them twice:

- on trio, trio's own objects, exactly as reliant used them before it ran
  anywhere else, so a trio program pays nothing for the second backend;
- on asyncio, anyio's: its cancel scopes bring trio's level cancellation
  (a cancelled scope keeps cancelling every await inside it until it is
  left, and its ``Task.uncancel`` bookkeeping keeps an outer
  ``asyncio.timeout`` working after reliant handled an inner cancellation),
  its task group structured concurrency, and a ``Future`` per wait stands
  in for trio's ``wait_task_rescheduled``. One exception: a stream's bridge
  task lives in :class:`_StreamNursery`, because asyncio closes an
  abandoned async generator (and the stream it owns) from another task,
  which no task group allows.

Which one: trio sets ``sniffio.thread_local.name`` to ``"trio"`` while it
runs, so :func:`current` is one thread-local read. It is asked once per
request (a stream's ``__aenter__``, a planner run, a hedged race) and the
answer is kept, never per item: the hot paths call the bound backend's
attributes directly. Code that runs outside a request (a health store's
clock) asks :func:`current_time`, which dispatches the same way.

anyio is imported only when asyncio is actually used, so ``import reliant``
on trio does not load it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from sniffio import thread_local as _sniffio

if TYPE_CHECKING:
    import asyncio

__all__ = ["Backend", "current", "current_time"]


class _TrioWaiter:
    """Where one task at a time waits until the other side wakes it (trio).

    Each side of a reliable stream's buffer has exactly one task, so trio's
    ``ParkingLot`` (an ordered dict of waiters, a generator to pop them) is
    more than this needs: a wait is one ``wait_task_rescheduled`` and a wake
    one ``reschedule``. A wait cancelled before the wake leaves nothing
    behind (the abort clears the task), so a late wake does nothing.
    """

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None

    def wait(self) -> Awaitable[object]:
        # Not a coroutine of its own: the caller awaits trio's directly, one
        # frame less on every wait (once per network read on each side).
        self._task = trio.lowlevel.current_task()
        return trio.lowlevel.wait_task_rescheduled(self._abort)  # noqa: ASYNC105 - the caller awaits it

    def _abort(self, raise_cancel: object) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def wake(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)


class _AsyncioWaiter:
    """The same one-task waiter on asyncio: a ``Future`` per wait.

    A wait cancelled before the wake (anyio cancels the task, so the
    future is cancelled with it) is found done by the wake, which then does
    nothing.
    """

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def wait(self) -> Awaitable[object]:
        import asyncio

        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._future = future
        return future

    def wake(self) -> None:
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.set_result(None)


class _LazyIdleDeadline:
    """A stream's idle deadline on asyncio, moved twice per wait at the cost of two stores.

    The consumer sets the committed attempt's deadline before each wait and
    the bridge lifts it when an item comes (see ``_bridge``): twice per wait.
    On trio that is cheap; anyio's deadline setter on asyncio cancels and
    schedules a timer each time (about 6 us a pair, measured). So here the
    deadline is only stored, and one timer runs at the earliest stored
    deadline: when it fires, it cancels the scope if the deadline now stored
    has passed, and otherwise sleeps on until that one. The scope is
    cancelled at the same instant a real deadline would cancel it.
    """

    __slots__ = ("_handle", "_loop", "_scope", "_target")

    def __init__(self, scope: Any) -> None:
        import asyncio

        self._scope = scope
        self._target = math.inf
        self._handle: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    @property
    def deadline(self) -> float:
        return self._target

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._target = value
        if value != math.inf:
            handle = self._handle
            if handle is None or handle.when() > value:
                if handle is not None:
                    handle.cancel()
                self._handle = self._loop.call_at(value, self._fire)

    def _fire(self) -> None:
        self._handle = None
        target = self._target
        if target == math.inf:
            return  # nobody waits now; the next wait schedules again
        if target <= self._loop.time():
            self._scope.cancel()
        else:
            self._handle = self._loop.call_at(target, self._fire)

    def close(self) -> None:
        """The stream is over: drop the timer."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()


def _no_idle_wrapper(scope: Any) -> Any:
    return scope


def _nothing_to_release(deadline: Any) -> None:
    return None


def _release_idle(deadline: Any) -> None:
    deadline.close()


def _resolve(waiter: asyncio.Future[None], _task: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _StreamNursery:
    """The nursery of a stream's bridge task on asyncio (see the module docstring).

    anyio's task group must be left by the task that entered it. A stream is
    often left by another: an async generator that owns one (a web
    framework's streaming response) and is dropped unclosed is closed by
    asyncio's async-generator finalizer in a task of its own. So here the
    bridge is a plain task, and leaving waits for it from whatever task
    leaves; a leaver cancelled meanwhile cancels the bridge, still waits for
    it (so no task outlives the block), and then re-raises its cancellation
    (its ``Task.cancelling()`` count untouched, so an outer timeout still
    knows it fired). Never entered-and-dropped either: a context that is
    garbage-collected without being left cancels its bridge task.
    """

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> _StreamNursery:
        return self

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str) -> None:
        import asyncio

        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(
            fn(*args),  # type: ignore[arg-type]
            name=name,
        )
        self._tasks.append(task)

    def __del__(self) -> None:
        # Dropped without being left: its tasks must not run on unowned.
        # (A task that is done ignores cancel(), so this is a no-op after
        # a normal exit.)
        for task in self._tasks:
            task.cancel()

    async def __aexit__(self, *exc_info: object) -> None:
        import asyncio

        # Each task is waited for through a future its completion resolves:
        # what asyncio.wait() does, without its set and timeout machinery
        # (about 6 us less per stream, measured). A leaver cancelled while it
        # waits cancels the task and waits again.
        loop = asyncio.get_running_loop()
        cancelled: BaseException | None = None
        for task in self._tasks:
            while not task.done():
                waiter = loop.create_future()
                wake = partial(_resolve, waiter)
                task.add_done_callback(wake)
                try:
                    await waiter
                except asyncio.CancelledError as exc:
                    cancelled = exc
                    task.cancel()
                finally:
                    task.remove_done_callback(wake)
        if cancelled is not None:
            raise cancelled
        errors = [
            t.exception() for t in self._tasks if not t.cancelled() and t.exception() is not None
        ]
        if errors:
            raise BaseExceptionGroup("errors of a stream's tasks", errors)  # type: ignore[type-var]


class Backend:
    """The primitives of one backend (see the module docstring); one instance per backend."""

    __slots__ = (
        "CancelScope",
        "Cancelled",
        "Event",
        "Waiter",
        "checkpoint",
        "clock",
        "current_effective_deadline",
        "current_time",
        "idle_deadline",
        "move_on_after",
        "move_on_at",
        "name",
        "open_nursery",
        "open_stream_nursery",
        "release_idle",
        "run_sync_in_thread",
        "sleep",
    )

    name: str
    CancelScope: Callable[..., Any]
    Cancelled: type[BaseException]
    Event: Callable[[], Any]
    Waiter: Callable[[], Any]
    checkpoint: Callable[[], Awaitable[None]]
    clock: Callable[[], Callable[[], float]]
    current_effective_deadline: Callable[[], float]
    current_time: Callable[[], float]
    idle_deadline: Callable[[Any], Any]
    move_on_after: Callable[[float], Any]
    move_on_at: Callable[[float], Any]
    open_nursery: Callable[[], Any]
    open_stream_nursery: Callable[[], Any]
    release_idle: Callable[[Any], None]
    run_sync_in_thread: Callable[..., Awaitable[Any]]
    sleep: Callable[[float], Awaitable[None]]


def _trio_clock() -> Callable[[], float]:
    return trio.lowlevel.current_clock().current_time


TRIO = Backend()
TRIO.name = "trio"
TRIO.CancelScope = trio.CancelScope
TRIO.Cancelled = trio.Cancelled
TRIO.Event = trio.Event
TRIO.Waiter = _TrioWaiter
TRIO.checkpoint = trio.lowlevel.checkpoint
TRIO.clock = _trio_clock
TRIO.current_effective_deadline = trio.current_effective_deadline
TRIO.current_time = trio.current_time
TRIO.idle_deadline = _no_idle_wrapper
TRIO.release_idle = _nothing_to_release
TRIO.move_on_after = trio.move_on_after
TRIO.move_on_at = trio.move_on_at
TRIO.open_nursery = trio.open_nursery
TRIO.open_stream_nursery = trio.open_nursery
TRIO.run_sync_in_thread = trio.to_thread.run_sync
TRIO.sleep = trio.sleep

_ASYNCIO: Backend | None = None


def _asyncio_backend() -> Backend:
    global _ASYNCIO
    if _ASYNCIO is None:
        import asyncio

        import anyio
        import anyio.lowlevel
        import anyio.to_thread

        def loop_time() -> float:
            return asyncio.get_running_loop().time()

        def clock() -> Callable[[], float]:
            # The loop's clock as one callable for hot loops. asyncio's own
            # loop reads time.monotonic() through a Python method; calling
            # that C function directly saves a frame per read. A loop with a
            # clock of its own (a virtual one, uvloop) keeps it.
            loop = asyncio.get_running_loop()
            if type(loop).time is asyncio.BaseEventLoop.time:
                return time.monotonic
            return loop.time

        def effective_deadline() -> float:
            return float(anyio.current_effective_deadline())

        def move_on_at(deadline: float) -> anyio.CancelScope:
            return anyio.CancelScope(deadline=deadline)

        backend = Backend()
        backend.name = "asyncio"
        backend.CancelScope = anyio.CancelScope
        backend.Cancelled = asyncio.CancelledError
        backend.Event = anyio.Event
        backend.Waiter = _AsyncioWaiter
        backend.checkpoint = anyio.lowlevel.checkpoint
        backend.clock = clock
        backend.current_effective_deadline = effective_deadline
        backend.current_time = loop_time
        backend.idle_deadline = _LazyIdleDeadline
        backend.release_idle = _release_idle
        backend.move_on_after = anyio.move_on_after
        backend.move_on_at = move_on_at
        backend.open_nursery = anyio.create_task_group
        backend.open_stream_nursery = _StreamNursery
        backend.run_sync_in_thread = anyio.to_thread.run_sync
        backend.sleep = anyio.sleep
        _ASYNCIO = backend
    return _ASYNCIO


def current() -> Backend:
    """The backend of the running event loop: trio's, else asyncio's."""
    if _sniffio.name == "trio":
        return TRIO
    return _asyncio_backend()


def current_time() -> float:
    """The running loop's clock (trio's, or the asyncio loop's ``time()``), in seconds."""
    if _sniffio.name == "trio":
        return trio.current_time()
    import asyncio

    return asyncio.get_running_loop().time()
