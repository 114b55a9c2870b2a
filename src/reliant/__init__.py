"""reliant: reliability for calls to LLM providers, from trio and from asyncio.

Retries with backoff and jitter, Retry-After, provider and model fallback
chains, context-window recovery and streaming failover, with strict
structured-concurrency guarantees. Start with :class:`ReliableProvider`.

``import reliant`` stays light: HTTP providers (``reliant.providers``), the
testing kit (``reliant.testing``), the CLI and ``RedisHealth`` (with its
Redis client, coredis) and the event classes load only when used, and
``reliant.otel`` imports OpenTelemetry only when ``instrument()`` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._bridge import ReliableStream as ReliableStream
from ._exceptions import Attempt as Attempt
from ._exceptions import ContentFilterError as ContentFilterError
from ._exceptions import ContextWindowExceededError as ContextWindowExceededError
from ._exceptions import FailoverError as FailoverError
from ._exceptions import FakeServerSpecError as FakeServerSpecError
from ._exceptions import NoCapacityError as NoCapacityError
from ._exceptions import NoStreamingProviderError as NoStreamingProviderError
from ._exceptions import ProviderError as ProviderError
from ._exceptions import ReliantError as ReliantError
from ._exceptions import StreamError as StreamError
from ._fallback_info import ProviderFallbackInfo as ProviderFallbackInfo
from ._fallback_info import fallback_scope as fallback_scope
from ._fallback_info import take_last_provider_fallback as take_last_provider_fallback
from ._fallback_info import take_last_request_record as take_last_request_record
from ._health import HealthPolicy as HealthPolicy
from ._health import HealthStore as HealthStore
from ._health import LocalHealth as LocalHealth
from ._health import RouteHealth as RouteHealth
from ._provider import Provider as Provider
from ._provider import stream_from_generator as stream_from_generator
from ._reliable import ReliableProvider as ReliableProvider
from ._sanitize import register_secret as register_secret
from ._sanitize import sanitize_api_error as sanitize_api_error
from ._types import ChatMessage as ChatMessage
from ._types import ChatRequest as ChatRequest
from ._types import ChatResponse as ChatResponse
from ._types import Final as Final
from ._types import FinishReason as FinishReason
from ._types import ReasoningDelta as ReasoningDelta
from ._types import StreamChunk as StreamChunk
from ._types import StreamEvent as StreamEvent
from ._types import StreamOptions as StreamOptions
from ._types import StreamRestart as StreamRestart
from ._types import TextDelta as TextDelta
from ._types import TokenUsage as TokenUsage
from ._types import ToolCall as ToolCall
from ._types import ToolCallEvent as ToolCallEvent
from ._types import ToolSpec as ToolSpec
from ._types import UsageEvent as UsageEvent

if TYPE_CHECKING:
    from ._events import AttemptFailed as AttemptFailed
    from ._events import AttemptSkipped as AttemptSkipped
    from ._events import AttemptStarted as AttemptStarted
    from ._events import AttemptSucceeded as AttemptSucceeded
    from ._events import CircuitClosed as CircuitClosed
    from ._events import CircuitOpened as CircuitOpened
    from ._events import FallbackTaken as FallbackTaken
    from ._events import HedgeLost as HedgeLost
    from ._events import HedgeStarted as HedgeStarted
    from ._events import ReliantEvent as ReliantEvent
    from ._events import RequestFinished as RequestFinished
    from ._events import RequestRecord as RequestRecord
    from ._events import RequestStarted as RequestStarted
    from ._events import RetryScheduled as RetryScheduled
    from ._events import RouteChosen as RouteChosen
    from ._events import StreamFinished as StreamFinished
    from ._events import StreamRecovered as StreamRecovered
    from ._events import StreamStarted as StreamStarted
    from ._hedge import Hedge as Hedge
    from ._redis_health import RedisHealth as RedisHealth
    from ._redis_routing import RedisRouting as RedisRouting
    from ._router import affinity_key as affinity_key
    from ._routing import DeploymentView as DeploymentView
    from ._routing import RateLimit as RateLimit
    from ._routing import Routing as Routing
    from ._routing_state import LocalRouting as LocalRouting
    from ._routing_state import RoutingStore as RoutingStore

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "AttemptFailed",
    "AttemptSkipped",
    "AttemptStarted",
    "AttemptSucceeded",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "CircuitClosed",
    "CircuitOpened",
    "ContentFilterError",
    "ContextWindowExceededError",
    "DeploymentView",
    "FailoverError",
    "FakeServerSpecError",
    "FallbackTaken",
    "Final",
    "FinishReason",
    "HealthPolicy",
    "HealthStore",
    "Hedge",
    "HedgeLost",
    "HedgeStarted",
    "LocalHealth",
    "LocalRouting",
    "NoCapacityError",
    "NoStreamingProviderError",
    "Provider",
    "ProviderError",
    "ProviderFallbackInfo",
    "RateLimit",
    "ReasoningDelta",
    "RedisHealth",
    "RedisRouting",
    "ReliableProvider",
    "ReliableStream",
    "ReliantError",
    "ReliantEvent",
    "RequestFinished",
    "RequestRecord",
    "RequestStarted",
    "RetryScheduled",
    "RouteChosen",
    "RouteHealth",
    "Routing",
    "RoutingStore",
    "StreamChunk",
    "StreamError",
    "StreamEvent",
    "StreamFinished",
    "StreamOptions",
    "StreamRecovered",
    "StreamRestart",
    "StreamStarted",
    "TextDelta",
    "TokenUsage",
    "ToolCall",
    "ToolCallEvent",
    "ToolSpec",
    "UsageEvent",
    "affinity_key",
    "fallback_scope",
    "register_secret",
    "sanitize_api_error",
    "stream_from_generator",
    "take_last_provider_fallback",
    "take_last_request_record",
]


_EVENTS = frozenset(
    (
        "AttemptFailed",
        "AttemptSkipped",
        "AttemptStarted",
        "AttemptSucceeded",
        "CircuitClosed",
        "CircuitOpened",
        "FallbackTaken",
        "HedgeLost",
        "HedgeStarted",
        "ReliantEvent",
        "RequestFinished",
        "RequestRecord",
        "RequestStarted",
        "RetryScheduled",
        "RouteChosen",
        "StreamFinished",
        "StreamRecovered",
        "StreamStarted",
    )
)


_ROUTING = {
    "DeploymentView": "._routing",
    "LocalRouting": "._routing_state",
    "RateLimit": "._routing",
    "Routing": "._routing",
    "RoutingStore": "._routing_state",
    "affinity_key": "._router",
}


def __getattr__(name: str) -> object:
    # The event classes and RequestRecord are imported on first access:
    # building sixteen slotted dataclasses is most of what they would add to
    # `import reliant`, and most programs never look at an event.
    if name in _EVENTS:
        from . import _events

        value = getattr(_events, name)
        globals()[name] = value
        return value
    # Hedge (and the race machinery behind it) loads when first asked for.
    if name == "Hedge":
        from ._hedge import Hedge

        globals()[name] = Hedge
        return Hedge
    # Routing across deployments loads when first asked for, like Hedge.
    if name in _ROUTING:
        import importlib

        value = getattr(importlib.import_module(_ROUTING[name], __name__), name)
        globals()[name] = value
        return value
    if name == "RedisRouting":
        from ._redis_routing import RedisRouting

        globals()[name] = RedisRouting
        return RedisRouting
    # RedisHealth needs coredis (the "redis" extra): imported on first access,
    # so `import reliant` never loads a Redis client.
    if name == "RedisHealth":
        from ._redis_health import RedisHealth

        globals()[name] = RedisHealth
        return RedisHealth
    raise AttributeError(f"module 'reliant' has no attribute {name!r}")
