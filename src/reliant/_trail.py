"""The trail: what one request's walk went through, and the error it ends with.

Every candidate the planner (``_failover``) tried and lost, skipped without
a call, or recovered from mid-stream leaves one entry here. The trail is what
users read afterwards: the lines of :class:`~reliant.FailoverError`, the
``attempts`` of fallback information and of the request record, the errors
grouped under the ``FailoverError``'s cause, and the mid-stream recoveries.
Keeping it in its own room keeps the planner about the walk (which candidate
next, when, whether to sleep) and this about the telling.

Sanitizing happens here, once: every failure recorded passes
:func:`describe_failure`, which scrubs its exception chain in place, so the
errors kept, handed to observers or raised to the caller quote no secret.
"""

from __future__ import annotations

from dataclasses import replace

from ._exceptions import Attempt, FailoverError, FailureReason, ProviderError
from ._records import StreamRecovery
from ._sanitize import collapse_whitespace, sanitize_api_error, scrub_exception

__all__ = ["Trail", "describe_failure"]


class Trail:
    """One request's failure trail, its errors and its mid-stream recoveries.

    Args:
        max_attempts: Attempts allowed per route (every entry states it).
        began: The request's start on the loop's clock; entries tell their
            times relative to it.
    """

    __slots__ = ("attempts", "began", "errors", "max_attempts", "recoveries")

    def __init__(self, max_attempts: int, began: float) -> None:
        self.max_attempts = max_attempts
        self.began = began
        self.attempts: list[Attempt] = []
        self.errors: list[Exception] = []
        self.recoveries: list[StreamRecovery] = []

    def note(
        self,
        name: str,
        model_id: str,
        attempt: int,
        reason: FailureReason,
        detail: str,
        started: float | None = None,
        ended: float | None = None,
    ) -> None:
        """One entry, as given (a skip has no start; a hedge that lost says why)."""
        self.attempts.append(
            Attempt(
                name,
                model_id,
                attempt,
                self.max_attempts,
                reason,
                detail,
                started,
                ended,
                self.began,
            )
        )

    def failed(
        self,
        name: str,
        model_id: str,
        attempt: int,
        reason: FailureReason,
        err: Exception,
        started: float,
        ended: float,
        *,
        keep: bool = True,
    ) -> str:
        """An attempt failed with ``err``: its entry, and ``err`` kept unless ``keep`` is False.

        Returns the sanitized one-line detail. A leaf calls itself by its own
        name ("openai API error ..."); the entry says the configured name, so
        each line names one provider.
        """
        detail = describe_failure(err)
        own = err.provider if isinstance(err, ProviderError) else None
        if own and own != name and detail.startswith((f"{own} ", f"{own}:")):
            detail = name + detail[len(own) :]
        self.note(name, model_id, attempt, reason, detail, started, ended)
        if keep:
            self.errors.append(err)
        return detail

    def recovered(
        self,
        recovery: StreamRecovery,
        err: Exception,
        attempt: int,
        started: float,
        ended: float,
    ) -> None:
        """A committed stream broke and the request goes on mid-answer."""
        self.note(
            recovery.provider,
            recovery.model,
            attempt,
            "stream_broken",
            f"broke after {recovery.after_chars} characters, "
            f"recovering ({recovery.mode}): {recovery.reason}",
            started,
            ended,
        )
        self.errors.append(err)
        self.recoveries.append(recovery)

    def recovery_mode(self, mode: str) -> None:
        """Correct how the last recovery proceeds (a continuation that became a restart)."""
        if self.recoveries:
            self.recoveries[-1] = replace(self.recoveries[-1], mode=mode)

    def open_recovery(self) -> StreamRecovery | None:
        """The recovery still waiting for an attempt to take it over, if any."""
        return next((r for r in self.recoveries if not r.to_provider), None)

    def taken_over(self, name: str, model_id: str) -> tuple[StreamRecovery, ...]:
        """Every recovery, the open ones now saying who answered in the end."""
        if not self.recoveries:
            return ()
        self.recoveries = [
            r if r.to_provider else replace(r, to_provider=name, to_model=model_id)
            for r in self.recoveries
        ]
        return tuple(self.recoveries)

    def error(self, cls: type[FailoverError], header: str) -> FailoverError:
        """The error that ends the request: one line per entry, every kept error as its cause."""
        exc = cls(header, list(self.attempts))
        if self.errors:
            exc.__cause__ = ExceptionGroup("errors of the failed attempts", self.errors)
        return exc


def describe_failure(err: BaseException) -> str:
    """The one-line, sanitized text of a failure, its cause chain scrubbed in place.

    A ``ProviderError`` with nothing chained was sanitized when it was made
    (its message is stored sanitized): only its whitespace is collapsed.
    """
    if type(err) is ProviderError and err.__cause__ is None and err.__context__ is None:
        return collapse_whitespace(str(err))
    scrub_exception(err)
    return collapse_whitespace(sanitize_api_error(_describe(err)))


def _describe(err: BaseException) -> str:
    # Include the cause chain, as the seed's `{:#}` did, so the trail shows
    # the root cause and not just the outermost wrapper.
    parts = [str(err) or type(err).__name__]
    seen = {id(err)}
    cause = err.__cause__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        text = str(cause) or type(cause).__name__
        # Providers often quote their cause already; do not say it twice.
        if not any(text in part for part in parts):
            parts.append(text)
        cause = cause.__cause__
    return ": ".join(parts)
