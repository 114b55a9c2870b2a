"""The one exception tree of reliant.

::

    Exception
     └── ReliantError                      root: catch this to catch everything of ours
          ├── ProviderError                one upstream failure (.provider, .status_code,
          │                                .retry_after, .body); raised by leaf providers
          ├── StreamError                  a committed stream broke (cut, malformed, idle)
          ├── NoStreamingProviderError     no candidate can serve a stream
          └── FailoverError                every candidate failed (.attempts; __cause__ is an
               │                           ExceptionGroup of the per-attempt errors)
               └── ContextWindowExceededError   the request cannot fit the model's window

Only ``Exception`` subclasses count as failures anywhere in reliant:
``trio.Cancelled``, ``KeyboardInterrupt`` and other ``BaseException``\\ s pass
straight through, are never retried and never recorded.

Messages never carry secrets: bodies are passed through
:func:`reliant.sanitize_api_error` before they are stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ._sanitize import sanitize_api_error

FailureReason = Literal["retryable", "non_retryable", "rate_limited", "rate_limited_non_retryable"]


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
    """

    provider: str | None
    status_code: int | None
    retry_after: float | None
    body: str | None

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(sanitize_api_error(message))
        self.provider = provider
        self.status_code = status_code
        self.retry_after = retry_after
        self.body = None if body is None else sanitize_api_error(body)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only attributes do not survive the default pickling of
        # exceptions; keep them so errors can cross process boundaries.
        return (
            _rebuild_provider_error,
            (type(self), str(self), self.provider, self.status_code, self.retry_after, self.body),
        )


def _rebuild_provider_error(
    cls: type[ProviderError],
    message: str,
    provider: str | None,
    status_code: int | None,
    retry_after: float | None,
    body: str | None,
) -> ProviderError:
    return cls(
        message, provider=provider, status_code=status_code, retry_after=retry_after, body=body
    )


class StreamError(ReliantError):
    """A stream broke after it was committed (its first item was delivered).

    No failover happens at that point: the caller has already seen text, and
    replaying it from another provider would duplicate or contradict it. The
    upstream failure, if any, is the ``__cause__``.
    """


class NoStreamingProviderError(ReliantError):
    """No configured provider can serve the requested kind of stream."""


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
    """

    provider: str
    model: str
    attempt: int
    max_attempts: int
    reason: FailureReason
    error: str

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
