"""The planner's health gate (``_admission``): per-request state between the walk and a store."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from reliant import HealthPolicy, LocalHealth
from reliant._admission import HealthGate, Transition, gate_type, silent
from reliant._backend import current as current_backend
from reliant._exceptions import ProviderError
from reliant._health import Decision, HealthStore, Outcome, RouteHealth, RouteKey

pytestmark = pytest.mark.anyio

A: RouteKey = ("a", "m")


class Awaiting(HealthStore):
    """A store that awaits on every call (as a shared one does), backed by an in-process one."""

    def __init__(self, policy: HealthPolicy | None = None) -> None:
        self.inner = LocalHealth(policy)
        self.policy = self.inner.policy
        self.calls: list[tuple[Any, ...]] = []

    async def admit(
        self, key: RouteKey, *, new_request: bool = False, retry: bool = False, force: bool = False
    ) -> Decision:
        await anyio.sleep(0.001)
        self.calls.append(("admit", key, new_request))
        return self.inner.admit_nowait(key, new_request=new_request, retry=retry, force=force)

    async def record(
        self, key: RouteKey, outcome: Outcome, *, probe: bool = False
    ) -> RouteHealth | None:
        await anyio.sleep(0.001)
        self.calls.append(("record", key, outcome.ok, probe))
        return self.inner.record_nowait(key, outcome, probe=probe)

    async def release(self, key: RouteKey) -> None:
        await anyio.sleep(0.001)
        self.calls.append(("release", key))
        self.inner.release_nowait(key)

    def snapshot(self) -> dict[RouteKey, RouteHealth]:
        return self.inner.snapshot()


def gate_for(store: HealthStore, transition: Transition | None) -> HealthGate:
    """The gate the planner would build for ``store``, for one request."""
    be = current_backend()
    return gate_type(store)(store, be, be.clock(), transition)


FAIL = Outcome(False, True, None, False, "boom")
POLICY = HealthPolicy(open_after=1, open_for=5.0)


async def test_in_process_store_is_immediate_and_tells_transitions() -> None:
    """With the in-process store nothing awaits, and a breaker that opens is told at once."""
    told: list[tuple[RouteKey, int, str]] = []
    gate = gate_for(LocalHealth(POLICY), lambda k, n, v: told.append((k, n, v.state)))
    assert gate.immediate
    assert gate.admit_nowait(A, retry=False, force=False).admission == "allow"
    gate.record(A, FAIL, False, 1)
    assert told == [(A, 1, "open")]
    assert not gate.unsettled


async def test_shared_store_hears_outcomes_before_the_next_admission() -> None:
    """A shared store's outcome waits in the gate and reaches it before the next admission."""
    store = Awaiting(POLICY)
    told: list[RouteKey] = []
    gate = gate_for(store, lambda k, n, v: told.append(k))
    assert not gate.immediate
    start = anyio.current_time()
    assert (await gate.admit(A, retry=False, force=False)).admission == "allow"
    gate.record(A, FAIL, False, 1)
    assert gate.unsettled and store.calls == [("admit", A, True)]
    decision = await gate.admit(A, retry=True, force=False)
    assert decision.admission == "skip"  # the failure opened the breaker first
    assert store.calls == [("admit", A, True), ("record", A, False, False), ("admit", A, False)]
    assert told == [A]
    assert anyio.current_time() - start == pytest.approx(0.003)


async def due_for_a_probe(store: LocalHealth) -> LocalHealth:
    """``store`` with A's breaker opened by one failure, and its open period over."""
    store.record_nowait(A, FAIL)
    await anyio.sleep(POLICY.open_for)
    return store


async def test_probe_is_held_until_recorded() -> None:
    """A granted probe is held by the request; recording its outcome frees it."""
    store = await due_for_a_probe(LocalHealth(POLICY))
    gate = gate_for(store, None)
    assert gate.admit_nowait(A, retry=False, force=False).admission == "probe"
    assert gate.unsettled
    other = gate_for(store, None)
    assert other.admit_nowait(A, retry=False, force=False).admission == "skip"
    gate.record(A, Outcome(ok=True), True, 1)
    assert not gate.unsettled
    assert store.snapshot()[A].state == "closed"


async def test_aclose_gives_back_a_shared_probe_even_when_cancelled() -> None:
    """A cancelled request's aclose still reports its outcome and gives its probe slot back."""
    store = Awaiting(POLICY)
    await due_for_a_probe(store.inner)
    gate = gate_for(store, None)
    assert (await gate.admit(A, retry=False, force=False)).admission == "probe"
    with anyio.CancelScope() as scope:
        scope.cancel()
        await gate.aclose()
    assert store.calls[-1] == ("release", A)
    assert not gate.unsettled
    assert (await gate_for(store, None).admit(A, retry=False, force=False)).admission == "probe"


async def test_release_frees_an_in_process_probe() -> None:
    """A racer forgotten without an outcome gives its probe slot back at once."""
    store = await due_for_a_probe(LocalHealth(POLICY))
    gate = gate_for(store, None)
    assert gate.admit_nowait(A, retry=False, force=False).admission == "probe"
    gate.release(A)
    assert not gate.unsettled
    assert gate_for(store, None).admit_nowait(A, retry=False, force=False).admission == "probe"


def test_silent_failures() -> None:
    """Timeouts are silent at once; a transport error only after silent_after seconds."""
    policy = HealthPolicy()
    timeout = ProviderError("p timed out", provider="p", kind="timeout")
    reset = ProviderError("p: connection reset", provider="p")
    status = ProviderError("p API error (503)", provider="p", status_code=503)
    assert silent(timeout, 0.0, 0.1, policy)
    assert not silent(reset, 0.0, policy.silent_after - 0.01, policy)
    assert silent(reset, 0.0, policy.silent_after, policy)
    assert not silent(status, 0.0, 100.0, policy)
    assert not silent(ValueError("x"), 0.0, 100.0, policy)
