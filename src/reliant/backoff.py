"""How long to wait before the next attempt.

Equal jitter
------------
Without a server hint, the wait for a backoff ``base`` is drawn uniformly from
``[base/2, base]``: half of the interval is fixed and half is random. The
random half desynchronizes clients that failed together, so they do not
re-fire in lockstep against a provider that is already struggling (thundering
herd, retry storms); the fixed half keeps a lower bound so retries never
collapse towards zero. Between attempts the failover loop doubles ``base`` with
:func:`double_backoff`, capped at :data:`MAX_BACKOFF`, starting from a base that
is at least :data:`MIN_BASE_BACKOFF`.

Retry-After
-----------
When the server says when to come back (a ``Retry-After`` header or the same
hint in the error text, see :func:`reliant.classify.parse_retry_after`), that
wait is used as is, without jitter: the server has already chosen the moment,
and shortening it would only earn another 429. It is capped at
:data:`MAX_RETRY_AFTER` so one hostile or buggy header cannot stall a caller
for an hour, and never goes below ``base``, so a ``Retry-After: 0`` does not
turn the loop into a busy retry.

Randomness is injectable: every function takes an optional
:class:`random.Random`; the default is a private module-level instance, never
the global :mod:`random` state, so tests can pin it without side effects.
"""

from __future__ import annotations

import math
import random

from .classify import parse_retry_after

__all__ = [
    "MAX_BACKOFF",
    "MAX_RETRY_AFTER",
    "MIN_BASE_BACKOFF",
    "double_backoff",
    "jitter_backoff",
    "next_backoff",
]

MIN_BASE_BACKOFF = 0.05
"""Smallest base backoff in seconds; a configured base is raised to this."""

MAX_BACKOFF = 10.0
"""Ceiling in seconds for the doubled base backoff."""

MAX_RETRY_AFTER = 30.0
"""Ceiling in seconds for a server-requested Retry-After wait."""

_RNG = random.Random()


def jitter_backoff(base: float, *, rng: random.Random | None = None) -> float:
    """Apply equal jitter to a backoff interval.

    Args:
        base: The backoff interval in seconds.
        rng: Source of randomness; defaults to a private module-level instance.

    Returns:
        A value in ``[base/2, base]``; ``base`` itself when it is not a
        positive finite number.
    """
    if not (base > 0.0 and math.isfinite(base)):
        return base
    half = base * 0.5
    # Exact (Sterbenz), so half + span == base and the result never exceeds base.
    span = base - half
    return half + span * (rng if rng is not None else _RNG).random()


def next_backoff(base: float, err: BaseException, *, rng: random.Random | None = None) -> float:
    """Compute the wait before retrying after ``err``.

    Args:
        base: The current backoff interval in seconds.
        err: The failure that is about to be retried.
        rng: Source of randomness for the jitter; defaults to a private
            module-level instance.

    Returns:
        The server's Retry-After capped at :data:`MAX_RETRY_AFTER` and never
        below ``base`` (no jitter) when the error carries one, otherwise
        ``jitter_backoff(base)``.
    """
    retry_after = parse_retry_after(err)
    if retry_after is not None and not math.isnan(retry_after):
        # Clamped on both sides whatever the hint was (negative, 1e12, inf).
        return max(base, min(max(retry_after, 0.0), MAX_RETRY_AFTER))
    return jitter_backoff(base, rng=rng)


def double_backoff(base: float) -> float:
    """Double a backoff interval, capped at :data:`MAX_BACKOFF`.

    Args:
        base: The current backoff interval in seconds.

    Returns:
        ``min(base * 2, MAX_BACKOFF)``.
    """
    return min(base * 2, MAX_BACKOFF)
