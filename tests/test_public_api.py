"""The public surface is exactly what DESIGN.md lists, and `import reliant` stays light."""

from __future__ import annotations

import inspect
import subprocess
import sys

import reliant
import reliant.backoff
import reliant.classify

TOP_LEVEL = {
    # types
    "ChatMessage", "ToolCall", "ToolSpec", "TokenUsage", "ChatRequest", "ChatResponse",
    "StreamChunk", "TextDelta", "ToolCallEvent", "UsageEvent", "Final", "StreamEvent",
    "StreamOptions", "ReasoningDelta", "StreamRestart", "FinishReason",
    # providers
    "Provider", "ReliableProvider", "ReliableStream", "stream_from_generator",
    # errors
    "ReliantError", "ProviderError", "StreamError", "FailoverError",
    "ContextWindowExceededError", "NoStreamingProviderError", "Attempt", "ContentFilterError",
    "FakeServerSpecError",
    # provider health
    "HealthPolicy", "HealthStore", "LocalHealth", "RouteHealth", "Hedge", "RedisHealth",
    # fallback notification and the request record
    "ProviderFallbackInfo", "fallback_scope", "take_last_provider_fallback",
    "RequestRecord", "take_last_request_record",
    # events
    "ReliantEvent", "RequestStarted", "RequestFinished", "AttemptStarted", "AttemptSucceeded",
    "AttemptFailed", "AttemptSkipped", "RetryScheduled", "FallbackTaken", "StreamStarted",
    "StreamFinished", "StreamRecovered", "CircuitOpened", "CircuitClosed", "HedgeStarted",
    "HedgeLost", "RouteChosen",
    # routing across deployments
    "Routing", "RateLimit", "RoutingStore", "LocalRouting", "RedisRouting", "DeploymentView",
    "affinity_key",
    "NoCapacityError",
    # utilities
    "sanitize_api_error", "register_secret",
}  # fmt: skip


def test_top_level_names_are_exactly_the_documented_ones() -> None:
    """`reliant.__all__` is the documented list, sorted, and every name resolves."""
    assert set(reliant.__all__) == TOP_LEVEL
    assert reliant.__all__ == sorted(reliant.__all__)
    for name in reliant.__all__:
        assert getattr(reliant, name) is not None


def test_classify_and_backoff_modules_export_the_documented_functions() -> None:
    """reliant.classify and reliant.backoff expose the documented functions."""
    for name in (
        "is_non_retryable", "is_rate_limited", "is_non_retryable_rate_limit",
        "is_context_window_exceeded", "is_tool_schema_error", "primary_http_status",
        "json_code_field", "parse_retry_after", "classify",
    ):  # fmt: skip
        assert callable(getattr(reliant.classify, name)), name
        assert name in reliant.classify.__all__
    for name in ("jitter_backoff", "next_backoff"):
        assert callable(getattr(reliant.backoff, name)), name


def test_exception_tree() -> None:
    """The exception tree is the one drawn in _exceptions' docstring."""
    assert issubclass(reliant.ReliantError, Exception)
    for cls in (
        reliant.ProviderError,
        reliant.StreamError,
        reliant.FailoverError,
        reliant.NoStreamingProviderError,
        reliant.NoCapacityError,
    ):
        assert cls.__bases__ == (reliant.ReliantError,)
    assert reliant.ContentFilterError.__bases__ == (reliant.ProviderError,)
    assert reliant.FakeServerSpecError.__bases__ == (reliant.ProviderError,)
    assert reliant.ContextWindowExceededError.__bases__ == (reliant.FailoverError,)


def test_reliable_provider_signature() -> None:
    """ReliableProvider's constructor matches the documented signature."""
    params = inspect.signature(reliant.ReliableProvider).parameters
    assert list(params)[:3] == ["providers", "max_retries", "base_backoff"]
    assert params["max_retries"].default == 2 and params["base_backoff"].default == 0.5
    for kw in (
        "model_fallbacks",
        "model_aliases",
        "first_chunk_timeout",
        "idle_timeout",
        "stream_fallback_to_non_streaming",
    ):
        assert params[kw].kind is inspect.Parameter.KEYWORD_ONLY, kw


def test_capability_flags_are_read_only_properties() -> None:
    """Capability flags are properties, not methods."""
    for flag in (
        "supports_native_tools",
        "supports_vision",
        "supports_streaming",
        "supports_streaming_tool_events",
    ):
        assert isinstance(inspect.getattr_static(reliant.Provider, flag), property), flag


def test_import_is_light() -> None:
    """`import reliant` loads no HTTP client, Redis client, server, CLI or testing code."""
    code = (
        "import sys, reliant; heavy = [m for m in ('httpx2', 'h11', 'rich', 'reliant.providers', "
        "'reliant.testing', 'reliant._cli', 'matplotlib', 'coredis', 'reliant._redis_health') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazily_loaded_event_names_are_what_events_exports() -> None:
    """`import reliant` names the event classes without importing them; the two lists agree."""
    from reliant import _events

    aliases = {"EventHook", "RequestOutcome"}  # type aliases, not part of `reliant`
    assert set(_events.__all__) - aliases == reliant._EVENTS


# The public modules besides the top level, as the API reference documents them
# (tests/test_docs_examples.py checks that docs/reference/ lists exactly these).
CLASSIFY = {
    "Classification", "classify", "is_content_filter", "is_context_window_exceeded",
    "is_non_retryable", "is_non_retryable_rate_limit", "is_rate_limited",
    "is_tool_schema_error", "json_code_field", "parse_retry_after", "primary_http_status",
}  # fmt: skip
BACKOFF = {
    "MAX_BACKOFF", "MAX_RETRY_AFTER", "MIN_BASE_BACKOFF", "double_backoff", "jitter_backoff",
    "next_backoff",
}  # fmt: skip
PROVIDERS = {
    "Anthropic", "AzureOpenAI", "Bedrock", "Gemini", "OpenAICompatible", "OpenAIResponses",
    "DEFAULT_LIMITS", "DEFAULT_TIMEOUT", "create_client", "parse_retry_after",
}  # fmt: skip
TESTING = {
    "Behavior", "BehaviorKind", "Deployment", "DeploymentStats", "Disconnect", "Empty", "Fail",
    "FakeLLMServer", "FakeRequest", "Hang", "NoJitter", "Outcome", "Reply", "Script",
    "ScriptedCall", "ScriptedProvider", "Stream",
    "serve_fake_llm",
}  # fmt: skip
# reliant.testing.fake_server re-exports the server's names from reliant.testing; these are its own.
FAKE_SERVER = {"RawResponse", "gzip_bomb", "http_response", "main", "trickle"}
OTEL = {"DURATION_BUCKETS", "TOKEN_BUCKETS", "Instrumentation", "instrument"}

PUBLIC_MODULES = {
    "reliant": TOP_LEVEL,
    "reliant.classify": CLASSIFY,
    "reliant.backoff": BACKOFF,
    "reliant.providers": PROVIDERS,
    "reliant.testing": TESTING,
    "reliant.testing.fake_server": FAKE_SERVER,
    "reliant.otel": OTEL,
}


def test_public_modules_export_exactly_the_documented_names() -> None:
    """Each public module's `__all__` is its documented list (fake_server: its own names)."""
    import importlib

    for module_name, names in PUBLIC_MODULES.items():
        module = importlib.import_module(module_name)
        exported = set(module.__all__)
        if module_name == "reliant.testing.fake_server":
            exported -= TESTING
        assert exported == names, module_name
