"""Routing, assembled: the decision before the walk, the bookkeeping around each attempt.

``_routing`` decides (pure), ``_routing_state`` remembers; this module joins
them to a ``ReliableProvider`` in two narrow places, and the planner walks
candidates exactly as it always did:

- before a request's walk, :meth:`Router.route` gives the planner its pool:
  the deployments in the order ``_routing.order`` chose, without those
  that have no rate-limit capacity. When none has any it waits for the
  soonest (up to ``Routing.max_wait``), else raises ``NoCapacityError``;
- each deployment is wrapped (:class:`RoutedProvider`) so every attempt on
  it, whoever starts it (first try, retry, failover, hedge, recovery), takes
  rate-limit capacity and an in-flight slot when it starts, gives a latency
  sample at its first item (streams) or answer (calls), and gives the slot
  back, with the tokens its usage reported, when it ends. A failover
  candidate whose capacity ran out meanwhile raises a ``ProviderError`` of
  kind ``capacity`` before any call: the planner records it and moves on at
  once, like any non-retryable error (``classify``), without a branch of
  its own.

HTTP leaves also report every response's headers here
(``HTTPProvider.watch_headers``), so the limits a server announces
(``x-ratelimit-remaining-*``, ``anthropic-ratelimit-*``) are learned
without configuration.
"""

from __future__ import annotations

import contextvars
import random
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, aclosing, contextmanager
from typing import Any, TypeVar

from ._backend import current as current_backend
from ._exceptions import NoCapacityError, ProviderError
from ._provider import ChunkStream, EventStream, Provider
from ._routing import DeploymentView, RateLimit, RouteDecision, Routing, order, prefix_key
from ._routing_state import (
    OUTPUT_ALLOWANCE,
    Learned,
    LocalRouting,
    RoutingStore,
    learn_headers,
)
from ._types import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    StreamOptions,
    TokenUsage,
    ToolSpec,
)

__all__ = ["RoutedProvider", "Router", "affinity_key", "estimate_tokens"]

T = TypeVar("T")

_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "reliant_affinity_key", default=None
)
# The room the routing decision took on the chosen deployment, until the
# request's first attempt there uses it: [name, when, tokens], emptied once used.
_RESERVED: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "reliant_route_reserved", default=None
)
_SETTLE_TIMEOUT = 1.0
_NONE_DOWN: frozenset[str] = frozenset()
_PRIORITY_REASON = "first in priority order"


@contextmanager
def affinity_key(key: str) -> Iterator[None]:
    """Route the requests made inside this block by ``key`` instead of their prompt prefix.

    With ``Routing(affinity="prefix")``, requests with the same key prefer
    the same deployment of a tier (a user, a session, a document: whatever
    shares a provider-side cache). A context variable, so it is right for
    concurrent tasks and is seen by streams opened inside the block.
    """
    if not isinstance(key, str) or not key:
        raise TypeError(f"affinity_key needs a non-empty string, got {key!r}")
    token = _KEY.set(key)
    try:
        yield
    finally:
        _KEY.reset(token)


def estimate_tokens(
    messages: Sequence[ChatMessage] | None, prompt: Sequence[str | None] = ()
) -> int:
    """A request's tokens before it is sent: ``ceil(chars / 4)`` plus the answer's allowance."""
    chars = sum([len(t) for t in prompt if t])
    if messages is not None:
        chars += sum([len(m.content) for m in messages])
    return -(-chars // 4) + OUTPUT_ALLOWANCE


def _prefix(messages: Sequence[ChatMessage] | None, prompt: Sequence[str | None]) -> str | None:
    # The cacheable prefix: the system prompt and every message but the last.
    if messages is not None:
        texts = [f"{m.role}:{m.content}" for m in messages[:-1]]
    else:
        texts = [f"system:{prompt[0]}"] if prompt and prompt[0] else []
    return prefix_key(texts) if texts else None


class Router:
    """One ``ReliableProvider``'s routing: its policy, limits, store and random source."""

    __slots__ = (
        "__weakref__",
        "_local",
        "_plans",
        "_tiers",
        "_tokens",
        "limits",
        "rng",
        "routing",
        "store",
    )

    def __init__(
        self,
        routing: Routing,
        names: Sequence[str],
        rate_limits: Mapping[str, RateLimit],
        store: RoutingStore | None,
        rng: random.Random | None,
    ) -> None:
        self.routing = routing
        self._tiers = routing.tiers_for(names)
        unknown = sorted(set(rate_limits) - set(names))
        if unknown:
            raise ValueError(f"rate_limits names unknown provider(s) {unknown}")
        for name, limit in rate_limits.items():
            if not isinstance(limit, RateLimit):
                raise TypeError(f"rate_limits[{name!r}] must be a RateLimit, got {limit!r}")
        self.limits = dict(rate_limits)
        self.store = store if store is not None else LocalRouting(routing.decay)
        self.store.bind({n: self.limits.get(n) for tier in self._tiers for n in tier})
        self._local = self.store if isinstance(self.store, LocalRouting) else None
        self.rng = rng if rng is not None else random.Random()
        self._plans: dict[int, Any] = {}
        self._tokens = any(limit.tpm is not None for limit in self.limits.values())

    def wrap(self, name: str, provider: Provider) -> RoutedProvider:
        """``provider`` with this router's bookkeeping around every attempt."""
        watch = getattr(provider, "watch_headers", None)
        if callable(watch):
            watch(_HeaderSink(self, name))
        return RoutedProvider(name, provider, self)

    async def route(
        self,
        pool: Sequence[tuple[str, Provider]],
        messages: Sequence[ChatMessage] | None,
        prompt: Sequence[str | None] = (),
        down: Callable[[str], bool] | None = None,
    ) -> tuple[tuple[tuple[str, Provider], ...], RouteDecision]:
        """The pool in routing order for one request, and the decision to report.

        ``down`` tells a deployment provider health knows to be down (its
        breaker open): it goes last in its tier.

        Raises:
            NoCapacityError: No deployment will have capacity within ``max_wait``.
        """
        be = current_backend()
        plan = self._plans.get(id(pool))
        if plan is None or plan[0] is not pool:
            # The pool is one of few tuples (all providers, or the streaming
            # ones): its tiers are worked out once.
            by_name = dict(pool)
            tiers = [[n for n in tier if n in by_name] for tier in self._tiers]
            flat = [n for t in tiers for n in t]
            static = None
            routing = self.routing
            if flat and routing.strategy == "priority" and not routing.affinity and not self.limits:
                reason = "next in the chain" if len(tiers[0]) == 1 else _PRIORITY_REASON
                static = (
                    tuple([(n, by_name[n]) for n in flat]),
                    RouteDecision("priority", flat[0], tuple(flat), reason),
                )
            plan = self._plans[id(pool)] = (pool, tiers, flat, by_name, static)
        _, tiers, names, by_name, static = plan
        if static is not None and down is None and self._local and not self._local.learned:
            # The plain chain's order, no limit to read, nothing known down:
            # the decision is the configured order (no state read, nothing built).
            first, now = names[0], be.current_time()
            self._local.acquire_nowait(first, now, None, 0)
            _RESERVED.set([first, now, 0])
            return static
        key = _KEY.get()
        if key is None and self.routing.affinity is not None:
            key = _prefix(messages, prompt)
        # Tokens are estimated only where a token limit can use them.
        tokens = estimate_tokens(messages, prompt) if self.needs_tokens else 0
        routing, store, limits = self.routing, self.store, self.limits
        waited = 0.0
        while True:
            now = be.current_time()
            views = store.rows(names, now, limits, tokens)
            out = _NONE_DOWN if down is None else frozenset([n for n in names if down(n)])
            ordered, reason = order(tiers, views, routing, self.rng, key, out)
            if ordered:
                # The decision takes the chosen deployment's room at once (one
                # round trip with a shared store); its first attempt uses it.
                if self._local is not None:
                    wait = self._local.acquire_nowait(
                        ordered[0], now, limits.get(ordered[0]), tokens
                    )
                else:
                    wait = await self.store.acquire(ordered[0], now, limits.get(ordered[0]), tokens)
                if wait <= 0:
                    _RESERVED.set([ordered[0], now, tokens])
                    break
                # Another process took it since the last look: look again
                # (the acquire refreshed what the store knows).
                continue
            if not names:
                break
            wait = min(views[n].ready_in for n in names)
            if waited + wait > routing.max_wait:
                raise NoCapacityError(wait, names, waited)
            await be.sleep(wait)
            waited += wait
        if len(ordered) == len(names):
            left_out: tuple[str, ...] = ()
        else:
            left_out = tuple([n for n in names if n not in ordered])
        decision = RouteDecision(
            routing.strategy,
            ordered[0] if ordered else "",
            tuple(ordered),
            reason,
            left_out,
            waited,
        )
        return tuple([(n, by_name[n]) for n in ordered]), decision

    @property
    def needs_tokens(self) -> bool:
        """True when a token limit (configured, or told by a server) reads request estimates."""
        return self._tokens or self.store.counts_tokens

    @property
    def unsettled(self) -> bool:
        """True when this request's decision took room that no attempt used (see :meth:`settle`)."""
        return bool(_RESERVED.get())

    async def settle(self) -> None:
        """The request is over: give back the chosen deployment's room if no attempt used it.

        (Its breaker was open and it was skipped, or the request was
        cancelled before its first attempt.)
        """
        box = _RESERVED.get()
        if box:
            name, taken_at, tokens = box
            box.clear()
            await self.end(name, tokens, None, sent=False, at=taken_at)

    def deployments(self) -> dict[str, DeploymentView]:
        """Each deployment's state now (in flight, latency, load, rate-limit room)."""
        now = current_backend().current_time()
        return {
            n: self.store.view(n, now, self.limits.get(n), 0) for tier in self._tiers for n in tier
        }

    # -- around each attempt (RoutedProvider) ------------------------------

    async def start(self, name: str, tokens: int) -> float:
        """Take capacity and an in-flight slot on ``name``; the start time. Raises if none.

        The request's first attempt on the deployment its routing chose
        uses the room the decision already took.
        """
        if self._local is not None:
            return self.start_nowait(name, tokens, current_backend().current_time)
        taken_at = _take_reserved(name)
        if taken_at is not None:
            return taken_at
        now = current_backend().current_time()
        _refuse_if_waiting(name, await self.store.acquire(name, now, self.limits.get(name), tokens))
        return now

    def start_nowait(self, name: str, tokens: int, clock: Callable[[], float]) -> float:
        """:meth:`start` with the in-process store: no coroutine around every attempt.

        ``clock`` is read only when the attempt takes room of its own.
        """
        taken_at = _take_reserved(name)
        if taken_at is not None:
            return taken_at
        assert self._local is not None
        now = clock()
        wait = self._local.acquire_nowait(name, now, self.limits.get(name), tokens)
        _refuse_if_waiting(name, wait)
        return now

    def sample(self, name: str, started: float, failed: bool, now: float | None = None) -> None:
        """A latency sample: time to first item or answer (``failed``: only if it is a peak)."""
        if now is None:
            now = current_backend().current_time()
        self.store.observe(name, now, now - started, failed)

    async def end(
        self,
        name: str,
        estimate: int,
        used: int | None,
        *,
        sent: bool = True,
        at: float | None = None,
    ) -> None:
        """The attempt ended: its in-flight slot back, its tokens corrected to ``used``.

        ``sent=False``: it never was made; the room taken for it ``at`` goes
        back to the windows.
        """
        be = current_backend()
        now = be.current_time() if at is None else at
        if self._local is not None:
            self._local.release_nowait(name, now, estimate, used, sent=sent)
            return
        # Shielded and bounded: a cancelled request must still give its slot back.
        with be.CancelScope(shield=True, deadline=now + _SETTLE_TIMEOUT):
            await self.store.release(name, now, estimate, used, sent=sent)

    def learn(self, name: str, learned: Learned) -> None:
        """What a response's headers said about ``name``'s rate limits."""
        self.store.learn(name, current_backend().current_time(), learned)


def _take_reserved(name: str) -> float | None:
    # The room this request's routing decision took on ``name``, used once:
    # the box is shared by hedged racers' copies of the context.
    box = _RESERVED.get()
    if box and box[0] == name:
        taken_at: float = box[1]
        box.clear()
        return taken_at
    return None


def _refuse_if_waiting(name: str, wait: float) -> None:
    if wait > 0:
        raise ProviderError(
            f"{name}: no rate-limit capacity for {wait:.3g} s (client-side limit); not sent",
            provider=name,
            kind="capacity",
        )


class _HeaderSink:
    # Given every response's headers by an HTTP leaf; holds its router weakly,
    # so a leaf shared by many ReliableProviders keeps none of them alive.
    __slots__ = ("name", "router")

    def __init__(self, router: Router, name: str) -> None:
        self.router = weakref.ref(router)
        self.name = name

    def __call__(self, headers: Mapping[str, str]) -> bool:
        router = self.router()
        if router is None:
            return False  # tells the leaf to drop this sink
        learned = learn_headers(headers)
        if learned is not None:
            router.learn(self.name, learned)
        return True


def _used(usage: TokenUsage | None) -> int | None:
    if usage is None or (usage.input_tokens is None and usage.output_tokens is None):
        return None
    return (usage.input_tokens or 0) + (usage.output_tokens or 0)


class RoutedProvider(Provider):
    """A deployment as the planner sees it when routing is on: the leaf plus bookkeeping.

    Every call kind and capability is the leaf's own; around each call it
    takes and gives back the deployment's capacity and in-flight slot, and
    gives its router a latency sample.
    """

    def __init__(self, name: str, inner: Provider, router: Router) -> None:
        self.name = name
        self.inner = inner
        self._router = router

    def __repr__(self) -> str:
        return f"RoutedProvider({self.name!r}, {self.inner!r})"

    def _estimate(
        self, messages: Sequence[ChatMessage] | None, prompt: Sequence[str | None] = ()
    ) -> int:
        # Only a token limit reads the estimate: without one, no count at all.
        return estimate_tokens(messages, prompt) if self._router.needs_tokens else 0

    async def _call(self, tokens: int, call: Callable[[], Any]) -> Any:
        router, name = self._router, self.name
        local = router._local
        clock = current_backend().current_time
        if local is not None:  # the in-process store never waits: no coroutine
            started = router.start_nowait(name, tokens, clock)
        else:
            started = await router.start(name, tokens)
        used: int | None = None
        failed = True
        try:
            value = await call()
            failed = False
            if isinstance(value, ChatResponse):
                used = _used(value.usage)
            return value
        finally:
            # One clock read for the sample and the end.
            now = clock()
            router.sample(name, started, failed, now)
            if local is not None:
                local.release_nowait(name, now, tokens, used, sent=True)
            else:
                await router.end(name, tokens, used)

    async def _stream(
        self, tokens: int, open_inner: Callable[[], Any]
    ) -> AsyncGenerator[Any, None]:
        router, name = self._router, self.name
        started = await router.start(name, tokens)
        used: int | None = None
        first = True
        try:
            async with open_inner() as items:
                async for item in items:
                    if first:
                        first = False
                        router.sample(name, started, False)
                    usage = getattr(item, "usage", None)
                    if usage is not None:
                        used = _used(usage)
                    yield item
        except BaseException:
            if first:
                router.sample(name, started, True)
            raise
        finally:
            await router.end(name, tokens, used)

    # -- call kinds ----------------------------------------------------------

    # The call kinds are plain methods that return _call's coroutine: one
    # coroutine frame per attempt fewer than ``async def`` wrappers (the
    # caller awaits the result all the same).

    def chat_with_system(
        self, system_prompt: str | None, message: str, model: str, temperature: float
    ) -> Coroutine[Any, Any, str]:
        return self._call(
            self._estimate(None, (system_prompt, message)),
            lambda: self.inner.chat_with_system(system_prompt, message, model, temperature),
        )

    def simple_chat(self, message: str, model: str, temperature: float) -> Coroutine[Any, Any, str]:
        return self._call(
            self._estimate(None, (message,)),
            lambda: self.inner.simple_chat(message, model, temperature),
        )

    def chat_with_history(
        self, messages: Sequence[ChatMessage], model: str, temperature: float
    ) -> Coroutine[Any, Any, str]:
        return self._call(
            self._estimate(messages),
            lambda: self.inner.chat_with_history(messages, model, temperature),
        )

    def chat_with_tools(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        model: str,
        temperature: float,
    ) -> Coroutine[Any, Any, ChatResponse]:
        return self._call(
            self._estimate(messages),
            lambda: self.inner.chat_with_tools(messages, tools, model, temperature),
        )

    def chat(
        self, request: ChatRequest, model: str, temperature: float
    ) -> Coroutine[Any, Any, ChatResponse]:
        return self._call(
            self._estimate(request.messages),
            lambda: self.inner.chat(request, model, temperature),
        )

    def stream_chat_with_system(
        self,
        system_prompt: str | None,
        message: str,
        model: str,
        temperature: float,
        options: StreamOptions = StreamOptions(),  # noqa: B008 - frozen, shared
    ) -> ChunkStream:
        return _closing(
            self._stream(
                self._estimate(None, (system_prompt, message)),
                lambda: self.inner.stream_chat_with_system(
                    system_prompt, message, model, temperature, options
                ),
            )
        )

    def stream_chat_with_history(
        self,
        messages: Sequence[ChatMessage],
        model: str,
        temperature: float,
        options: StreamOptions = StreamOptions(),  # noqa: B008 - frozen, shared
    ) -> ChunkStream:
        return _closing(
            self._stream(
                self._estimate(messages),
                lambda: self.inner.stream_chat_with_history(messages, model, temperature, options),
            )
        )

    def stream_chat(
        self,
        request: ChatRequest,
        model: str,
        temperature: float,
        options: StreamOptions = StreamOptions(),  # noqa: B008 - frozen, shared
    ) -> EventStream:
        return _closing(
            self._stream(
                self._estimate(request.messages),
                lambda: self.inner.stream_chat(request, model, temperature, options),
            )
        )

    async def warmup(self) -> None:
        await self.inner.warmup()

    # -- capabilities: the leaf's ---------------------------------------------

    @property
    def supports_native_tools(self) -> bool:
        return self.inner.supports_native_tools

    @property
    def supports_vision(self) -> bool:
        return self.inner.supports_vision

    @property
    def supports_streaming(self) -> bool:
        return self.inner.supports_streaming

    @property
    def supports_streaming_tool_events(self) -> bool:
        return self.inner.supports_streaming_tool_events

    @property
    def supports_prefill(self) -> bool:
        return self.inner.supports_prefill


def _closing(gen: AsyncGenerator[T, None]) -> AbstractAsyncContextManager[AsyncIterator[T]]:
    return aclosing(gen)
