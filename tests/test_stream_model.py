"""Hypothesis: generated per-attempt scripts against a reference model of streaming failover."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends_support import BACKENDS, run_on
from reliant import ChatMessage, FailoverError, ProviderError, ReliableProvider
from reliant.testing import Empty, Fail, Hang, Outcome, ScriptedProvider, Stream

KINDS = ("retryable", "non_retryable", "rate_limited", "empty", "hang", "success")


def outcome(kind: str, provider: int) -> Outcome:
    if kind == "retryable":
        return Fail(ProviderError("503 Service Unavailable", status_code=503))
    if kind == "non_retryable":
        return Fail(ProviderError("401 Unauthorized", status_code=401))
    if kind == "rate_limited":
        return Fail(ProviderError("429 Too Many Requests", status_code=429, retry_after=2.0))
    if kind == "empty":
        return Empty()
    if kind == "hang":
        return Hang()
    return Stream([f"from-{provider}", " done"])


@dataclass
class Expected:
    served_by: int | None
    calls: list[int]
    error: bool


def reference(scripts: list[list[str]], max_retries: int) -> Expected:
    """The rules in plain loops: retry retryable kinds, skip the rest, empty-only ends clean."""
    calls = [0] * len(scripts)
    saw_error = False
    for i, script in enumerate(scripts):
        for _ in range(max_retries + 1):
            kind = script[min(calls[i], len(script) - 1)]
            calls[i] += 1
            if kind == "success":
                return Expected(i, calls, False)
            if kind == "empty":
                break
            saw_error = True
            if kind == "non_retryable":
                break
    return Expected(None, calls, saw_error)


scripts_strategy = st.lists(
    st.lists(st.sampled_from(KINDS), min_size=1, max_size=4), min_size=1, max_size=4
)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=150, deadline=None)
@given(scripts=scripts_strategy, max_retries=st.integers(0, 2))
def test_streaming_failover_matches_reference_model(
    backend: str, scripts: list[list[str]], max_retries: int
) -> None:
    """Who serves, how many calls each provider gets, and whether it fails match the model."""
    expected = reference(scripts, max_retries)

    async def run() -> tuple[list[str], BaseException | None, list[ScriptedProvider]]:
        providers = [
            ScriptedProvider([outcome(k, i) for k in script], name=f"p{i}")
            for i, script in enumerate(scripts)
        ]
        rp = ReliableProvider(
            [(p.name, p) for p in providers],
            max_retries,
            0.1,
            first_chunk_timeout=1.0,
            health=None,  # the reference is the seed's model: every request pays every retry
        )
        text: list[str] = []
        error: BaseException | None = None
        try:
            async with rp.stream_chat_with_history([ChatMessage.user("x")], "m", 0.0) as chunks:
                async for chunk in chunks:
                    text.append(chunk.delta)
        except FailoverError as err:
            error = err
        for p in providers:
            assert p.open_streams == 0
        return text, error, providers

    text, error, providers = run_on(backend, run)
    assert [p.call_count for p in providers] == expected.calls
    if expected.served_by is not None:
        assert error is None
        assert "".join(text) == f"from-{expected.served_by} done"
    elif expected.error:
        assert isinstance(error, FailoverError)
        assert len(error.attempts) == sum(expected.calls)
    else:
        assert error is None and text == []
