"""Deployments of one fake LLM server: their own latency, rate limits and prompt cache.

Routing across several deployments of one model (issue #18/#22) is tested
and benchmarked against ONE fake server: each deployment is a path prefix,
``/d/<name>``, before any route the server serves
(``http://127.0.0.1:PORT/d/east/v1/chat/completions``,
``.../d/east/v1/messages``), so a client only needs a different base URL per
deployment. A deployment is declared, and changed while the server runs, by
``server.deployment(name, ...)``; its settings are a frozen
:class:`Deployment`, its counters a :class:`DeploymentStats`
(``server.deployment_stats(name)``). A prefix naming no declared deployment
gets a 404 that names it. Requests without a prefix behave exactly as before.

What a deployment does to each request on a model route (``GET /v1/models``
is answered as usual):

``ttft``
    Seconds before the response head of every answered request (added to
    the behaviour's ``delay``), so nothing arrives earlier: not the headers,
    not the stream's preamble (OpenAI's role chunk, Anthropic's
    ``message_start``), not the first piece, not a JSON answer. A busy
    deployment's queue and prefill look like that to every client, whichever
    event it times (LiteLLM's latency routing times the first chunk, the
    preamble). The behaviour's own ``ttft`` still counts from the headers.
    Error answers of the behaviour wait too; a rate-limit 429 does not. Read
    when the request arrives, so a change applies from the next request.
``rpm``, ``tpm``
    Rate limits, kept as token buckets on the server's loop clock, as both
    providers document their limits ("continuously replenished", Anthropic;
    OpenAI's ``x-ratelimit-reset-*`` is the time until the bucket is full
    again): a bucket holds at most the limit, starts full and refills at
    limit/60 per second. A request takes 1 from the requests bucket and its
    token estimate from the tokens bucket; when either holds too little,
    the answer is a 429 in the protocol's error shape (OpenAI
    ``rate_limit_exceeded``, Anthropic ``rate_limit_error``, Gemini
    ``RESOURCE_EXHAUSTED``, Bedrock ``ThrottlingException``) with
    ``retry-after``: the whole seconds, rounded up, until both buckets hold
    enough; it takes nothing from either bucket and consumes no scripted
    behaviour. A request larger than the whole ``tpm`` can never pass: its
    429 says so and carries no ``retry-after``.

    Token estimate: the characters of all message text (the system prompt,
    and every message's ``content``/``text``/``parts`` text) divided by 4,
    rounded up, plus the request's ``max_completion_tokens``,
    ``max_tokens`` or ``max_output_tokens`` (the first one set) when it
    names one; otherwise the answer's output tokens (as its usage reports
    them) are taken once the behaviour is known, which may leave the
    bucket below empty until it refills. Error answers (``status``, a 400)
    take no output tokens.

    Every response of such a deployment (429s included) carries the
    provider's headers, with the values after this request:
    OpenAI-shaped routes (chat completions, Responses, Azure)
    ``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests`` and
    ``x-ratelimit-reset-requests``, and the ``-tokens`` twins, the reset as
    OpenAI writes durations (``"120ms"``, ``"1s"``, ``"6m0s"``,
    ``"1.5s"``: Go's notation at millisecond resolution, rounded up);
    Anthropic's ``/v1/messages`` ``anthropic-ratelimit-requests-limit``,
    ``-remaining`` and ``-reset`` and the ``anthropic-ratelimit-tokens-*``
    twins, the reset an RFC 3339 UTC time in whole seconds, rounded up
    (``"2025-01-01T00:00:07Z"``): the loop clock mapped onto the wall clock
    at the server's first request to a deployment. Only configured limits
    are reported; remaining is the whole units left, never below 0.
``prefix_cache``
    The deployment remembers the prompt prefixes it has seen: the system
    prompt (``system``, ``systemInstruction`` or ``instructions``) and every
    message but the last, hashed (BLAKE2b), in an LRU of ``cache_size``
    entries (default 4096). Each admitted request is a hit (its prefix was
    seen) or a miss (then remembered); a request with nothing before its
    last message is a miss and nothing is remembered. Every response says
    which in ``x-fake-cache: hit|miss``, and the answer's usage reports the
    estimate instead of the behaviour's numbers: prompt tokens as above
    (without ``max_tokens``), of which cached = the prefix's characters / 4
    rounded up on a hit, 0 on a miss (OpenAI
    ``usage.prompt_tokens_details.cached_tokens``; Anthropic
    ``usage.cache_read_input_tokens``, its ``input_tokens`` being the rest,
    as Anthropic counts). Turning it off forgets what was seen.

Changing ``rpm``/``tpm`` keeps what the bucket holds (at most the new
limit); a limit newly set starts full, one removed forgets its bucket.

From another process
--------------------
The same controls over HTTP, for a benchmark whose client runs elsewhere:
``POST /_fake/deployments/<name>`` with a JSON object of settings (any of
``ttft``, ``rpm``, ``tpm``, ``prefix_cache``, ``cache_size``; ``null``
removes a limit) declares or changes one and answers
``{"settings": {...}, "stats": {...}}``; ``GET /_fake/deployments/<name>``
reads one, ``GET /_fake/deployments`` all (``{"deployments": {name: ...}}``).
Bad settings get a 400 that names them.

Clock: the buckets read the loop's clock (:func:`reliant._backend.current_time`)
only while answering a request, on the server's own loop; declaring or
changing a deployment reads no clock, so it is safe from a caller on
another loop or thread.
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal, NamedTuple, TypeAlias

from .._backend import current_time

__all__ = [
    "DEPLOYMENT_PREFIX",
    "KEEP",
    "Deployment",
    "DeploymentControls",
    "DeploymentStats",
    "Deployments",
    "Refusal",
    "Visit",
    "go_duration",
    "split_deployment",
]

DEPLOYMENT_PREFIX: Final = "/d/"
CONTROL_PREFIX: Final = "/_fake/deployments"
CACHE_HEADER: Final = "x-fake-cache"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,63}")
_SETTINGS = ("ttft", "rpm", "tpm", "prefix_cache", "cache_size")
_MAX_TOKEN_KEYS = ("max_completion_tokens", "max_tokens", "max_output_tokens")

Style: TypeAlias = Literal["openai", "anthropic"]


class _Keep(enum.Enum):
    KEEP = "KEEP"

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep.KEEP
"""Leave this setting as it is (the default of every ``server.deployment`` argument)."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """The settings of one deployment of the fake server (see :mod:`._fake_deployments`).

    Attributes:
        name: Its path segment: ``/d/<name>/...``. Letters, digits and
            ``._~-``, at most 64 characters, not starting with punctuation.
        ttft: Seconds before the response (headers, preamble, first piece,
            or JSON answer) of every request.
        rpm: Requests per minute, or None for no limit.
        tpm: Tokens per minute (estimated per request), or None for no limit.
        prefix_cache: Remember prompt prefixes and report cache hits.
        cache_size: How many prefixes the cache holds (least recently used
            ones are forgotten first).
    """

    name: str
    ttft: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    prefix_cache: bool = False
    cache_size: int = 4096

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or _NAME_RE.fullmatch(self.name) is None:
            raise ValueError(
                f"bad deployment name {self.name!r}: use 1 to 64 letters, digits and '._~-', "
                "starting with a letter or digit (it becomes a URL path segment)"
            )
        ttft = self.ttft
        if isinstance(ttft, bool) or not isinstance(ttft, int | float) or not math.isfinite(ttft):
            raise ValueError(f"deployment {self.name!r}: ttft must be a finite number of seconds")
        if ttft < 0:
            raise ValueError(f"deployment {self.name!r}: ttft must be >= 0, not {ttft!r}")
        for key in ("rpm", "tpm", "cache_size"):
            value = getattr(self, key)
            if value is None and key != "cache_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"deployment {self.name!r}: {key} must be a whole number >= 1"
                    + (" or None" if key != "cache_size" else "")
                    + f", not {value!r}"
                )
        if not isinstance(self.prefix_cache, bool):
            raise ValueError(f"deployment {self.name!r}: prefix_cache must be True or False")


@dataclass(frozen=True, slots=True)
class DeploymentStats:
    """What one deployment has done so far (a snapshot).

    Attributes:
        requests: Requests on its model routes, rate-limited ones included.
        rate_limited: 429s its ``rpm``/``tpm`` limits sent.
        cache_hits: Admitted requests whose prompt prefix it had seen.
        cache_misses: Admitted requests whose prefix it had not (or that had none).
        tokens: Tokens charged to its ``tpm`` bucket (estimated; see the module).
    """

    requests: int = 0
    rate_limited: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    tokens: int = 0

    @property
    def cache_hit_ratio(self) -> float | None:
        """Hits / (hits + misses), or None before any lookup."""
        looked = self.cache_hits + self.cache_misses
        return self.cache_hits / looked if looked else None


def go_duration(seconds: float) -> str:
    """``seconds`` as OpenAI's rate-limit headers write it: ``"120ms"``, ``"1s"``, ``"6m0s"``.

    Go's ``time.Duration`` notation at millisecond resolution, rounded up
    (a client waiting that long finds the capacity back).
    """
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    text = f"{whole}.{frac:03d}".rstrip("0") if frac else str(whole)
    if hours:
        return f"{hours}h{minutes}m{text}s"
    if minutes:
        return f"{minutes}m{text}s"
    return f"{text}s"


def split_deployment(target: str) -> tuple[str | None, str]:
    """``("east", "/v1/messages")`` from ``"/d/east/v1/messages"``; ``(None, target)`` without."""
    if not target.startswith(DEPLOYMENT_PREFIX):
        return None, target
    name, slash, rest = target[len(DEPLOYMENT_PREFIX) :].partition("/")
    if "?" in name:
        name, _, query = name.partition("?")
        return name, "/?" + query
    return name, slash + rest if slash else "/"


# -- rate limits ------------------------------------------------------------------------


class _Bucket:
    """A token bucket: holds at most ``capacity``, refills ``capacity`` per 60 s."""

    __slots__ = ("capacity", "level", "stamp")

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = capacity
        self.level = float(capacity)
        self.stamp = now

    @property
    def rate(self) -> float:
        return self.capacity / 60.0

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(float(self.capacity), self.level + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self.level = min(self.level, float(capacity))

    def wait_for(self, amount: int) -> float:
        """Seconds until it holds ``amount`` (after :meth:`refill`).

        A shortfall of a billionth is none: refills summed over many small
        steps must not refuse a request at the exact time it is due.
        """
        short = amount - self.level
        return 0.0 if short <= 1e-9 else short / self.rate

    def until_full(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)

    def remaining(self) -> int:
        return max(0, math.floor(self.level + 1e-9))

    def used(self) -> int:
        return self.capacity - self.remaining()


class Refusal(NamedTuple):
    """A rate-limit 429: its message and ``retry-after`` in whole seconds (None: never)."""

    message: str
    retry_after: int | None


class _State:
    """One deployment: its settings, buckets, prompt cache and counters."""

    def __init__(self, settings: Deployment) -> None:
        self.settings = settings
        self.buckets: dict[str, _Bucket] = {}
        self.cache: OrderedDict[bytes, None] = OrderedDict()
        self.requests = 0
        self.rate_limited = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.tokens = 0
        # Turning the cache off bumps ``forgotten``; the server's loop clears
        # the cache when it sees the bump (see sync_cache), so a caller on
        # another thread never touches the cache the server is reading.
        self.forgotten = 0
        self.cleared = 0

    def update(self, settings: Deployment) -> None:
        if self.settings.prefix_cache and not settings.prefix_cache:
            self.forgotten += 1
        self.settings = settings

    def sync_cache(self, settings: Deployment) -> None:
        """Apply the settings to the cache: forget it if it was turned off, trim it to size."""
        if self.cleared != self.forgotten:
            self.cache.clear()
            self.cleared = self.forgotten
        while len(self.cache) > settings.cache_size:
            self.cache.popitem(last=False)

    def bucket(self, kind: str, limit: int | None, now: float) -> _Bucket | None:
        """The ``kind`` bucket ("requests", "tokens") refilled to ``now``, resized to ``limit``."""
        bucket = self.buckets.get(kind)
        if limit is None:
            self.buckets.pop(kind, None)
            return None
        if bucket is None:
            bucket = self.buckets[kind] = _Bucket(limit, now)
            return bucket
        bucket.refill(now)
        if bucket.capacity != limit:
            bucket.resize(limit)
        return bucket

    def stats(self) -> DeploymentStats:
        return DeploymentStats(
            requests=self.requests,
            rate_limited=self.rate_limited,
            cache_hits=self.cache_hits,
            cache_misses=self.cache_misses,
            tokens=self.tokens,
        )


# -- one request ------------------------------------------------------------------------


class Visit:
    """One request's passage through a deployment, from admission to its headers."""

    __slots__ = (
        "_anchor",
        "_buckets",
        "_charge_output",
        "_state",
        "cache",
        "cached_tokens",
        "now",
        "prompt_tokens",
        "refusal",
        "ttft",
    )

    def __init__(
        self,
        state: _State,
        now: float,
        anchor: float,
        prompt_tokens: int,
        reserved: int | None,
    ) -> None:
        self._state = state
        self._anchor = anchor  # wall time minus loop time
        self.now = now
        self.ttft = state.settings.ttft
        self.prompt_tokens = prompt_tokens
        self.refusal: Refusal | None = None
        self.cache: Literal["hit", "miss"] | None = None
        self.cached_tokens = 0
        self._charge_output = reserved is None
        settings = state.settings
        self._buckets = {
            "requests": state.bucket("requests", settings.rpm, now),
            "tokens": state.bucket("tokens", settings.tpm, now),
        }
        need = {"requests": 1, "tokens": prompt_tokens + (reserved or 0)}
        self._admit(need)

    def _admit(self, need: dict[str, int]) -> None:
        state = self._state
        state.requests += 1
        waits: dict[str, float] = {}
        for kind, bucket in self._buckets.items():
            if bucket is None:
                continue
            if need[kind] > bucket.capacity:
                state.rate_limited += 1
                self.refusal = Refusal(
                    f"Request too large for deployment {state.settings.name!r} on tokens per "
                    f"min (TPM): Limit {bucket.capacity}, Requested {need[kind]}. The input "
                    "or output tokens must be reduced in order to run successfully.",
                    None,
                )
                return
            waits[kind] = bucket.wait_for(need[kind])
        if any(wait > 0 for wait in waits.values()):
            state.rate_limited += 1
            kind = max(waits, key=lambda k: waits[k])
            bucket = self._buckets[kind]
            assert bucket is not None
            label = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
            wait = max(waits.values())
            self.refusal = Refusal(
                f"Rate limit reached for deployment {state.settings.name!r} on {label}: "
                f"Limit {bucket.capacity}, Used {bucket.used()}, Requested {need[kind]}. "
                f"Please try again in {go_duration(wait)}.",
                max(1, math.ceil(wait - 1e-9)),
            )
            return
        for kind, bucket in self._buckets.items():
            if bucket is not None:
                bucket.level -= need[kind]
        state.tokens += need["tokens"]

    def look_up(self, body: Mapping[str, Any]) -> None:
        """Consult the prompt cache (when the deployment has one) for this request's prefix."""
        state = self._state
        settings = state.settings
        state.sync_cache(settings)
        if not settings.prefix_cache or self.refusal is not None:
            return
        key, chars = _prefix(body)
        if key is None:
            self.cache = "miss"
            state.cache_misses += 1
            return
        if key in state.cache:
            state.cache.move_to_end(key)
            self.cache = "hit"
            self.cached_tokens = _tokens(chars)
            state.cache_hits += 1
            return
        self.cache = "miss"
        state.cache_misses += 1
        state.cache[key] = None
        state.sync_cache(settings)

    def finish(
        self, output_tokens: int, style: Style | None
    ) -> tuple[list[tuple[str, str]], tuple[int, int] | None]:
        """Charge the answer's output tokens; the response headers and usage to report.

        The usage, for a prefix-cache deployment, is (input tokens as the
        protocol counts them, cached tokens); None keeps the behaviour's.
        """
        tokens = self._buckets["tokens"]
        if self.refusal is None and self._charge_output and output_tokens > 0:
            if tokens is not None:
                tokens.level -= output_tokens
            self._state.tokens += output_tokens
        headers = self._limit_headers(style)
        if self.cache is None:
            return headers, None
        headers.append((CACHE_HEADER, self.cache))
        reported = self.prompt_tokens
        if style == "anthropic":
            reported -= self.cached_tokens  # Anthropic's input_tokens leave cache reads out
        return headers, (reported, self.cached_tokens)

    def _limit_headers(self, style: Style | None) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        for kind, bucket in self._buckets.items():
            if bucket is None or style is None:
                continue
            reset = bucket.until_full()
            if style == "openai":
                headers += [
                    (f"x-ratelimit-limit-{kind}", str(bucket.capacity)),
                    (f"x-ratelimit-remaining-{kind}", str(bucket.remaining())),
                    (f"x-ratelimit-reset-{kind}", go_duration(reset)),
                ]
            else:
                at = math.ceil(self._anchor + self.now + reset - 1e-6)
                stamp = datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                headers += [
                    (f"anthropic-ratelimit-{kind}-limit", str(bucket.capacity)),
                    (f"anthropic-ratelimit-{kind}-remaining", str(bucket.remaining())),
                    (f"anthropic-ratelimit-{kind}-reset", stamp),
                ]
        return headers


def _text(value: Any) -> str:
    """The text in a message, a content list or a system prompt (str, parts, blocks)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_text(item) for item in value)
    if isinstance(value, dict):
        return "".join(_text(value[key]) for key in ("content", "text", "parts") if key in value)
    return ""


def _messages(body: Mapping[str, Any]) -> list[Any]:
    for key in ("messages", "contents", "input"):
        value = body.get(key)
        if isinstance(value, list):
            return value
    return []


def _system(body: Mapping[str, Any]) -> Any:
    for key in ("system", "systemInstruction", "instructions"):
        if key in body:
            return body[key]
    return None


def _tokens(chars: int) -> int:
    return (chars + 3) // 4


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    return _tokens(len(_text(_system(body))) + sum(len(_text(m)) for m in _messages(body)))


def _reserved(body: Mapping[str, Any]) -> int | None:
    for key in _MAX_TOKEN_KEYS:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _prefix(body: Mapping[str, Any]) -> tuple[bytes | None, int]:
    """The hash of the system prompt and every message but the last, and their characters."""
    system = _system(body)
    earlier = _messages(body)[:-1]
    if system in (None, "", []) and not earlier:
        return None, 0
    canonical = json.dumps([system, earlier], sort_keys=True, separators=(",", ":"))
    key = hashlib.blake2b(canonical.encode(), digest_size=16).digest()
    return key, len(_text(system)) + sum(len(_text(m)) for m in earlier)


# -- the table --------------------------------------------------------------------------


class Deployments:
    """Every deployment of one server: settings, state, and the HTTP controls."""

    def __init__(self, clock: Callable[[], float] = current_time) -> None:
        self._clock = clock
        self._states: dict[str, _State] = {}
        self._anchor: float | None = None

    def configure(self, name: str, changes: Mapping[str, Any]) -> Deployment:
        """Declare ``name`` or change the settings given in ``changes`` (others kept).

        Raises:
            ValueError: a setting is unknown or invalid (the message names it).
        """
        unknown = [key for key in changes if key not in _SETTINGS]
        if unknown:
            close = difflib.get_close_matches(unknown[0], _SETTINGS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown deployment setting {unknown[0]!r}{hint}; the settings are "
                + ", ".join(_SETTINGS)
            )
        state = self._states.get(name)
        base = state.settings if state is not None else Deployment(name)
        settings = replace(base, **changes)
        if state is None:
            self._states[name] = _State(settings)
        else:
            state.update(settings)
        return settings

    def settings(self) -> dict[str, Deployment]:
        return {name: state.settings for name, state in self._states.items()}

    def stats(self, name: str) -> DeploymentStats:
        return self._state(name).stats()

    def total_rate_limited(self) -> int:
        return sum(state.rate_limited for state in self._states.values())

    def known(self, name: str) -> bool:
        return name in self._states

    def clear(self) -> None:
        self._states.clear()

    def _state(self, name: str) -> _State:
        state = self._states.get(name)
        if state is None:
            raise KeyError(self.unknown_message(name))
        return state

    def unknown_message(self, name: str) -> str:
        known = ", ".join(repr(n) for n in sorted(self._states)) or "none"
        close = difflib.get_close_matches(name, list(self._states), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (
            f"unknown deployment {name!r}{hint}: declared deployments are {known}; "
            f"declare it with server.deployment({name!r}, ...) before using /d/{name}/"
        )

    # -- per request --------------------------------------------------------------------

    def admit(self, name: str, body: Any) -> Visit:
        """Admit one request to deployment ``name`` (declared) now: a :class:`Visit`."""
        state = self._state(name)
        now = self._clock()
        if self._anchor is None:
            self._anchor = time.time() - now  # the wall clock at loop time 0
        payload: Mapping[str, Any] = body if isinstance(body, dict) else {}
        visit = Visit(state, now, self._anchor, _prompt_tokens(payload), _reserved(payload))
        visit.look_up(payload)
        return visit

    # -- HTTP ---------------------------------------------------------------------------

    def early_answer(
        self, method: str, path: str, deployment: str | None, body: Any
    ) -> tuple[int, dict[str, Any]] | None:
        """The answer to a control request or to an undeclared deployment, else None."""
        if deployment is not None and deployment not in self._states:
            return 404, _error(self.unknown_message(deployment), "unknown_deployment")
        path = path.split("?", 1)[0]
        if deployment is not None or not (
            path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/")
        ):
            return None
        name = path[len(CONTROL_PREFIX) + 1 :]
        if method == "GET" and not name:
            return 200, {"deployments": {n: self._describe(n) for n in sorted(self._states)}}
        if method == "GET" and name in self._states:
            return 200, self._describe(name)
        if method == "GET":
            return 404, _error(self.unknown_message(name), "unknown_deployment")
        if method != "POST" or not name:
            return 405, _error(
                f"{method} {path}: use GET {CONTROL_PREFIX}[/<name>] or "
                f"POST {CONTROL_PREFIX}/<name> with a JSON object of settings",
                "method_not_allowed",
            )
        if not isinstance(body, dict):
            return 400, _error(
                f"POST {path}: the body must be a JSON object of settings ({', '.join(_SETTINGS)})",
                "invalid_settings",
            )
        try:
            self.configure(name, body)
        except (ValueError, TypeError) as exc:
            return 400, _error(f"POST {path}: {exc}", "invalid_settings")
        return 200, self._describe(name)

    def _describe(self, name: str) -> dict[str, Any]:
        state = self._states[name]
        return {"settings": asdict(state.settings), "stats": asdict(state.stats())}


def _error(message: str, code: str) -> dict[str, Any]:
    return {
        "error": {
            "message": f"reliant fake server: {message}",
            "type": "invalid_request_error",
            "param": None,
            "code": code,
        }
    }


# -- the server's methods -----------------------------------------------------------------


class DeploymentControls:
    """The deployment methods of :class:`~reliant.testing.FakeLLMServer`."""

    _deployments: Deployments

    @property
    def base_url(self) -> str:  # pragma: no cover - the server's own
        raise NotImplementedError

    def deployment(
        self,
        name: str,
        *,
        ttft: float | _Keep = KEEP,
        rpm: int | _Keep | None = KEEP,
        tpm: int | _Keep | None = KEEP,
        prefix_cache: bool | _Keep = KEEP,
        cache_size: int | _Keep = KEEP,
    ) -> Deployment:
        """Declare deployment ``name``, or change its settings while the server runs.

        Requests reach it under ``/d/<name>/`` (see :meth:`deployment_url`).
        An argument left out keeps its value (the default on first use);
        ``rpm=None`` or ``tpm=None`` removes a limit. What each setting does
        is in :mod:`reliant.testing._fake_deployments`.

        Args:
            name: The path segment (letters, digits, ``._~-``).
            ttft: Seconds before the response of every request (its headers and
                first piece).
            rpm: Requests per minute, enforced with 429s and reported in headers.
            tpm: Estimated tokens per minute, likewise.
            prefix_cache: Remember prompt prefixes; report hits and misses.
            cache_size: Prefixes remembered (least recently used forgotten first).

        Returns:
            Its settings now.

        Raises:
            ValueError: a bad name or setting (the message names it).
        """
        given = {
            "ttft": ttft,
            "rpm": rpm,
            "tpm": tpm,
            "prefix_cache": prefix_cache,
            "cache_size": cache_size,
        }
        return self._deployments.configure(
            name, {key: value for key, value in given.items() if value is not KEEP}
        )

    @property
    def deployments(self) -> dict[str, Deployment]:
        """The settings of every declared deployment, by name (a copy)."""
        return self._deployments.settings()

    def deployment_stats(self, name: str) -> DeploymentStats:
        """A snapshot of deployment ``name``'s counters.

        Raises:
            KeyError: no deployment of that name was declared.
        """
        return self._deployments.stats(name)

    def deployment_url(self, name: str) -> str:
        """``http://HOST:PORT/d/<name>``: the server root of deployment ``name``.

        Append ``/v1`` for OpenAI-compatible clients; Anthropic clients use it as it is.

        Raises:
            KeyError: no deployment of that name was declared.
        """
        if not self._deployments.known(name):
            raise KeyError(self._deployments.unknown_message(name))
        return f"{self.base_url}{DEPLOYMENT_PREFIX}{name}"

    @property
    def rate_limited(self) -> int:
        """429s sent by every deployment's rate limits so far."""
        return self._deployments.total_rate_limited()
