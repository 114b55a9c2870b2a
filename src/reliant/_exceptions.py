"""The one exception tree of reliant.

::

    Exception
     └── ReliantError                      root: catch this to catch everything of ours
          ├── ProviderError                one upstream failure (.provider, .status_code,
          │    │                           .retry_after, .body, .kind); raised by leaf providers
          │    ├── ContentFilterError      a safety system refused the request or the answer:
          │    │                           final, never retried or routed around by default
          │    └── FakeServerSpecError     reliant's fake server refused a test's behaviour
          │                                spec: final, never retried or failed over
          ├── StreamError                  a committed stream broke (cut, malformed, idle)
          ├── NoStreamingProviderError     no candidate can serve a stream
          ├── NoCapacityError              routing: no deployment has rate-limit capacity
          │                                within Routing.max_wait (.wait, .deployments)
          └── FailoverError                every candidate failed (.attempts; __cause__ is an
               │                           ExceptionGroup of the per-attempt errors)
               └── ContextWindowExceededError   the request cannot fit the model's window

Only ``Exception`` subclasses count as failures anywhere in reliant:
``trio.Cancelled``, ``asyncio.CancelledError``, ``KeyboardInterrupt`` and
other ``BaseException``\\ s pass straight through, are never retried and
never recorded.

Messages never carry secrets: bodies are passed through
:func:`reliant.sanitize_api_error` before they are stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Self

from ._sanitize import cap_error_text, sanitize_api_error

FailureReason = Literal[
    "retryable",
    "non_retryable",
    "rate_limited",
    "rate_limited_non_retryable",
    # The structured kinds a leaf provider can set on ProviderError.kind:
    "timeout",
    "response_too_large",
    "malformed_response",
    "content_filter",
    "fake_server_spec",
    # Routing: a deployment's client-side rate limit left no room (no call made).
    "capacity",
    # Attempts that were never made, or ended by reliant itself:
    "circuit_open",
    "retry_budget",
    "stream_broken",
    "hedge_lost",
    "hedge_budget",
    # Only in RequestRecord.attempts (never in a failure trail):
    "success",
    "cancelled",
    "context_truncated",
]
"""How a failed (or skipped) attempt is written in a failure trail.

The first four are the seed's. ``timeout`` is a first-chunk or request
deadline, ``response_too_large`` / ``malformed_response`` a server that sent
more, or other, than the protocol allows (both move to the next candidate,
never retry the same one), ``content_filter`` a safety refusal,
``fake_server_spec`` a test's mistyped fake-server behaviour (final).
``circuit_open`` and ``retry_budget`` mark attempts provider health skipped
without a call, ``stream_broken`` a committed stream that broke and was
recovered on another candidate, ``hedge_lost`` a hedged attempt cancelled
because another answered first, ``hedge_budget`` a hedge the hedge budget
refused (no call was made), ``capacity`` a failover candidate whose
client-side rate limit (routing's :class:`~reliant.RateLimit`) left no room
(no call was made either). ``success``, ``cancelled`` and
``context_truncated`` appear only in :class:`~reliant.RequestRecord`
attempts: the attempt that served, one the request's end interrupted, one
whose history was halved and sent again.
"""

ErrorKind = Literal[
    "timeout",
    "response_too_large",
    "malformed_response",
    "content_filter",
    "fake_server_spec",
    "capacity",
]
"""Structured kinds of :class:`ProviderError` that decide classification on their own."""

FAKE_SERVER_SPEC_HEADER = "x-reliant-fake-server-error"
"""Response header with which ``reliant.testing``'s fake server marks a refused spec."""


class ReliantError(Exception):
    """Root of every error reliant raises on purpose."""


class ProviderError(ReliantError):
    """One failed call to one upstream provider.

    Leaf providers raise it with the structured facts they saw on the wire, so
    classification does not have to guess from text: ``status_code`` (None for
    transport failures such as refused connections or timeouts) and
    ``retry_after`` in seconds (from ``retry-after-ms`` / ``retry-after``
    headers). ``body`` is the sanitized response body, if any.

    Args:
        message: Human-readable description; sanitized before it is stored.
        provider: Name of the provider that failed.
        status_code: HTTP status, or None when no response was received.
        retry_after: Seconds the server asked us to wait, or None.
        body: Response body text; sanitized before it is stored.
        kind: A structured kind (see :data:`ErrorKind`) when the provider
            knows what went wrong beyond the status: ``"timeout"``,
            ``"response_too_large"``, ``"malformed_response"``,
            ``"content_filter"``. Classification trusts it before any text.
    """

    provider: str | None
    status_code: int | None
    retry_after: float | None
    body: str | None
    kind: ErrorKind | None
    fixed_kind: ClassVar[ErrorKind | None] = None
    """A subclass that always means one kind sets it here (its ``kind`` is then that)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        body: str | None = None,
        kind: ErrorKind | None = None,
    ) -> None:
        super().__init__(sanitize_api_error(message))
        self.provider = provider
        self.status_code = status_code
        self.retry_after = retry_after
        self.body = None if body is None else sanitize_api_error(body)
        self.kind = self.fixed_kind or kind

    @classmethod
    def _from_sanitized(
        cls,
        message: str,
        *,
        provider: str | None,
        status_code: int | None,
        retry_after: float | None,
        body: str | None,
        kind: ErrorKind | None = None,
    ) -> Self:
        """Build one from text the caller has sanitized already (a leaf's error path).

        A leaf provider scrubs an error body once and quotes it in the
        message; sanitizing both again here found nothing more and cost two
        passes of every pattern on the path of every failover. Only the
        length cap is applied to the message, as ``__init__`` would.
        """
        err = cls.__new__(cls)
        Exception.__init__(err, cap_error_text(message))
        err.provider = provider
        err.status_code = status_code
        err.retry_after = retry_after
        err.body = body
        err.kind = cls.fixed_kind or kind
        return err

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only attributes do not survive the default pickling of
        # exceptions; keep them so errors can cross process boundaries.
        return (
            _rebuild_provider_error,
            (
                type(self),
                str(self),
                self.provider,
                self.status_code,
                self.retry_after,
                self.body,
                self.kind,
            ),
        )


def _rebuild_provider_error(
    cls: type[ProviderError],
    message: str,
    provider: str | None,
    status_code: int | None,
    retry_after: float | None,
    body: str | None,
    kind: ErrorKind | None = None,
) -> ProviderError:
    return cls(
        message,
        provider=provider,
        status_code=status_code,
        retry_after=retry_after,
        body=body,
        kind=kind,
    )


class ContentFilterError(ProviderError):
    """A provider's safety system refused the request or stopped the answer.

    Final by default: reliant neither retries it nor sends the request to
    another provider, because routing around a safety decision is not a
    reliability library's call (``ReliableProvider(fallback_on_content_filter=True)``
    opts in). ``kind`` is always ``"content_filter"``.
    """

    fixed_kind: ClassVar[ErrorKind | None] = "content_filter"


class FakeServerSpecError(ProviderError):
    """reliant's fake LLM server refused the behaviour a test asked for.

    A mistyped spec (``ok:chunk=2``) or a name that looks like a behaviour
    but is none (``hang``, ``timeout``, ``500``) gets a 400 from the fake
    server. As a plain 400 it would be a non-retryable upstream failure, so
    ``ReliableProvider`` would move to the next provider and the typo would
    look like a working failover. This error is final instead: never retried,
    never failed over, raised to the test as it is (not inside a
    ``FailoverError``), with the server's explanation and suggestion in its
    message. ``kind`` is always ``"fake_server_spec"``. Real providers never
    raise it.
    """

    fixed_kind: ClassVar[ErrorKind | None] = "fake_server_spec"


class StreamError(ReliantError):
    """A stream broke after it was committed (its first item was delivered).

    No failover happens at that point: the caller has already seen text, and
    replaying it from another provider would duplicate or contradict it. The
    upstream failure, if any, is the ``__cause__``.

    Leaf providers raise it for a break after their first item; they set
    ``tool_call_in_progress`` when a tool call was being received at that
    moment (such an answer can only be restarted, never continued).
    ``ReliableProvider(mid_stream=...)`` decides whether a break is
    recovered on another candidate or reaches the caller.
    """

    tool_call_in_progress: bool

    def __init__(self, *args: object, tool_call_in_progress: bool = False) -> None:
        super().__init__(*args)
        self.tool_call_in_progress = tool_call_in_progress


class NoStreamingProviderError(ReliantError):
    """No configured provider can serve the requested kind of stream."""


class NoCapacityError(ReliantError):
    """No deployment has rate-limit capacity, and it would not come within ``Routing.max_wait``.

    Raised before any call is made: sending the request would only earn a
    429 the client could predict.

    Attributes:
        wait: Seconds until the soonest deployment has capacity again.
        deployments: The deployments that were considered.
        waited: Seconds the request already waited for capacity.
    """

    def __init__(self, wait: float, deployments: Sequence[str], waited: float = 0.0) -> None:
        self.wait = wait
        self.deployments = tuple(deployments)
        self.waited = waited
        names = ", ".join(self.deployments)
        super().__init__(
            f"no rate-limit capacity on any deployment ({names}) for {wait:.3g} s "
            f"after waiting {waited:.3g} s (Routing.max_wait); request not sent"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.wait, self.deployments, self.waited))


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed attempt in a failover trail.

    Attributes:
        provider: Provider name as configured.
        model: The model requested from that provider (after alias mapping).
        attempt: 1-based attempt number on this provider/model pair.
        max_attempts: Attempts allowed on the pair (``max_retries + 1``).
        reason: How the failure was classified.
        error: Sanitized, whitespace-collapsed error text.
        started_at: Trio-clock time the attempt started (None for an
            attempt that was skipped without a call): a raw clock value,
            for arithmetic; read :attr:`started_after` instead.
        ended_at: Trio-clock time its outcome was known (raw, as above;
            read :attr:`ended_after`).
        request_started_at: Trio-clock time the request started, so the
            times above can be told relative to it.
    """

    provider: str
    model: str
    attempt: int
    max_attempts: int
    reason: FailureReason
    error: str
    # Timings are what happened, not what the attempt was: not compared.
    started_at: float | None = field(default=None, compare=False)
    ended_at: float | None = field(default=None, compare=False)
    request_started_at: float | None = field(default=None, compare=False)

    @property
    def started_after(self) -> float | None:
        """Seconds from the request's start to this attempt's start (None if unknown)."""
        if self.started_at is None or self.request_started_at is None:
            return None
        return self.started_at - self.request_started_at

    @property
    def ended_after(self) -> float | None:
        """Seconds from the request's start to this attempt's outcome (None if unknown)."""
        if self.ended_at is None or self.request_started_at is None:
            return None
        return self.ended_at - self.request_started_at

    @property
    def duration(self) -> float | None:
        """Seconds the attempt took (None for one skipped without a call)."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def __str__(self) -> str:
        return (
            f"provider={self.provider} model={self.model} "
            f"attempt {self.attempt}/{self.max_attempts}: {self.reason}; error={self.error}"
        )


class FailoverError(ReliantError):
    """Every candidate (model x provider x retry) failed.

    The message is the header followed by one line per attempt; ``attempts``
    holds the same trail as records, and ``__cause__`` is an
    ``ExceptionGroup`` of the original per-attempt exceptions so tooling can
    walk them.
    """

    attempts: list[Attempt]

    def __init__(
        self,
        header: str,
        attempts: Sequence[Attempt],
    ) -> None:
        self.attempts = list(attempts)
        lines = "\n".join(str(a) for a in self.attempts)
        super().__init__(f"{header}\n{lines}" if lines else header)

    def __reduce__(self) -> tuple[object, ...]:
        header = str(self).split("\n", 1)[0]
        return (type(self), (header, self.attempts))


class ContextWindowExceededError(FailoverError):
    """The request does not fit the model's context window, even after truncation."""
