"""Routing across deployments: the policies and the one pure decision that orders them.

Several deployments of one model (Azure regions, several keys or accounts,
OpenAI beside a vLLM pool) are peers: traffic should spread over them, go
where answers come fastest, keep within each one's rate limits, and send
requests that share a prompt prefix to the same deployment so its prompt
cache keeps hitting. :class:`Routing` says how; :func:`order` decides, for
one request, in which order the planner should try the candidates. It is
pure: it reads a snapshot of each deployment's state (:class:`DeploymentView`,
kept by a store, ``_routing_state``) and a random source, and returns a
list. It never walks candidates, never sleeps and never calls anything: the
failover planner stays the one place that does.

The order
---------
::

    for tier in tiers:                     # tiers in the given order
        peers = the tier's deployments that have rate-limit capacity now
        first = affinity's choice when a prefix key is set, else the strategy's
        order += [first] + the other peers in the strategy's order
    (deployments without capacity are left out: a call to them would be a
     429 the client could predict)

Strategies
----------
``priority``
    The given order (the default; with one deployment per tier it is the
    seed's chain exactly).
``weighted``
    A weighted random order: each next deployment drawn in proportion to
    its weight among those left (Efraimidis-Spirakis keys ``u ** (1/w)``,
    one draw per deployment).
``least_busy``
    Fewest requests in flight first; ties broken at random, so equal
    deployments share evenly instead of the first one taking everything.
``latency``
    Power of two choices over a peak-EWMA cost (Finagle's and Linkerd's
    balancer): two distinct peers drawn at random, the cheaper goes first,
    then the rest by cost. The cost of a deployment is its decayed peak
    EWMA of latency (time to first item for streams, to the whole answer
    for calls) times ``1 + in_flight / mean in_flight of the tier``:

    - *peak*: a sample above the average replaces it at once, so a
      deployment that slows down loses traffic within a few requests;
    - *decayed*: the average decays toward zero with time constant
      ``decay`` when nothing new is learned, so a stale sample never pins a
      decision: an avoided deployment is tried again after a while and wins
      its traffic back if it recovered;
    - *in flight*: Finagle multiplies by ``in_flight + 1``; at fifty
      concurrent callers that sends a quarter of the traffic to a
      deployment four times slower, because the fast ones each have many
      requests in flight. Scaled by the tier's mean, in-flight counts break
      near-ties and still spread a burst, but never outweigh a real latency
      gap;
    - a deployment never measured costs nothing while idle (it is tried
      first, so it gets measured) and a large penalty while it has requests
      in flight, so a burst does not all go to it before one answers.

Affinity (``affinity="prefix"``)
--------------------------------
Rendezvous (highest random weight) hashing: each peer's score for a key is
a hash of (key, deployment name), weighted as ``-w / ln(u)`` when weights
are given; the highest score goes first. Adding or removing a deployment
moves only the keys that scored highest on it. The key is the request's
system prompt and every message before the last one (what providers cache),
or an explicit key set with :func:`reliant.affinity_key`.

Bounded load (Mirrokni, Thorup and Zadimoghaddam's consistent hashing with
bounded loads): a peer whose recent load (requests routed to it, decayed
with time constant ``decay``) would exceed ``load_bound`` times the tier's
fair share is passed over for the key's next choice, which is itself
stable per key, so a hot key spills to one other deployment, not to all of
them. Affinity also yields to rate limits (a peer without capacity is not a
candidate) and to health (the planner skips an open breaker and takes the
key's next choice).
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

__all__ = [
    "DeploymentView",
    "RateLimit",
    "RouteDecision",
    "Routing",
    "State",
    "Strategy",
    "order",
    "prefix_key",
]

Strategy: TypeAlias = Literal["priority", "weighted", "least_busy", "latency"]
STRATEGIES: tuple[Strategy, ...] = ("priority", "weighted", "least_busy", "latency")

# The cost of a deployment that has requests in flight but was never measured:
# larger than any real latency, so a burst spreads instead of piling onto it.
_UNMEASURED_PENALTY = 1e6


def _seconds(owner: str, name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{owner}.{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{owner}.{name} must be a {bound} finite number, got {value!r}")
    return number


@dataclass(frozen=True, slots=True, kw_only=True)
class Routing:
    """How requests spread over peer deployments (``ReliableProvider(routing=Routing(...))``).

    Attributes:
        tiers: Lists of provider names. Within a tier the deployments are
            peers, ordered per request by ``strategy``; tiers are tried in
            order. None (the default) puts each provider in a tier of its
            own, in the given order: exactly the plain chain. A provider
            left out of every tier is not routed to.
        strategy: ``"priority"``, ``"weighted"``, ``"least_busy"`` or
            ``"latency"`` (see the module comment of ``reliant._routing``).
        weights: ``{name: weight}`` for ``"weighted"`` (and to weight
            affinity's hashing); a missing name weighs 1.
        affinity: None, or ``"prefix"``: requests sharing a prompt prefix
            prefer the same deployment of a tier, so prompt caches hit.
        decay: Seconds, the time constant with which latency samples and
            recent load fade (Finagle's default, 10 s).
        load_bound: With affinity, no deployment takes more than this times
            its fair share of the tier's recent load (at least 1).
        max_wait: Seconds a request may wait for rate-limit capacity when
            no deployment has any; past it the request fails with
            :class:`~reliant.NoCapacityError`. 0 never waits.

    Raises:
        ValueError, TypeError: For an unknown strategy or affinity, empty or
            repeated tier names, a non-positive weight or a bad number.
    """

    tiers: Sequence[Sequence[str]] | None = None
    strategy: Strategy = "priority"
    weights: Mapping[str, float] = field(default_factory=dict)
    affinity: Literal["prefix"] | None = None
    decay: float = 10.0
    load_bound: float = 1.25
    max_wait: float = 5.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"Routing.strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )
        if self.affinity not in (None, "prefix"):
            raise ValueError(f"Routing.affinity must be None or 'prefix', got {self.affinity!r}")
        if self.tiers is not None:
            if isinstance(self.tiers, str) or not isinstance(self.tiers, Sequence):
                raise TypeError("Routing.tiers must be a list of lists of provider names")
            tiers: list[tuple[str, ...]] = []
            seen: set[str] = set()
            for tier in self.tiers:
                if isinstance(tier, str) or not isinstance(tier, Sequence) or not tier:
                    raise TypeError(
                        f"each of Routing.tiers must be a non-empty list of names, got {tier!r}"
                    )
                for name in tier:
                    if not isinstance(name, str) or not name:
                        raise TypeError(f"Routing.tiers names must be strings, got {name!r}")
                    if name in seen:
                        raise ValueError(f"Routing.tiers names {name!r} twice")
                    seen.add(name)
                tiers.append(tuple(tier))
            if not tiers:
                raise ValueError("Routing.tiers must not be empty (use None for the plain chain)")
            object.__setattr__(self, "tiers", tuple(tiers))
        if not isinstance(self.weights, Mapping):
            raise TypeError(f"Routing.weights must be a mapping, got {type(self.weights).__name__}")
        weights = {}
        for name, weight in self.weights.items():
            if not isinstance(name, str):
                raise TypeError(f"Routing.weights keys must be provider names, got {name!r}")
            weights[name] = _seconds("Routing", f"weights[{name!r}]", weight)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "decay", _seconds("Routing", "decay", self.decay))
        bound = _seconds("Routing", "load_bound", self.load_bound)
        if bound < 1:
            raise ValueError(f"Routing.load_bound must be at least 1, got {self.load_bound!r}")
        object.__setattr__(self, "load_bound", bound)
        object.__setattr__(
            self, "max_wait", _seconds("Routing", "max_wait", self.max_wait, allow_zero=True)
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> Routing:
        """Build from a ``[routing]`` table (``reliant.toml``); unknown keys are refused."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown [routing] key(s) {unknown}; known: {sorted(known)}")
        return cls(**values)  # type: ignore[arg-type]

    def tiers_for(self, names: Sequence[str]) -> tuple[tuple[str, ...], ...]:
        """The tiers over ``names`` (the configured providers), checked against them."""
        if self.tiers is None:
            return tuple((name,) for name in names)
        known = set(names)
        unknown = sorted({n for tier in self.tiers for n in tier} - known)
        if unknown:
            raise ValueError(f"Routing.tiers names unknown provider(s) {unknown}")
        unknown = sorted(set(self.weights) - known)
        if unknown:
            raise ValueError(f"Routing.weights names unknown provider(s) {unknown}")
        return tuple(tuple(tier) for tier in self.tiers)


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """A deployment's rate limit, enforced by the client (``rate_limits={name: RateLimit(...)}``).

    Attributes:
        rpm: Requests per minute, or None.
        tpm: Tokens per minute (estimated before the call, corrected by the
            usage that comes back), or None.

    Both are windows over the last 60 s: at most ``rpm`` requests started
    and ``tpm`` tokens spent in any 60 s, the strictest common reading of
    a per-minute limit, so no server's window (fixed or sliding) is
    exceeded.
    """

    rpm: float | None = None
    tpm: float | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _seconds("RateLimit", name, value))
        if self.rpm is None and self.tpm is None:
            raise ValueError("RateLimit needs rpm, tpm or both")


@dataclass(frozen=True, slots=True)
class DeploymentView:
    """One deployment's routing state as a decision sees it (``llm.deployments()``).

    Attributes:
        name: The provider name.
        in_flight: Requests it is serving now.
        latency: The decayed peak-EWMA latency in seconds, or the age of its
            oldest request in flight when that is over three times as long (a
            stall); 0 when never measured.
        load: Requests recently routed to it (a count decayed with ``decay``).
        ready_in: Seconds until it has rate-limit capacity (0: now).
        remaining_requests: Requests left in its window (configured or
            learned from headers, whichever is lower), or None when unknown.
        remaining_tokens: Tokens left in its window, or None when unknown.
    """

    name: str
    in_flight: int = 0
    latency: float = 0.0
    load: float = 0.0
    ready_in: float = 0.0
    remaining_requests: float | None = None
    remaining_tokens: float | None = None


class RouteDecision:
    """What routing decided for one request (in ``RouteChosen`` events and spans).

    A plain slotted class, not a frozen dataclass: one is made per request
    and a frozen ``__init__`` costs a microsecond more (treat it as read-only
    all the same; the public record of it is the ``RouteChosen`` event).

    Attributes:
        strategy: The strategy used.
        chosen: The first candidate.
        order: Every candidate in the order the planner will try them.
        reason: Why ``chosen`` came first, in a few words.
        left_out: Deployments without rate-limit capacity (not candidates).
        waited: Seconds the request waited for capacity.
    """

    __slots__ = ("chosen", "left_out", "order", "reason", "strategy", "waited")

    def __init__(
        self,
        strategy: str,
        chosen: str,
        order: tuple[str, ...],
        reason: str,
        left_out: tuple[str, ...] = (),
        waited: float = 0.0,
    ) -> None:
        self.strategy = strategy
        self.chosen = chosen
        self.order = order
        self.reason = reason
        self.left_out = left_out
        self.waited = waited

    def __repr__(self) -> str:
        return f"RouteDecision({self.strategy!r}, chosen={self.chosen!r}, order={self.order!r})"


def prefix_key(texts: Sequence[str]) -> str:
    """The affinity key of a prompt prefix (its texts, in order), as a short hash."""
    digest = hashlib.blake2b(digest_size=16)
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


class State(Protocol):
    """What a decision reads of one deployment (a :class:`DeploymentView`, or a store's row)."""

    @property
    def in_flight(self) -> int: ...
    @property
    def latency(self) -> float: ...
    @property
    def load(self) -> float: ...
    @property
    def ready_in(self) -> float: ...


def order(
    tiers: Sequence[Sequence[str]],
    views: Mapping[str, State],
    routing: Routing,
    rng: random.Random,
    key: str | None = None,
    down: frozenset[str] = frozenset(),
) -> tuple[list[str], str]:
    """The candidates for one request, in order, and why the first one leads.

    Args:
        tiers: Deployment names per tier (already limited to the request's pool).
        views: Each deployment's state; a deployment whose ``ready_in`` is
            above zero has no rate-limit capacity and is left out.
        routing: The policy.
        rng: The random source (seeded in tests).
        key: The request's affinity key, or None.
        down: Deployments whose breaker is open: last in their tier, in
            the order the strategy gave them (still candidates: the planner
            skips them, and tries them last of all).
    """
    out: list[str] = []
    reason = ""
    affine = key is not None and routing.affinity == "prefix"
    for tier in tiers:
        peers = [n for n in tier if views[n].ready_in <= 0]
        if not peers:
            continue
        if len(peers) == 1:
            ranked, why = peers, "only deployment with room in its tier"
        else:
            ranked, why = _by_strategy(peers, views, routing, rng), _WHY[routing.strategy]
            if affine:
                assert key is not None
                first, why = _affine(peers, views, routing, key)
                ranked.remove(first)
                ranked.insert(0, first)
        if down and len(ranked) > 1 and not down.isdisjoint(ranked):
            ranked = [n for n in ranked if n not in down] + [n for n in ranked if n in down]
            if ranked[0] not in down:
                why += "; breaker open on " + ", ".join(n for n in ranked if n in down)
        if not out:
            reason = "next in the chain" if len(tier) == 1 else why
        out.extend(ranked)
    return out, reason


_WHY = {
    "priority": "first in priority order",
    "weighted": "drawn by weight",
    "least_busy": "fewest requests in flight",
    "latency": "lower latency cost of two random choices",
}


def _by_strategy(
    peers: list[str], views: Mapping[str, State], routing: Routing, rng: random.Random
) -> list[str]:
    strategy = routing.strategy
    if strategy == "priority" or len(peers) == 1:
        return peers
    if strategy == "weighted":
        weights = routing.weights
        # Efraimidis-Spirakis: sorting by u ** (1 / w) draws a weighted order.
        keyed = [(rng.random() ** (1.0 / weights.get(n, 1.0)), n) for n in peers]
        keyed.sort(reverse=True)
        return [n for _, n in keyed]
    if strategy == "least_busy":
        keyed_busy = [(views[n].in_flight, rng.random(), n) for n in peers]
        keyed_busy.sort()
        return [n for _, _, n in keyed_busy]
    # latency: power of two choices, then the rest by cost.
    rows = [views[name] for name in peers]
    n = len(peers)
    total = 0
    for row in rows:
        total += row.in_flight
    mean = total / n if total > n else 1.0  # max(1, the tier's mean in flight)
    costs = [_cost(row, mean) for row in rows]
    i = int(rng.random() * n)
    j = int(rng.random() * (n - 1))
    if j >= i:
        j += 1  # two distinct, uniformly
    ci, cj = costs[i], costs[j]
    first = i if ci < cj or (ci == cj and rng.random() < 0.5) else j
    rest = sorted([(costs[k], k) for k in range(n) if k != first])
    return [peers[first], *[peers[k] for _, k in rest]]


def _cost(view: State, mean_in_flight: float) -> float:
    if view.latency <= 0:
        return _UNMEASURED_PENALTY + view.in_flight if view.in_flight else 0.0
    return view.latency * (1.0 + view.in_flight / mean_in_flight)


def _affine(
    peers: list[str], views: Mapping[str, State], routing: Routing, key: str
) -> tuple[str, str]:
    # Rendezvous hashing, skipping a peer whose recent load would pass the bound.
    weights = routing.weights
    scored = _ranking(key, tuple(peers), tuple(weights.get(n, 1.0) for n in peers))
    total = sum(views[n].load for n in peers) + 1.0
    cap = routing.load_bound * total / len(peers)
    for rank, name in enumerate(scored):
        if views[name].load + 1.0 <= cap:
            return (
                name,
                "prompt-prefix affinity" if rank == 0 else "affinity's next choice (load bound)",
            )
    return scored[0], "prompt-prefix affinity"


@functools.lru_cache(maxsize=8192)
def _ranking(key: str, peers: tuple[str, ...], weights: tuple[float, ...]) -> list[str]:
    # A key's rendezvous order over these peers; keys repeat (that is the
    # point of affinity), so the hashes are computed once per key.
    scores = {n: _rendezvous(key, n, w) for n, w in zip(peers, weights, strict=True)}
    return sorted(peers, key=scores.__getitem__, reverse=True)


def _rendezvous(key: str, name: str, weight: float) -> float:
    digest = hashlib.blake2b(f"{key}\x00{name}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # in (0, 1)
    return -weight / math.log(u)
