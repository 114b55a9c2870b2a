"""Tests for fallback notification: fallback_scope, record and take."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from reliant import ProviderFallbackInfo, fallback_scope, take_last_provider_fallback
from reliant._backend import current_time
from reliant._fallback_info import record_provider_fallback

pytestmark = pytest.mark.anyio


def info(actual: str, model: str = "m") -> ProviderFallbackInfo:
    return ProviderFallbackInfo(
        requested_provider="primary",
        requested_model="m",
        actual_provider=actual,
        actual_model=model,
    )


def test_outside_scope_record_is_noop_and_take_returns_none() -> None:
    """Without a scope recording does nothing and taking returns None."""
    record_provider_fallback(info("backup"))
    assert take_last_provider_fallback() is None
    with fallback_scope():
        assert take_last_provider_fallback() is None  # nothing leaked in from outside


def test_take_returns_last_and_clears() -> None:
    """take returns the most recent record once, then None."""
    with fallback_scope():
        record_provider_fallback(info("first"))
        record_provider_fallback(info("second"))
        assert take_last_provider_fallback() == info("second")
        assert take_last_provider_fallback() is None


def test_scope_is_discarded_on_exit() -> None:
    """A record left in a scope is gone once the scope exits."""
    with fallback_scope():
        record_provider_fallback(info("backup"))
    assert take_last_provider_fallback() is None
    with fallback_scope():
        assert take_last_provider_fallback() is None


def test_nested_scopes() -> None:
    """The inner scope receives the records; the outer one is untouched and restored after."""
    with fallback_scope():
        record_provider_fallback(info("outer"))
        with fallback_scope():
            assert take_last_provider_fallback() is None
            record_provider_fallback(info("inner"))
            assert take_last_provider_fallback() == info("inner")
            record_provider_fallback(info("inner-left-over"))
        assert take_last_provider_fallback() == info("outer")
        record_provider_fallback(info("outer-again"))
        assert take_last_provider_fallback() == info("outer-again")


def test_scope_restored_after_exception() -> None:
    """An exception leaving a scope still restores the previous cell."""
    with fallback_scope():
        record_provider_fallback(info("outer"))
        with pytest.raises(ValueError, match="boom"), fallback_scope():
            record_provider_fallback(info("inner"))
            raise ValueError("boom")
        assert take_last_provider_fallback() == info("outer")
    with pytest.raises(ValueError, match="boom"), fallback_scope():
        raise ValueError("boom")
    record_provider_fallback(info("nowhere"))
    assert take_last_provider_fallback() is None


async def test_child_task_records_into_parent_scope(
    anyio_backend: object,
) -> None:
    """A task spawned inside the scope writes into the parent's cell (unlike a task-local)."""

    async def child() -> None:
        await anyio.sleep(1)
        record_provider_fallback(info("backup", "m2"))

    with fallback_scope():
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(child)
        assert current_time() == 1
        assert take_last_provider_fallback() == info("backup", "m2")


async def test_child_task_own_scope_is_private(anyio_backend: object) -> None:
    """A child that opens its own scope keeps its records from the parent."""

    async def child() -> None:
        with fallback_scope():
            record_provider_fallback(info("child"))
            await anyio.sleep(1)
            assert take_last_provider_fallback() == info("child")
        record_provider_fallback(info("child-after-scope"))

    with fallback_scope():
        record_provider_fallback(info("parent"))
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(child)
        assert current_time() == 1
        assert take_last_provider_fallback() == info("child-after-scope")


async def test_concurrent_scopes_are_isolated(anyio_backend: object) -> None:
    """Two concurrent requests with their own scopes never see each other's record."""
    seen: dict[str, list[tuple[float, ProviderFallbackInfo | None]]] = {"a": [], "b": []}

    async def request(name: str, record_at: float, take_at: float) -> None:
        with fallback_scope():
            await anyio.sleep(record_at)
            record_provider_fallback(info(name))
            await anyio.sleep(take_at - record_at)
            seen[name].append((current_time(), take_last_provider_fallback()))
            await anyio.sleep(1)
            seen[name].append((current_time(), take_last_provider_fallback()))

    # a records at 1 and takes at 3; b records at 2 (in between) and takes at 2.5.
    async with anyio.create_task_group() as nursery:
        nursery.start_soon(request, "a", 1.0, 3.0)
        nursery.start_soon(request, "b", 2.0, 2.5)

    assert seen["a"] == [(3.0, info("a")), (4.0, None)]
    assert seen["b"] == [(2.5, info("b")), (3.5, None)]
    assert current_time() == 4.0
    assert take_last_provider_fallback() is None
