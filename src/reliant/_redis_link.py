"""What the two Redis stores share: the connection, the script round trip, outages.

``RedisHealth`` (``_redis_health``) and ``RedisRouting`` (``_redis_routing``)
each keep their state in Redis through one Lua script; how they reach it is
the same and lives here once:

- entering the store connects and loads its script, bounded by
  ``connect_timeout`` and never failing (a failure is an outage like any);
  leaving it, or ``aclose()`` from the same task, closes the connections;
- each round trip (:meth:`RedisLink._eval`) runs the script with EVALSHA
  (loading it again on NOSCRIPT after a restart), shielded from cancellation
  for at most ``timeout`` so a cancelled request still learns the answer,
  and hands the reply to the store's own ``apply``;
- a trip that fails or times out marks Redis down: the store decides in
  process, Redis is tried again at most once per ``reconnect_interval``
  (one trip at a time), one warning is logged per outage and one info line
  when it answers again, and the store drops what it learned alone
  (:meth:`RedisLink._resynced`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import coredis
from coredis.exceptions import NoScriptError
from coredis.retry import NoRetryPolicy

from ._backend import current as current_backend
from ._backend import current_time
from ._log import logger
from ._sanitize import collapse_whitespace, sanitize_api_error

__all__ = ["RedisLink", "describe", "positive", "redact"]

T = TypeVar("T")


def positive(name: str, value: object) -> float:
    """``value`` as a positive finite number of seconds, or ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def redact(url: str) -> str:
    """``url`` with its user and password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def describe(err: BaseException) -> str:
    """One sanitized line for a failed round trip."""
    text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return collapse_whitespace(sanitize_api_error(text))


class RedisLink:
    """The connection of one Redis store and its outage state (a base class).

    A subclass sets ``_SCRIPT``/``_SHA`` (its Lua script), ``_DOWN_MESSAGE``
    and ``_UP_MESSAGE`` (the outage's log lines), calls :meth:`_link` from
    its constructor, and may override :meth:`_log_extra` and :meth:`_resynced`.
    """

    _SCRIPT: ClassVar[str]
    _SHA: ClassVar[str]
    _DOWN_MESSAGE: ClassVar[str]
    _UP_MESSAGE: ClassVar[str]

    def _link(
        self, url: str, *, timeout: float, connect_timeout: float, reconnect_interval: float
    ) -> None:
        name = type(self).__name__
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{name} url must start with redis://, rediss:// or unix://")
        self._url = url
        self.timeout = positive("timeout", timeout)
        self.connect_timeout = positive("connect_timeout", connect_timeout)
        self.reconnect_interval = positive("reconnect_interval", reconnect_interval)
        self._client: coredis.Redis[bytes] | None = None
        self._entered = False
        self._offset = 0.0  # the server's clock minus the loop's, at the last reply
        # Outage state: down since the first failure, next try not before
        # retry_at, and at most one try in flight while down.
        self._down = False
        self._retry_at = 0.0
        self._trying = False

    # -- lifetime ------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError(f"a {type(self).__name__} can be entered only once")
        self._entered = True
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            self._url,
            decode_responses=False,
            retry_policy=NoRetryPolicy(),
            connect_timeout=self.connect_timeout,
        )
        await client.__aenter__()
        self._client = client
        # Connect and load the script now, while nobody waits on it, so the
        # first request does not pay for it; a failure is an outage like any.
        with current_backend().move_on_after(self.connect_timeout) as scope:
            try:
                await client.script_load(self._SCRIPT)
            except Exception as err:
                self._mark_down(describe(err))
        if scope.cancelled_caught:
            self._mark_down(f"no answer within {self.connect_timeout:g} s")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (from the task that entered the store)."""
        client, self._client = self._client, None
        if client is not None:
            await client.__aexit__(None, None, None)

    @property
    def shared(self) -> bool:
        """True while decisions go to Redis (False during an outage or when not open)."""
        return self._client is not None and not self._down

    # -- the round trip ----------------------------------------------------------

    async def _eval(
        self, keys: Sequence[str], args: Sequence[str], apply: Callable[[object, float], T]
    ) -> T | None:
        """Run the script; ``apply(reply, seen_at)``'s result, or None to decide in process.

        ``seen_at`` is the loop time halfway through the trip (for the
        server clock's offset). ``apply`` raising is an outage like any.
        """
        client = self._client
        if client is None:
            return None
        trying = False
        if self._down:
            if self._trying or current_time() < self._retry_at:
                return None
            self._trying = trying = True
        try:
            sent = current_time()
            # Shielded (for at most `timeout`) so that a request cancelled
            # meanwhile still learns the answer: what the server granted
            # (a probe slot, rate-limit room) is then known and given back,
            # instead of staying taken, unknown to everyone, until it expires.
            be = current_backend()
            with be.CancelScope(shield=True), be.move_on_after(self.timeout):
                try:
                    reply = await client.evalsha(self._SHA, keys, args)
                except NoScriptError:  # a restarted or flushed server: load it again
                    await client.script_load(self._SCRIPT)
                    reply = await client.evalsha(self._SHA, keys, args)
                result = apply(reply, (sent + current_time()) / 2)
                self._mark_up()
                return result
            problem = f"no answer within {self.timeout * 1000:g} ms"
        except Exception as err:  # a request must never fail because of Redis
            problem = describe(err)
        finally:
            if trying:
                self._trying = False
        self._mark_down(problem)
        return None

    def _log_extra(self) -> dict[str, Any]:
        return {"url": redact(self._url)}

    def _resynced(self) -> None:
        """Redis answers again: drop what was learned alone during the outage."""

    def _mark_down(self, problem: str) -> None:
        self._retry_at = current_time() + self.reconnect_interval
        if not self._down:
            self._down = True
            logger.warning(self._DOWN_MESSAGE, extra={**self._log_extra(), "error": problem})

    def _mark_up(self) -> None:
        if self._down:
            self._down = False
            # Redis is the source of truth again: what this process learned
            # alone during the outage is dropped, not merged.
            self._resynced()
            logger.info(self._UP_MESSAGE, extra=self._log_extra())

    def _to_loop(self, server_ms: float) -> float:
        return server_ms / 1000 - self._offset
