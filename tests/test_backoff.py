"""Tests for reliant.backoff: the seed's compute_backoff/jitter tests, in seconds."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reliant import ReliableProvider
from reliant._exceptions import ProviderError
from reliant.backoff import (
    MAX_BACKOFF,
    MAX_RETRY_AFTER,
    MIN_BASE_BACKOFF,
    double_backoff,
    jitter_backoff,
    next_backoff,
)
from reliant.classify import parse_retry_after
from reliant.testing import Fail, NoJitter, Reply, ScriptedProvider

pytestmark = pytest.mark.anyio


def test_constants() -> None:
    """The limits match the seed: 50 ms floor, 10 s doubling cap, 30 s Retry-After cap."""
    assert MIN_BASE_BACKOFF == 0.05
    assert MAX_BACKOFF == 10.0
    assert MAX_RETRY_AFTER == 30.0


def test_compute_backoff_uses_retry_after() -> None:
    """A Retry-After hint is honoured exactly, without jitter."""
    assert next_backoff(0.5, RuntimeError("429 Retry-After: 3")) == 3.0


def test_compute_backoff_caps_at_30s() -> None:
    """A Retry-After hint is capped at 30 seconds."""
    assert next_backoff(0.5, RuntimeError("429 Retry-After: 120")) == 30.0


def test_compute_backoff_jitters_when_no_retry_after() -> None:
    """Without Retry-After the wait is jittered into [base/2, base]."""
    e = RuntimeError("500 Server Error")
    waits = {next_backoff(0.5, e) for _ in range(1_000)}
    assert all(0.25 <= w <= 0.5 for w in waits)
    assert len(waits) > 1


def test_jitter_backoff_stays_within_equal_jitter_bounds() -> None:
    """jitter_backoff(base) always lies in [base/2, base]."""
    for base in [0.0, 0.001, 0.002, 0.003, 0.05, 0.999, 10.0]:
        for _ in range(1_000):
            v = jitter_backoff(base)
            assert base / 2 <= v <= base, f"jitter_backoff({base}) = {v}"


def test_retry_after_never_below_base() -> None:
    """A Retry-After shorter than the base backoff waits the base instead."""
    assert next_backoff(0.5, RuntimeError("429 Too Many Requests, Retry-After: 0")) == 0.5


def test_retry_after_attribute_is_used() -> None:
    """The structured retry_after of a ProviderError drives the wait."""
    e = ProviderError("429 Too Many Requests, Retry-After: 9", status_code=429, retry_after=3.0)
    assert next_backoff(0.5, e) == 3.0


@pytest.mark.parametrize("base", [0.0, -1.0, float("inf")])
def test_jitter_backoff_degenerate_base_is_returned(base: float) -> None:
    """A non-positive or infinite base is returned unchanged."""
    assert jitter_backoff(base) == base


def test_jitter_backoff_rng_is_injectable() -> None:
    """The same seeded rng gives the same waits."""
    a = [jitter_backoff(1.0, rng=random.Random(7)) for _ in range(3)]
    b = [jitter_backoff(1.0, rng=random.Random(7)) for _ in range(3)]
    assert a == b
    e = RuntimeError("503")
    assert next_backoff(1.0, e, rng=random.Random(7)) == a[0]


def test_jitter_backoff_leaves_global_random_alone() -> None:
    """The default rng is private: the global random state is untouched."""
    state = random.getstate()
    jitter_backoff(1.0)
    next_backoff(1.0, RuntimeError("503"))
    assert random.getstate() == state


def test_double_backoff_caps_at_10s() -> None:
    """Doubling the base is capped at 10 seconds."""
    assert double_backoff(0.5) == 1.0
    assert double_backoff(4.0) == 8.0
    assert double_backoff(6.0) == 10.0
    assert double_backoff(10.0) == 10.0


@given(
    base=st.floats(min_value=0.0, allow_nan=False, allow_infinity=False),
    rng=st.randoms(use_true_random=False),
)
def test_jitter_bounds_property(base: float, rng: random.Random) -> None:
    """For every non-negative base the jittered wait lies in [base/2, base]."""
    v = jitter_backoff(base, rng=rng)
    assert base / 2 <= v <= base


@given(
    base=st.floats(min_value=0.0, max_value=1e6),
    seconds=st.floats(min_value=0.0, max_value=1e9),
    structured=st.booleans(),
)
def test_next_backoff_with_retry_after_bounds(
    base: float, seconds: float, structured: bool
) -> None:
    """With a Retry-After the wait lies in [base, max(base, 30)] and has no jitter."""
    if structured:
        e: Exception = ProviderError("429 Too Many Requests", status_code=429, retry_after=seconds)
    else:
        e = RuntimeError(f"429 Too Many Requests, Retry-After: {seconds:f}")
    retry_after = parse_retry_after(e)
    assert retry_after is not None
    wait = next_backoff(base, e)
    assert base <= wait <= max(base, MAX_RETRY_AFTER)
    assert wait == max(base, min(retry_after, MAX_RETRY_AFTER))


async def test_no_jitter_gives_exact_retry_times(anyio_backend: object) -> None:
    """With rng=NoJitter() the retries start at exactly 0.5 s and 1.5 s (waits 0.5, then 1.0)."""
    primary = ScriptedProvider([Fail(ProviderError("down", status_code=500))] * 2 + [Reply("ok")])
    llm = ReliableProvider([("p", primary)], max_retries=2, base_backoff=0.5, rng=NoJitter())
    assert await llm.simple_chat("hi", "m", 0.0) == "ok"
    assert [c.started_at for c in primary.calls] == [0.0, 0.5, 1.5]
    assert jitter_backoff(0.5, rng=NoJitter()) == 0.5
