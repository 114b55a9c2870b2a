"""ReliableProvider, non-streaming: the seed's tests, plus timing, cancellation, isolation."""

from __future__ import annotations

import itertools
import logging
import random

import anyio
import anyio.lowlevel
import pytest

from reliant import (
    Attempt,
    ChatMessage,
    ChatRequest,
    ContextWindowExceededError,
    FailoverError,
    Provider,
    ProviderError,
    ReliableProvider,
    ToolCall,
    ToolSpec,
    fallback_scope,
    take_last_provider_fallback,
)
from reliant._backend import current_time
from reliant.testing import Fail, Hang, Reply, ScriptedProvider

pytestmark = pytest.mark.anyio

USER = [ChatMessage.user("hello")]


def failing(error: Exception | str, *, name: str = "scripted", **kw: bool) -> ScriptedProvider:
    err = error if isinstance(error, Exception) else RuntimeError(error)
    return ScriptedProvider([Fail(err)], name=name, **kw)


def fail_then(n: int, error: str, text: str, **kw: bool) -> ScriptedProvider:
    return ScriptedProvider([*[Fail(RuntimeError(error))] * n, Reply(text)], **kw)


def reliable(
    *providers: tuple[str, Provider], retries: int = 2, backoff: float = 0.001, **kw: object
) -> ReliableProvider:
    return ReliableProvider(list(providers), retries, backoff, **kw)  # type: ignore[arg-type]


# -- ported from the seed --------------------------------------------------


async def test_succeeds_without_retry() -> None:
    """A healthy provider is called exactly once."""
    p = ScriptedProvider([Reply("ok")])
    assert await reliable(("primary", p)).simple_chat("hello", "test", 0.0) == "ok"
    assert p.call_count == 1


async def test_retries_then_recovers(anyio_backend: object) -> None:
    """A retryable failure is retried on the same provider."""
    p = fail_then(1, "temporary", "recovered")
    assert await reliable(("primary", p)).simple_chat("hello", "test", 0.0) == "recovered"
    assert p.call_count == 2


async def test_falls_back_after_retries_exhausted(anyio_backend: object) -> None:
    """After max_retries + 1 failures the next provider serves."""
    primary = failing("primary down")
    fallback = ScriptedProvider([Reply("from fallback")])
    rp = reliable(("primary", primary), ("fallback", fallback), retries=1)
    assert await rp.simple_chat("hello", "test", 0.0) == "from fallback"
    assert (primary.call_count, fallback.call_count) == (2, 1)


async def test_returns_aggregated_error_when_all_providers_fail() -> None:
    """The failure names every attempt, its reason and its error."""
    rp = reliable(("p1", failing("p1 error")), ("p2", failing("p2 error")), retries=0)
    with pytest.raises(FailoverError) as info:
        await rp.simple_chat("hello", "test", 0.0)
    msg = str(info.value)
    assert msg == (
        "All providers/models failed. Attempts:\n"
        "provider=p1 model=test attempt 1/1: retryable; error=p1 error\n"
        "provider=p2 model=test attempt 1/1: retryable; error=p2 error"
    )
    assert info.value.attempts == [
        Attempt("p1", "test", 1, 1, "retryable", "p1 error"),
        Attempt("p2", "test", 1, 1, "retryable", "p2 error"),
    ]
    assert isinstance(info.value.__cause__, ExceptionGroup)
    assert [str(e) for e in info.value.__cause__.exceptions] == ["p1 error", "p2 error"]


async def test_context_window_error_aborts_retries_and_tries_model_fallbacks() -> None:
    """A system-prompt overflow is never retried; each fallback model is tried once, then it fails.

    The seed failed at once; issue 9 moves an overflow truncation cannot fix to
    the next candidate, which may have a larger window.
    """
    p = failing(
        "OpenAI Codex stream error: Your input exceeds the context window of this model. "
        "Please adjust your input and try again."
    )
    rp = reliable(("openai-codex", p), retries=4).with_model_fallbacks(
        {"gpt-5.3-codex": ["gpt-5.2-codex"]}
    )
    with pytest.raises(ContextWindowExceededError) as info:
        await rp.simple_chat("hello", "gpt-5.3-codex", 0.0)
    assert "context window" in str(info.value)
    assert [c.model for c in p.calls] == ["gpt-5.3-codex", "gpt-5.2-codex"]


async def test_aggregated_error_marks_non_retryable_model_mismatch_with_details() -> None:
    """A non-retryable error spends no retry budget and is marked non_retryable."""
    p = failing("unsupported model: glm-4.7")
    with pytest.raises(FailoverError) as info:
        await reliable(("custom", p), retries=3).simple_chat("hello", "glm-4.7", 0.0)
    assert "non_retryable" in str(info.value)
    assert "error=unsupported model: glm-4.7" in str(info.value)
    assert p.call_count == 1


async def test_skips_retries_on_non_retryable_error() -> None:
    """A 401 moves to the next provider without retrying."""
    primary = failing("401 Unauthorized")
    fallback = ScriptedProvider([Reply("from fallback")])
    rp = reliable(("primary", primary), ("fallback", fallback), retries=3)
    assert await rp.simple_chat("hello", "test", 0.0) == "from fallback"
    assert (primary.call_count, fallback.call_count) == (1, 1)


async def test_chat_with_history_retries_then_recovers(
    anyio_backend: object,
) -> None:
    """History calls retry like system-prompt calls."""
    p = fail_then(1, "temporary", "history ok")
    msgs = [ChatMessage.system("system"), ChatMessage.user("hello")]
    assert await reliable(("primary", p)).chat_with_history(msgs, "test", 0.0) == "history ok"
    assert p.call_count == 2


async def test_chat_with_history_falls_back(anyio_backend: object) -> None:
    """History calls fall back like system-prompt calls."""
    primary = failing("primary down")
    fallback = ScriptedProvider([Reply("fallback ok")])
    rp = reliable(("primary", primary), ("fallback", fallback), retries=1)
    assert await rp.chat_with_history(USER, "test", 0.0) == "fallback ok"
    assert (primary.call_count, fallback.call_count) == (2, 1)


async def test_model_failover_tries_fallback_model() -> None:
    """With no retries, the next model of the chain is tried on the same provider."""
    p = ScriptedProvider(
        {
            "claude-opus": [Fail(RuntimeError("500 model claude-opus unavailable"))],
            "claude-sonnet": [Reply("ok from sonnet")],
        }
    )
    rp = reliable(("anthropic", p), retries=0).with_model_fallbacks(
        {"claude-opus": ["claude-sonnet"]}
    )
    assert await rp.simple_chat("hello", "claude-opus", 0.0) == "ok from sonnet"
    assert p.models == ["claude-opus", "claude-sonnet"]


async def test_model_failover_all_models_fail() -> None:
    """Every model of the chain is tried before giving up."""
    p = failing("500 unavailable")
    rp = reliable(("p1", p), retries=0).with_model_fallbacks({"model-a": ["model-b", "model-c"]})
    with pytest.raises(FailoverError, match="All providers/models failed"):
        await rp.simple_chat("hello", "model-a", 0.0)
    assert p.models == ["model-a", "model-b", "model-c"]


async def test_no_model_fallbacks_behaves_like_before() -> None:
    """Without model chains only the requested model is used."""
    p = ScriptedProvider([Reply("ok")])
    assert await reliable(("primary", p)).simple_chat("hello", "test", 0.0) == "ok"
    assert p.models == ["test"]


async def test_non_retryable_skips_retries_for_401() -> None:
    """The canonical 401 shape is not retried."""
    p = failing("API error (401 Unauthorized): invalid key")
    with pytest.raises(FailoverError):
        await reliable(("primary", p), retries=5).simple_chat("hello", "test", 0.0)
    assert p.call_count == 1


async def test_non_retryable_rate_limit_skips_retries_for_plan_errors() -> None:
    """A quota/plan 429 fails over at once and is marked rate_limited_non_retryable."""
    p = failing(
        'API error (429 Too Many Requests): {"code":1311,"message":"plan does not include glm-5"}'
    )
    with pytest.raises(FailoverError, match="rate_limited_non_retryable"):
        await reliable(("primary", p), retries=5).simple_chat("hello", "test", 0.0)
    assert p.call_count == 1


CALL = ToolCall("call_1", "shell", '{"command":"date"}')


async def test_chat_delegates_to_inner_provider() -> None:
    """chat() returns the inner provider's text and tool calls."""
    p = ScriptedProvider([Reply("ok", tool_calls=[CALL])], native_tools=True)
    resp = await reliable(("primary", p)).chat(ChatRequest(USER), "test-model", 0.0)
    assert resp.text == "ok"
    assert list(resp.tool_calls) == [CALL]
    assert p.call_count == 1


async def test_chat_retries_and_recovers(anyio_backend: object) -> None:
    """chat() retries retryable failures."""
    p = fail_then(2, "temporary failure", "recovered", native_tools=True)
    resp = await reliable(("primary", p), retries=3).chat(ChatRequest(USER), "test-model", 0.0)
    assert resp.text == "recovered"
    assert p.call_count == 3


async def test_chat_preserves_native_tools_support() -> None:
    """Native tool support is the primary provider's."""
    assert reliable(
        ("primary", ScriptedProvider([Reply()], native_tools=True))
    ).supports_native_tools
    assert not reliable(("primary", ScriptedProvider([Reply()]))).supports_native_tools


async def test_chat_returns_aggregated_error_when_all_providers_fail() -> None:
    """chat() aggregates failures like simple_chat()."""
    rp = reliable(("p1", failing("p1 chat error")), ("p2", failing("p2 chat error")), retries=0)
    with pytest.raises(FailoverError) as info:
        await rp.chat(ChatRequest(USER), "test", 0.0)
    for part in (
        "provider=p1 model=test",
        "provider=p2 model=test",
        "error=p1 chat error",
        "error=p2 chat error",
    ):
        assert part in str(info.value)


async def test_chat_tries_model_failover_on_failure() -> None:
    """chat() walks the model chain."""
    p = ScriptedProvider(
        {
            "claude-opus": [Fail(RuntimeError("500 model claude-opus unavailable"))],
            "claude-sonnet": [Reply("ok from sonnet")],
        },
        native_tools=True,
    )
    rp = reliable(("anthropic", p), retries=0).with_model_fallbacks(
        {"claude-opus": ["claude-sonnet"]}
    )
    resp = await rp.chat(ChatRequest(USER), "claude-opus", 0.0)
    assert resp.text == "ok from sonnet"
    assert p.models == ["claude-opus", "claude-sonnet"]


async def test_chat_skips_non_retryable_errors() -> None:
    """chat() does not retry a 401."""
    primary = failing("401 Unauthorized", native_tools=True)
    fallback = ScriptedProvider([Reply("from fallback")], native_tools=True)
    rp = reliable(("primary", primary), ("fallback", fallback), retries=3)
    assert (await rp.chat(ChatRequest(USER), "test", 0.0)).text == "from fallback"
    assert (primary.call_count, fallback.call_count) == (1, 1)


OVERFLOW = (
    "request (8968 tokens) exceeds the available context size (8448 tokens), try increasing it"
)
LONG = [
    ChatMessage.system("system prompt"),
    ChatMessage.user("old message 1"),
    ChatMessage.assistant("old response 1"),
    ChatMessage.user("old message 2"),
    ChatMessage.assistant("old response 2"),
    ChatMessage.user("current question"),
]


async def test_chat_with_history_truncates_on_context_overflow() -> None:
    """A context overflow halves the history once and retries at once, counting an attempt."""
    p = ScriptedProvider([Fail(RuntimeError(OVERFLOW)), Reply("recovered after truncation")])
    rp = reliable(("local", p), retries=3)
    assert await rp.chat_with_history(LONG, "local-model", 0.0) == "recovered after truncation"
    assert p.call_count == 2
    assert [len(c.messages) for c in p.calls] == [6, 4]
    assert p.calls[1].messages == (LONG[0], *LONG[3:])


async def test_context_overflow_with_no_history_to_truncate_bails_immediately() -> None:
    """Nothing to drop means ContextWindowExceededError after one call."""
    p = failing(OVERFLOW)
    rp = reliable(("local", p), retries=3)
    msgs = [ChatMessage.system("huge system prompt"), ChatMessage.user("hello")]
    with pytest.raises(ContextWindowExceededError, match="cannot be reduced further"):
        await rp.chat_with_history(msgs, "local-model", 0.0)
    assert p.call_count == 1


async def test_fallback_records_provider_fallback_info() -> None:
    """Serving from a fallback provider records who asked and who served; take clears it."""
    rp = reliable(
        ("broken", failing("401 Unauthorized")),
        ("working", ScriptedProvider([Reply("hello from working")])),
    )
    with fallback_scope():
        assert await rp.simple_chat("hi", "test-model", 0.0) == "hello from working"
        info = take_last_provider_fallback()
        assert info is not None
        assert (info.requested_provider, info.requested_model) == ("broken", "test-model")
        assert (info.actual_provider, info.actual_model) == ("working", "test-model")
        assert take_last_provider_fallback() is None


# -- beyond the seed ----------------------------------------------------------


async def test_retry_after_is_waited_exactly(anyio_backend: object) -> None:
    """A Retry-After of 3 s starts the retry at exactly t+3."""
    err = ProviderError("429 Too Many Requests", status_code=429, retry_after=3.0)
    p = ScriptedProvider([Fail(err), Reply("ok")])
    assert await reliable(("p", p), backoff=0.5).simple_chat("x", "m", 0.0) == "ok"
    assert [c.started_at for c in p.calls] == [0.0, 3.0]


async def test_backoff_doubles_with_pinned_jitter(anyio_backend: object) -> None:
    """Without Retry-After waits are jittered in [b/2, b] and b doubles (rng pinned to the top)."""

    class Top(random.Random):
        def random(self) -> float:
            return 0.999999999

    p = ScriptedProvider([Fail(RuntimeError("503 Service Unavailable"))] * 3 + [Reply("ok")])
    rp = ReliableProvider([("p", p)], 3, 1.0, rng=Top())
    assert await rp.simple_chat("x", "m", 0.0) == "ok"
    starts = [c.started_at for c in p.calls]
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [1.0, 2.0, 4.0]


async def test_backoff_is_capped_at_ten_seconds(anyio_backend: object) -> None:
    """Doubling stops at 10 s."""

    class Top(random.Random):
        def random(self) -> float:
            return 0.999999999

    p = ScriptedProvider([Fail(RuntimeError("503"))] * 4 + [Reply("ok")])
    await ReliableProvider([("p", p)], 4, 6.0, rng=Top()).simple_chat("x", "m", 0.0)
    starts = [c.started_at for c in p.calls]
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [
        6.0,
        10.0,
        10.0,
        10.0,
    ]


async def test_base_backoff_floor(anyio_backend: object) -> None:
    """A base backoff below 50 ms is raised to 50 ms (Retry-After 0 waits the base)."""
    err = ProviderError("429", status_code=429, retry_after=0.0)
    p = ScriptedProvider([Fail(err), Reply("ok")])
    rp = ReliableProvider([("p", p)], 1, 0.0)
    assert rp.base_backoff == 0.05
    await rp.simple_chat("x", "m", 0.0)
    assert p.calls[1].started_at == pytest.approx(0.05)


async def test_cancellation_during_call_propagates_and_stops(
    anyio_backend: object,
) -> None:
    """Cancelling a hung call ends it at the deadline; nothing else is tried or recorded."""
    hung = ScriptedProvider([Hang()])
    spare = ScriptedProvider([Reply("never")])
    rp = reliable(("hung", hung), ("spare", spare))
    with anyio.move_on_after(5) as scope:
        await rp.simple_chat("x", "m", 0.0)
    assert scope.cancelled_caught
    assert current_time() == 5.0
    assert (hung.call_count, spare.call_count) == (1, 0)
    assert hung.calls[0].cancelled


async def test_cancellation_during_backoff(anyio_backend: object) -> None:
    """Cancelling during the backoff sleep stops the retry loop at once."""
    err = ProviderError("429", status_code=429, retry_after=10.0)
    p = ScriptedProvider([Fail(err), Reply("never")])
    with anyio.move_on_after(4) as scope:
        await reliable(("p", p)).simple_chat("x", "m", 0.0)
    assert scope.cancelled_caught
    assert current_time() == 4.0
    assert p.call_count == 1


async def test_base_exceptions_are_not_failures() -> None:
    """A BaseException from a provider (KeyboardInterrupt) passes straight through."""
    p = ScriptedProvider([Fail(KeyboardInterrupt())])  # type: ignore[arg-type]
    spare = ScriptedProvider([Reply("never")])
    with pytest.raises(KeyboardInterrupt):
        await reliable(("p", p), ("spare", spare)).simple_chat("x", "m", 0.0)
    assert spare.call_count == 0


async def test_fallback_info_is_isolated_between_concurrent_tasks(
    anyio_backend: object,
) -> None:
    """Two concurrent requests in their own scopes each see only their own fallback."""
    primary = ScriptedProvider(
        lambda i, model: Fail(RuntimeError("500")) if model == "bad" else Reply("p", delay=1)
    )
    backup = ScriptedProvider([Reply("b", delay=2)])
    rp = reliable(("primary", primary), ("backup", backup), retries=0)
    seen: dict[str, object] = {}

    async def one(model: str) -> None:
        with fallback_scope():
            await rp.simple_chat("x", model, 0.0)
            seen[model] = take_last_provider_fallback()

    async with anyio.create_task_group() as nursery:
        nursery.start_soon(one, "bad")
        nursery.start_soon(one, "good")
    assert seen["good"] is None
    info = seen["bad"]
    assert info is not None and info.actual_provider == "backup"  # type: ignore[attr-defined]


async def test_outside_a_scope_fallback_info_is_not_recorded() -> None:
    """Without fallback_scope recording is a no-op and take returns None."""
    rp = reliable(("a", failing("401 Unauthorized")), ("b", ScriptedProvider([Reply("ok")])))
    await rp.simple_chat("x", "m", 0.0)
    assert take_last_provider_fallback() is None


async def test_retry_alone_records_fallback_info(anyio_backend: object) -> None:
    """An answer that needed a retry on the primary is reported too."""
    rp = reliable(("a", fail_then(1, "503", "ok")))
    with fallback_scope():
        await rp.simple_chat("x", "m", 0.0)
        info = take_last_provider_fallback()
    assert info is not None and info.actual_provider == "a"


async def test_secrets_never_reach_the_failure_text() -> None:
    """Keys echoed by an upstream are redacted in the message, the trail and the logs."""
    key = "sk-proj-abcdefghijklmnop1234567890"
    p = failing(f"401 Unauthorized: Incorrect API key provided: {key}")
    with pytest.raises(FailoverError) as info:
        await reliable(("p", p)).simple_chat("x", "m", 0.0)
    assert key not in str(info.value)
    assert "[REDACTED]" in info.value.attempts[0].error


async def test_logs_are_structured_and_sanitized(
    anyio_backend: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Retries log through the reliant logger with extra fields and no secrets."""
    key = "sk-live-0123456789abcdef"
    p = ScriptedProvider([Fail(RuntimeError(f"503 upstream saw {key}")), Reply("ok")])
    with caplog.at_level(logging.INFO, logger="reliant"):
        await reliable(("p", p)).simple_chat("x", "m", 0.0)
    retry = next(r for r in caplog.records if r.getMessage() == "provider call failed, retrying")
    assert (retry.provider, retry.model, retry.attempt, retry.reason) == ("p", "m", 1, "retryable")  # type: ignore[attr-defined]
    assert key not in caplog.text and key not in retry.error  # type: ignore[attr-defined]


async def test_model_aliases_map_per_provider() -> None:
    """A fallback provider receives its own spelling of the model; the trail shows it."""
    a = failing("500", name="a")
    b = ScriptedProvider([Reply("ok")])
    rp = reliable(
        ("a", a), ("b", b), retries=0, model_aliases={"b": {"claude-opus": "anthropic/claude-opus"}}
    )
    with fallback_scope():
        assert await rp.simple_chat("x", "claude-opus", 0.0) == "ok"
        info = take_last_provider_fallback()
    assert a.models == ["claude-opus"] and b.models == ["anthropic/claude-opus"]
    assert info is not None and info.actual_model == "anthropic/claude-opus"


async def test_truncated_overflow_again_moves_on() -> None:
    """After one truncation a second overflow moves to the next candidate, not a retry."""
    small = failing(OVERFLOW)
    big = ScriptedProvider([Reply("fits")])
    rp = reliable(("small", small), ("big", big), retries=3)
    assert await rp.chat_with_history(LONG, "m", 0.0) == "fits"
    assert small.call_count == 2
    assert len(big.calls[0].messages) == 4


async def test_all_context_failures_raise_context_window_error() -> None:
    """When every failure was a context overflow the error says so."""
    rp = reliable(("a", failing(OVERFLOW)), retries=3)
    with pytest.raises(ContextWindowExceededError):
        await rp.chat_with_history(LONG, "m", 0.0)


async def test_warmup_failures_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """warmup() swallows provider failures and logs them."""

    class Cold(ScriptedProvider):
        async def warmup(self) -> None:
            raise RuntimeError("no route")

    rp = reliable(("cold", Cold([Reply()])), ("ok", ScriptedProvider([Reply()])))
    with caplog.at_level(logging.WARNING, logger="reliant"):
        await rp.warmup()
    assert "warmup failed" in caplog.text


async def test_capability_flags() -> None:
    """Vision and streaming flags are true if any provider has them."""
    rp = reliable(
        ("a", ScriptedProvider([Reply()], streaming=False)),
        ("b", ScriptedProvider([Reply()], vision=True, tool_events=True)),
    )
    assert rp.supports_vision and rp.supports_streaming and rp.supports_streaming_tool_events
    assert not reliable(("a", ScriptedProvider([Reply()], streaming=False))).supports_streaming


async def test_chat_with_tools_passes_tools() -> None:
    """chat_with_tools forwards the tools to the provider."""
    p = ScriptedProvider([Reply("ok")], native_tools=True)
    tool = ToolSpec("shell", "run", {"type": "object"})
    resp = await reliable(("p", p)).chat_with_tools(USER, [tool], "m", 0.0)
    assert resp.text == "ok" and p.calls[0].tools == (tool,)


async def test_nested_reliable_provider_counts_inner_failure_as_final(
    anyio_backend: object,
) -> None:
    """A nested ReliableProvider that exhausted its chain is not retried by the outer one."""
    inner_p = failing("503")
    inner = reliable(("inner", inner_p), retries=1)
    outer_b = ScriptedProvider([Reply("outer ok")])
    outer = reliable(("nested", inner), ("b", outer_b), retries=2)
    assert await outer.simple_chat("x", "m", 0.0) == "outer ok"
    assert inner_p.call_count == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"providers": []}, "at least one"),
        (
            {"providers": [("a", ScriptedProvider([Reply()])), ("a", ScriptedProvider([Reply()]))]},
            "duplicate",
        ),
        ({"max_retries": -1}, "max_retries"),
        ({"base_backoff": float("nan")}, "base_backoff"),
        ({"first_chunk_timeout": 0}, "first_chunk_timeout"),
        ({"model_aliases": {"nope": {"a": "b"}}}, "unknown provider"),
    ],
)
def test_bad_configuration_is_rejected(kwargs: dict[str, object], message: str) -> None:
    """Bad constructor input raises a clear ValueError."""
    args: dict[str, object] = {"providers": [("a", ScriptedProvider([Reply()]))]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ReliableProvider(**args)  # type: ignore[arg-type]


def test_non_provider_is_rejected() -> None:
    """Passing something that is not a Provider is a TypeError naming it."""
    with pytest.raises(TypeError, match="not a Provider"):
        ReliableProvider([("a", object())])  # type: ignore[list-item]


async def test_trail_includes_the_cause_chain_once(anyio_backend: object) -> None:
    """The trail shows a wrapped root cause, but not twice when the message already quotes it."""
    root = OSError("connection refused")
    wrapped = ProviderError("p transport error: connection refused", provider="p")
    wrapped.__cause__ = root
    other = RuntimeError("gateway said no")
    other.__cause__ = OSError("socket closed")
    p = ScriptedProvider([Fail(wrapped), Fail(other)])
    with pytest.raises(FailoverError) as info:
        await reliable(("p", p), retries=1, backoff=0.0).simple_chat("x", "m", 0.0)
    assert [a.error for a in info.value.attempts] == [
        "p transport error: connection refused",
        "gateway said no: socket closed",
    ]
