"""Exact backoff times in tests: a random source with the jitter taken out."""

from __future__ import annotations

import random

__all__ = ["NoJitter"]


class NoJitter(random.Random):
    """A ``random.Random`` that makes every backoff exactly its base.

    Backoff is equal jitter in ``[base/2, base]`` so that clients that failed
    together do not retry together; a test that asserts the virtual time of
    a retry would then have to assert a range. Pass ``rng=NoJitter()`` to
    ``ReliableProvider`` and each wait is its full base: 0.5 s, then 1.0 s,
    2.0 s, ... for ``base_backoff=0.5`` (a Retry-After still wins, as in
    production)::

        llm = ReliableProvider([primary, backup], base_backoff=0.5, rng=NoJitter())

    A seeded ``random.Random(7)`` also gives repeatable times, but ones a
    test must look up rather than write down. Never use this in production:
    synchronized retries are what jitter prevents.
    """

    def random(self) -> float:
        """Always 1.0: the top of the jitter interval, the undiminished base."""
        return 1.0
