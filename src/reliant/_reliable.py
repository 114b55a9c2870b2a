"""``ReliableProvider``: retries, fallback chains and streaming failover around providers.

Every call kind is a few lines here: it says how to make *one* attempt and
hands that to the failover planner (``_failover``), which owns the model
chain, the provider chain, retries, classification, backoff, truncation, the
failure trail and fallback notification. Streams do the same through the
bridge (``_bridge``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ._backend import current as current_backend
from ._bridge import BridgeSpec, OpenUpstream, StreamContext
from ._failover import Planner
from ._health import HealthPolicy, HealthStore, LocalHealth, RouteHealth, RouteKey
from ._log import logger
from ._provider import Provider
from ._records import Observer
from ._types import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    StreamChunk,
    StreamEvent,
    StreamOptions,
    ToolSpec,
    response_events,
)

__all__ = ["DEFAULT_FIRST_CHUNK_TIMEOUT", "DEFAULT_IDLE_TIMEOUT", "ReliableProvider"]


T = TypeVar("T")

DEFAULT_FIRST_CHUNK_TIMEOUT = 60.0
"""Seconds for connect + response headers + first item of a stream.

Long enough for reasoning models that think before their first token, short
enough that a hung upstream fails over within a minute instead of the two
minutes a total timeout would take.
"""

DEFAULT_IDLE_TIMEOUT = 60.0
"""Seconds allowed between two items of a committed stream (never a total cap)."""

if TYPE_CHECKING:
    # Loaded on first use (hedging, mid-stream recovery, events): `import
    # reliant` stays light for the many programs that use none of them.
    from ._events import EventHook
    from ._hedge import Hedge, Hedger
    from ._recovery import ItemOps, MidStream, OpenContinuation, RecoverySpec
    from ._router import Router
    from ._routing import DeploymentView, RateLimit, Routing
    from ._routing_state import RoutingStore

_MID_STREAM_MODES = ("error", "restart", "continue")

_DEFAULT_OPTIONS = StreamOptions()
_DEFAULT_HEALTH = HealthPolicy()

MAX_RETRIES = 100
"""Largest ``max_retries`` accepted (101 attempts per provider and model)."""


class ReliableProvider(Provider):
    """A provider that retries, falls back and fails over across other providers.

    Args:
        providers: In priority order, each a provider that has a ``name``
            (``OpenAICompatible(name=...)``, ``Anthropic(name=...)``,
            ``ScriptedProvider(name=...)``), which is then its name here,
            or a ``(name, provider)`` pair, whose name wins (for providers
            without one, or to rename one). Names must be unique; failure
            trails, events and fallback information use them throughout,
            the leaf's own error text included.
        max_retries: Retries per (provider, model) pair (so ``max_retries + 1`` attempts).
        base_backoff: First backoff in seconds; floored at 0.05, doubled per
            retry up to 10 s; a Retry-After (capped at 30 s) replaces it.
        model_fallbacks: model -> models to try, in order, after it failed
            on every provider.
        model_aliases: provider name -> {requested model: the id that
            provider expects}, for fallback providers that spell models
            differently.
        first_chunk_timeout: Seconds a stream attempt may take to deliver its
            first item, connecting and waiting for headers included; hitting
            it fails over like a retryable error. None disables it.
        idle_timeout: Longest gap between items after a stream committed;
            hitting it ends the stream with ``StreamError``. None disables it.
        stream_fallback_to_non_streaming: When every streaming candidate
            failed before its first item (or none can stream), serve the
            request through the non-streaming path and deliver it as one
            chunk plus the final one.
        rng: Random source for backoff jitter. Tests that assert exact
            virtual times pass ``reliant.testing.NoJitter()`` (every wait is
            its full base) or a seeded ``random.Random``.
        health: Provider health (circuit breakers, Retry-After cooldowns,
            retry budget) shared by every request of this provider: a
            :class:`HealthPolicy` (the default, kept in this process), a
            store to share (``LocalHealth``, ``RedisHealth``), or None for
            the seed's behaviour where every request pays every retry.
        mid_stream: What a committed stream that breaks mid-way becomes:
            ``"error"`` (a ``StreamError``, the default), ``"restart"`` (the
            next candidate answers anew after a restart signal:
            ``StreamChunk.restarted`` / a ``StreamRestart`` event) or
            ``"continue"`` (a candidate that ``supports_prefill`` continues
            the delivered text; otherwise a restart).
        max_stream_recoveries: Recoveries per request (0 to 10, default 1).
        fallback_on_content_filter: A content-filter refusal is final by
            default (``ContentFilterError``, one call in total); True sends
            the request on to the next candidate like any non-retryable error.
        hedge: Hedged requests (:class:`Hedge`): when an attempt has not
            answered (first chunk, or whole response) within ``after``
            seconds, the next candidate is started too and the first to
            answer wins; None (the default) never hedges.
        on_event: A synchronous callable given every event of every
            request (``reliant.ReliantEvent``: attempts, retries, fallbacks,
            breakers, hedges, recoveries, the request's end), inline, from
            the request's task. It must not block; if it raises, that is
            logged once and ignored. More listeners: :meth:`add_listener`.
        routing: How requests spread over peer deployments
            (:class:`Routing`: tiers, a balancing strategy, prompt-prefix
            affinity); None keeps the plain chain. The chosen deployment
            is the first candidate, its tier's others follow in the
            balancer's order, then the next tiers.
        rate_limits: ``{name: RateLimit(rpm=..., tpm=...)}``: client-side
            limits per deployment; a deployment without room gets no call
            (limits the servers announce in their headers are learned too).
        routing_store: Where routing state lives (in flight, latency, rate
            windows); the default is this process, ``RedisRouting`` shares it
            across a fleet.

    Raises:
        ValueError: For an empty provider list, duplicate names, negative
            retries or backoff, non-positive timeouts, or aliases, tiers or
            rate limits naming an unknown provider.
        TypeError: When a provider is not a ``Provider``, or ``on_event``
            is not a synchronous callable (an ``async def`` is refused).
    """

    def __init__(
        self,
        providers: Sequence[tuple[str, Provider] | Provider],
        max_retries: int = 2,
        base_backoff: float = 0.5,
        *,
        model_fallbacks: Mapping[str, Sequence[str]] | None = None,
        model_aliases: Mapping[str, Mapping[str, str]] | None = None,
        first_chunk_timeout: float | None = DEFAULT_FIRST_CHUNK_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        stream_fallback_to_non_streaming: bool = False,
        rng: random.Random | None = None,
        health: HealthPolicy | HealthStore | None = _DEFAULT_HEALTH,
        mid_stream: MidStream = "error",
        max_stream_recoveries: int = 1,
        fallback_on_content_filter: bool = False,
        hedge: Hedge | None = None,
        on_event: EventHook | None = None,
        routing: Routing | None = None,
        rate_limits: Mapping[str, RateLimit] | None = None,
        routing_store: RoutingStore | None = None,
    ) -> None:
        providers = _named(providers)
        from ._observe import Emitter, check_hook

        listeners = () if on_event is None else (check_hook(on_event),)
        if mid_stream not in _MID_STREAM_MODES:
            raise ValueError(
                f"mid_stream must be one of {', '.join(_MID_STREAM_MODES)}, got {mid_stream!r}"
            )
        if (
            isinstance(max_stream_recoveries, bool)
            or not isinstance(max_stream_recoveries, int)
            or not 0 <= max_stream_recoveries <= 10
        ):
            raise ValueError(
                "max_stream_recoveries must be an integer from 0 to 10, "
                f"got {max_stream_recoveries!r}"
            )
        _validate(providers, max_retries, base_backoff, model_fallbacks, model_aliases, rng)
        _validate_timeout("first_chunk_timeout", first_chunk_timeout)
        _validate_timeout("idle_timeout", idle_timeout)
        store = _health_store(health)
        self._providers = providers
        router = _router(providers, routing, rate_limits, routing_store, rng)
        walked: tuple[tuple[str, Provider], ...] = providers
        if router is not None:
            # The planner walks the deployments wrapped with routing's
            # bookkeeping; callers keep seeing the providers they gave.
            walked = tuple((name, router.wrap(name, p)) for name, p in providers)
        self._router = router
        self._planner = Planner(
            walked,
            max_retries,
            base_backoff,
            model_fallbacks or {},
            model_aliases or {},
            rng,
            store,
            fallback_on_content_filter=bool(fallback_on_content_filter),
            hedger=_hedger(hedge),
            observer=_observer,
            router=router,
        )
        self._emitter = Emitter(listeners)
        self._planner.emit = self._emitter if listeners else None
        self.hedge = hedge
        self._candidates: dict[bool, tuple[tuple[str, Provider], ...]] = {}
        self.mid_stream: MidStream = mid_stream
        self.max_stream_recoveries = max_stream_recoveries
        self._aliases = {k: dict(v) for k, v in (model_aliases or {}).items()}
        self._base_backoff = base_backoff
        self._rng = rng
        self.first_chunk_timeout = first_chunk_timeout
        self.idle_timeout = idle_timeout
        self.stream_fallback_to_non_streaming = stream_fallback_to_non_streaming

    # -- configuration -----------------------------------------------------

    @property
    def providers(self) -> tuple[tuple[str, Provider], ...]:
        """The ``(name, provider)`` chain in priority order."""
        return self._providers

    @property
    def max_retries(self) -> int:
        """Retries per (provider, model) pair."""
        return self._planner.max_retries

    @property
    def base_backoff(self) -> float:
        """The effective first backoff in seconds (after the 50 ms floor)."""
        return self._planner.base_backoff

    def model_chain(self, model: str) -> list[str]:
        """The models tried for ``model``, in order."""
        return self._planner.model_chain(model)

    def with_model_fallbacks(
        self, model_fallbacks: Mapping[str, Sequence[str]]
    ) -> ReliableProvider:
        """A copy of this provider using ``model_fallbacks`` as its model chains."""
        return ReliableProvider(
            self.providers,
            self.max_retries,
            self._base_backoff,
            model_fallbacks=model_fallbacks,
            model_aliases=self._aliases,
            first_chunk_timeout=self.first_chunk_timeout,
            idle_timeout=self.idle_timeout,
            stream_fallback_to_non_streaming=self.stream_fallback_to_non_streaming,
            rng=self._rng,
            health=self._planner.health,
            mid_stream=self.mid_stream,
            max_stream_recoveries=self.max_stream_recoveries,
            fallback_on_content_filter=self._planner.fallback_on_content_filter,
            hedge=self.hedge,
            routing=None if self._router is None else self._router.routing,
            rate_limits=None if self._router is None else self._router.limits,
            routing_store=self.routing_store,
        )._listening(self._emitter.listeners)

    # -- events ------------------------------------------------------------

    def add_listener(self, listener: EventHook) -> None:
        """Give every event of this provider's requests to ``listener`` too (a sync callable).

        Listeners are called in the order they were added; requests already
        running keep the listeners they started with.

        Raises:
            TypeError: ``listener`` is not callable, or is async.
        """
        from ._observe import check_hook

        self._listening((*self._emitter.listeners, check_hook(listener, "listener")))

    def remove_listener(self, listener: EventHook) -> None:
        """Stop giving events to ``listener`` (no error if it was not listening)."""
        kept = list(self._emitter.listeners)
        if listener in kept:
            kept.remove(listener)
        self._listening(tuple(kept))

    @property
    def listeners(self) -> tuple[EventHook, ...]:
        """The listeners (``on_event`` first), in call order."""
        return self._emitter.listeners

    def _listening(self, listeners: tuple[EventHook, ...]) -> ReliableProvider:
        # A new emitter, never a changed one: a running request keeps the
        # listeners it started with (a listener never sees half a request).
        self._emitter = self._emitter.with_listeners(listeners)
        self._planner.emit = self._emitter if listeners else None
        return self

    @property
    def health_store(self) -> HealthStore | None:
        """Where this provider's health lives (None when health is off)."""
        return self._planner.health

    def health(self) -> dict[RouteKey, RouteHealth]:
        """Each route's breaker: ``(provider name, model id) -> RouteHealth``.

        Routes appear once an attempt on them failed; an empty mapping means
        nothing has failed yet (or health is off).
        """
        store = self._planner.health
        return {} if store is None else store.snapshot()

    @property
    def routing_store(self) -> RoutingStore | None:
        """Where routing state lives (None when routing is off); pass it on to share it."""
        return None if self._router is None else self._router.store

    @property
    def routing(self) -> Routing | None:
        """How requests spread over deployments (None: the plain chain, no rate limits)."""
        return None if self._router is None else self._router.routing

    def deployments(self) -> dict[str, DeploymentView]:
        """Each routed deployment's state: in flight, latency, recent load, rate-limit room.

        Empty when routing is off. Call it from the running loop (its
        times are that loop's clock).
        """
        return {} if self._router is None else self._router.deployments()

    def __repr__(self) -> str:
        names = ", ".join(name for name, _ in self.providers)
        return f"ReliableProvider([{names}], max_retries={self.max_retries})"

    # -- capabilities ------------------------------------------------------

    @property
    def supports_native_tools(self) -> bool:
        """Native tools as the primary provider has them (requests are shaped for it)."""
        return self.providers[0][1].supports_native_tools

    @property
    def supports_vision(self) -> bool:
        """True if any provider accepts images."""
        return any(p.supports_vision for _, p in self.providers)

    @property
    def supports_streaming(self) -> bool:
        """True if any provider streams."""
        return any(p.supports_streaming for _, p in self.providers)

    @property
    def supports_streaming_tool_events(self) -> bool:
        """True if any provider streams tool-call events."""
        return any(p.supports_streaming_tool_events for _, p in self.providers)

    # -- non-streaming -----------------------------------------------------

    async def warmup(self) -> None:
        """Warm every provider concurrently; failures are logged, never raised."""

        async def one(name: str, provider: Provider) -> None:
            try:
                await provider.warmup()
            except Exception as err:
                logger.warning(
                    "warmup failed (non-fatal)",
                    extra={"provider": name, "error": type(err).__name__},
                )

        async with current_backend().open_nursery() as nursery:
            for name, provider in self.providers:
                nursery.start_soon(one, name, provider)

    async def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> str:
        """Answer one message with failover; a context-window failure raises at once."""
        return await self._planner.call(
            lambda p, m, _: p.chat_with_system(system_prompt, message, m, temperature),
            model=model,
            messages=None,
            prompt=(system_prompt, message),
        )

    async def chat_with_history(
        self, messages: Sequence[ChatMessage], model: str, temperature: float
    ) -> str:
        """Answer a conversation with failover; history is halved once on context overflow."""
        return await self._planner.call(
            lambda p, m, msgs: p.chat_with_history(_history(msgs), m, temperature),
            model=model,
            messages=tuple(messages),
        )

    async def chat_with_tools(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        model: str,
        temperature: float,
    ) -> ChatResponse:
        """Answer with tools on offer, with failover and context recovery."""
        return await self._planner.call(
            lambda p, m, msgs: p.chat_with_tools(_history(msgs), tools, m, temperature),
            model=model,
            messages=tuple(messages),
        )

    async def chat(self, request: ChatRequest, model: str, temperature: float) -> ChatResponse:
        """Answer a request with failover and context recovery."""
        tools = request.tools
        return await self._planner.call(
            lambda p, m, msgs: p.chat(ChatRequest(_history(msgs), tools), m, temperature),
            model=model,
            messages=tuple(request.messages),
        )

    # -- streaming ---------------------------------------------------------

    def stream_chat_with_system(
        self,
        system_prompt: str | None,
        message: str,
        model: str,
        temperature: float,
        options: StreamOptions = _DEFAULT_OPTIONS,
    ) -> StreamContext[StreamChunk]:
        """Stream one answer with failover before the first chunk."""

        async def fallback() -> list[StreamChunk]:
            text = await self.chat_with_system(system_prompt, message, model, temperature)
            return _as_chunks(text, options)

        return self._stream(
            model,
            None,
            lambda p, m, _: p.stream_chat_with_system(
                system_prompt, message, m, temperature, options
            ),
            options,
            tools=False,
            fallback=fallback,
            prompt=(system_prompt, message),
            recovery=lambda: self._recovery(
                "chunks",
                _system_and_user(system_prompt, message),
                lambda p, m, msgs: p.stream_chat_with_history(msgs, m, temperature, options),
            ),
        )

    def stream_chat_with_history(
        self,
        messages: Sequence[ChatMessage],
        model: str,
        temperature: float,
        options: StreamOptions = _DEFAULT_OPTIONS,
    ) -> StreamContext[StreamChunk]:
        """Stream the answer to a conversation with failover before the first chunk."""
        history = tuple(messages)

        async def fallback() -> list[StreamChunk]:
            text = await self.chat_with_history(history, model, temperature)
            return _as_chunks(text, options)

        return self._stream(
            model,
            history,
            lambda p, m, msgs: p.stream_chat_with_history(_history(msgs), m, temperature, options),
            options,
            tools=False,
            fallback=fallback,
            recovery=lambda: self._recovery(
                "chunks",
                history,
                lambda p, m, msgs: p.stream_chat_with_history(msgs, m, temperature, options),
            ),
        )

    def stream_chat(
        self,
        request: ChatRequest,
        model: str,
        temperature: float,
        options: StreamOptions = _DEFAULT_OPTIONS,
    ) -> StreamContext[StreamEvent]:
        """Stream events (text, tool calls, usage, final) with failover before the first."""
        tools = request.tools

        async def fallback() -> list[StreamEvent]:
            return response_events(await self.chat(request, model, temperature))

        return self._stream(
            model,
            tuple(request.messages),
            lambda p, m, msgs: p.stream_chat(
                ChatRequest(_history(msgs), tools), m, temperature, options
            ),
            options,
            tools=bool(tools),
            fallback=fallback,
            recovery=lambda: self._recovery(
                "events",
                tuple(request.messages),
                lambda p, m, msgs: p.stream_chat(ChatRequest(msgs, tools), m, temperature, options),
                tools=bool(tools),
            ),
        )

    def _stream(
        self,
        model: str,
        messages: Sequence[ChatMessage] | None,
        open_upstream: OpenUpstream[T],
        options: StreamOptions,
        *,
        tools: bool,
        fallback: Callable[[], Awaitable[Sequence[T]]],
        recovery: Callable[[], RecoverySpec[T]],
        prompt: Sequence[str | None] = (),
    ) -> StreamContext[T]:
        candidates = self._candidates.get(tools)
        if candidates is None:
            # Capabilities are read once per kind of stream, not per request.
            candidates = self._candidates[tools] = tuple(
                (name, p)
                for name, p in self._planner.providers
                if p.supports_streaming and (not tools or p.supports_streaming_tool_events)
            )
        spec: BridgeSpec[T] = BridgeSpec(
            planner=self._planner,
            candidates=candidates,
            model=model,
            messages=messages,
            open_upstream=open_upstream,
            no_provider_message=(
                "No provider supports streaming tool events"
                if tools
                else "No provider supports streaming"
            ),
            enabled=options.enabled,
            first_chunk_timeout=self.first_chunk_timeout,
            idle_timeout=self.idle_timeout,
            fallback=fallback if self.stream_fallback_to_non_streaming else None,
            recovery=None if self.mid_stream == "error" else recovery(),
            prompt=prompt,
        )
        return StreamContext(spec)

    def _recovery(
        self,
        kind: Literal["chunks", "events"],
        conversation: Sequence[ChatMessage],
        open_continuation: OpenContinuation[T],
        *,
        tools: bool = False,
    ) -> RecoverySpec[T]:
        from ._recovery import ChunkItems, EventItems, RecoverySpec

        assert self.mid_stream != "error"
        ops: ItemOps[Any] = ChunkItems() if kind == "chunks" else EventItems()
        return RecoverySpec(
            self.mid_stream, self.max_stream_recoveries, ops, conversation, open_continuation, tools
        )


def _observer(*args: Any) -> Observer:
    # The planner's observer factory (see Planner): _observe is imported on
    # the first request that is observed, so `import reliant` stays light.
    from ._observe import RequestObserver

    return RequestObserver(*args)


def _router(
    providers: tuple[tuple[str, Provider], ...],
    routing: Routing | None,
    rate_limits: Mapping[str, RateLimit] | None,
    store: RoutingStore | None,
    rng: random.Random | None,
) -> Router | None:
    # Routing loads only when asked for; rate limits alone route the plain chain.
    if routing is None and not rate_limits and store is None:
        return None
    from ._router import Router
    from ._routing import Routing
    from ._routing_state import RoutingStore

    if routing is None:
        routing = Routing()
    if not isinstance(routing, Routing):
        raise TypeError(f"routing must be a Routing or None, got {type(routing).__name__}")
    if rate_limits is not None and not isinstance(rate_limits, Mapping):
        raise TypeError(
            f"rate_limits must be a mapping of provider name -> RateLimit, "
            f"got {type(rate_limits).__name__}"
        )
    if store is not None and not isinstance(store, RoutingStore):
        raise TypeError(f"routing_store must be a routing store, got {type(store).__name__}")
    return Router(routing, [name for name, _ in providers], rate_limits or {}, store, rng)


def _hedger(hedge: Hedge | None) -> Hedger | None:
    if hedge is None:
        return None
    from ._hedge import Hedge, Hedger

    if not isinstance(hedge, Hedge):
        raise TypeError(f"hedge must be a Hedge or None, got {type(hedge).__name__}")
    return Hedger(hedge)


def _health_store(health: HealthPolicy | HealthStore | None) -> HealthStore | None:
    if health is None or isinstance(health, HealthStore):
        return health
    if isinstance(health, HealthPolicy):
        return LocalHealth(health)
    raise TypeError(
        f"health must be a HealthPolicy, a health store or None, got {type(health).__name__}"
    )


def _system_and_user(system_prompt: str | None, message: str) -> tuple[ChatMessage, ...]:
    user = ChatMessage.user(message)
    return (user,) if system_prompt is None else (ChatMessage.system(system_prompt), user)


def _history(messages: Sequence[ChatMessage] | None) -> Sequence[ChatMessage]:
    assert messages is not None
    return messages


def _as_chunks(text: str, options: StreamOptions) -> list[StreamChunk]:
    chunks = []
    if text:
        chunk = StreamChunk(delta=text)
        chunks.append(chunk.with_token_estimate() if options.count_tokens else chunk)
    chunks.append(StreamChunk.final())
    return chunks


def _named(
    providers: Sequence[tuple[str, Provider] | Provider],
) -> tuple[tuple[str, Provider], ...]:
    # A provider given alone is named by itself: the name is written once.
    if isinstance(providers, Provider):
        raise TypeError("providers must be a sequence of providers or (name, provider) pairs")
    named: list[tuple[str, Provider]] = []
    for entry in providers:
        if isinstance(entry, Provider):
            name = getattr(entry, "name", None)
            if not isinstance(name, str) or not name:
                raise TypeError(
                    f"{type(entry).__name__} has no name; pass it as a (name, provider) pair"
                )
            named.append((name, entry))
        else:
            named.append(entry)
    return tuple(named)


def _validate(
    providers: tuple[tuple[str, Provider], ...],
    max_retries: int,
    base_backoff: float,
    model_fallbacks: Mapping[str, Sequence[str]] | None,
    model_aliases: Mapping[str, Mapping[str, str]] | None,
    rng: object = None,
) -> None:
    if not providers:
        raise ValueError("ReliableProvider needs at least one (name, provider) pair")
    names: set[str] = set()
    for entry in providers:
        if not (isinstance(entry, tuple) and len(entry) == 2):
            raise TypeError(f"providers must be (name, provider) pairs, got {entry!r}")
        name, provider = entry
        if not isinstance(name, str) or not name:
            raise ValueError(f"provider names must be non-empty strings, got {name!r}")
        if not isinstance(provider, Provider):
            raise TypeError(f"provider {name!r} is a {type(provider).__name__}, not a Provider")
        if name in names:
            raise ValueError(f"duplicate provider name {name!r}")
        names.add(name)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be a non-negative integer, got {max_retries!r}")
    # An upper bound, so a typo (max_retries=10**9) cannot retry for hours.
    if max_retries > MAX_RETRIES:
        raise ValueError(f"max_retries must be at most {MAX_RETRIES}, got {max_retries!r}")
    if isinstance(base_backoff, bool) or not isinstance(base_backoff, int | float):
        raise TypeError(f"base_backoff must be a number of seconds, got {base_backoff!r}")
    if not (base_backoff >= 0 and math.isfinite(base_backoff)):
        raise ValueError(
            f"base_backoff must be a non-negative number of seconds, got {base_backoff!r}"
        )
    if rng is not None and not isinstance(rng, random.Random):
        raise TypeError(f"rng must be a random.Random or None, got {type(rng).__name__}")
    if model_fallbacks is not None and not isinstance(model_fallbacks, Mapping):
        raise TypeError(
            f"model_fallbacks must be a mapping of model -> models, "
            f"got {type(model_fallbacks).__name__}"
        )
    for model, chain in (model_fallbacks or {}).items():
        if not isinstance(model, str) or not model:
            raise TypeError(f"model_fallbacks keys must be model names (strings), got {model!r}")
        if isinstance(chain, str):
            raise TypeError(
                f"model_fallbacks[{model!r}] must be a list of models, not the string {chain!r}"
            )
        if not isinstance(chain, Sequence):
            raise TypeError(
                f"model_fallbacks[{model!r}] must be a list of models, got {type(chain).__name__}"
            )
        seen = {model}
        for fallback in chain:
            if not isinstance(fallback, str) or not fallback:
                raise TypeError(
                    f"model_fallbacks[{model!r}] must hold model names (strings), got {fallback!r}"
                )
            if fallback in seen:
                what = "names the model itself" if fallback == model else "repeats"
                raise ValueError(f"model_fallbacks[{model!r}] {what}: {fallback!r}")
            seen.add(fallback)
    if model_aliases is not None and not isinstance(model_aliases, Mapping):
        raise TypeError(
            f"model_aliases must be a mapping of provider -> {{model: id}}, "
            f"got {type(model_aliases).__name__}"
        )
    for provider_name, aliases in (model_aliases or {}).items():
        if not isinstance(aliases, Mapping):
            raise TypeError(
                f"model_aliases[{provider_name!r}] must be a mapping of model -> id, "
                f"got {type(aliases).__name__}"
            )
        for requested, actual in aliases.items():
            if not isinstance(requested, str) or not isinstance(actual, str) or not actual:
                raise TypeError(
                    f"model_aliases[{provider_name!r}] must map model names to model ids "
                    f"(strings), got {requested!r}: {actual!r}"
                )
    unknown = sorted(set(model_aliases or {}) - names)
    if unknown:
        raise ValueError(
            f"model_aliases names unknown provider(s) {unknown}; known: {sorted(names)}"
        )


def _validate_timeout(label: str, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{label} must be a positive number of seconds or None")
