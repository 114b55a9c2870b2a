"""The two backends the suite runs on, each on a virtual clock.

``conftest.anyio_backend`` gives these to the ``pytest.mark.anyio`` tests; a
Hypothesis property, which runs many examples in one test, parametrizes itself
over :data:`BACKENDS` and runs each example with :func:`run_on`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

BACKENDS = ["trio", "asyncio"]


def backend_options(backend: str) -> dict[str, Any]:
    """A fresh virtual clock: trio's MockClock(autojump_threshold=0), or looptime's loop.

    Both jump to the next timer whenever every task waits, and start at 0.
    """
    if backend == "trio":
        import trio.testing

        return {"clock": trio.testing.MockClock(autojump_threshold=0)}
    import looptime

    return {"loop_factory": looptime.new_event_loop}


def run_on(backend: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``fn(*args)`` to completion in a new event loop of ``backend`` on a virtual clock."""
    return anyio.run(fn, *args, backend=backend, backend_options=backend_options(backend))
