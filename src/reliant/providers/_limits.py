"""Caps on what a server may send, and the bounded body reader that enforces them.

A provider trusts nothing a server sends about size: an upstream that is
broken or hostile may answer with a gzip bomb, a line that never ends, a
tool call whose arguments never stop, or a status line trickled one byte a
minute. Every such case ends in a ``ProviderError`` with a structured kind
(``"response_too_large"`` or ``"timeout"``) raised as soon as the cap is
crossed, never after the whole body arrived:

=============================  ==========  ===========================================
cap (provider argument)        default     counted over
=============================  ==========  ===========================================
``max_response_bytes``         32 MiB      one response body, after decompression
``max_event_bytes``            4 MiB       one SSE line, and one event's data lines
``max_tool_arguments_bytes``   4 MiB       one tool call's accumulated arguments
``request_timeout``            600 s       a whole non-streaming call (headers + body)
=============================  ==========  ===========================================

Byte counting (:func:`iter_body`)
---------------------------------
httpx2 already inflates gzip/deflate/br/zstd incrementally, in pieces of at
most 1 MiB per decompressor call, so a 1 MB bomb never becomes one 1 GiB
buffer; what it does not do is stop. :func:`iter_body` replaces
``Response.aiter_bytes`` with the same two layers (httpx2's content decoder
over ``aiter_raw``) plus two things per decoded piece: it adds the piece's
length to a running total and raises :class:`ResponseTooLarge` the moment
the total passes the cap (so at most cap + one piece is ever held), and,
when one network read inflates to several pieces, it passes a trio
checkpoint between them. The checkpoint is what keeps timeouts alive: a
network read is a checkpoint, but the pieces a compressed read expands to
are not, and without one a bomb could keep the event loop busy with
decoding while the first-chunk deadline silently passes. For an
uncompressed body each read is one piece, so the hot path costs one
addition and one comparison per read.

Errors raised while decoding are :class:`WireError` subclasses, plain
exceptions that do not know the provider's name; the provider's stream frame
(``HTTPProvider._stream_failure``) turns them into ``ProviderError`` with
their ``kind``, or, after a stream's first item, into ``StreamError`` with
that ``ProviderError`` as its ``__cause__``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import httpx2

from .._backend import current as current_backend
from .._exceptions import ErrorKind

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_MAX_TOOL_ARGUMENTS_BYTES",
    "DEFAULT_REQUEST_TIMEOUT",
    "MalformedResponse",
    "ResponseTooLarge",
    "WireError",
    "check_cap",
    "check_request_timeout",
    "iter_body",
    "read_body",
]

DEFAULT_MAX_RESPONSE_BYTES = 32 * 2**20
"""Largest response body, in bytes after decompression (32 MiB)."""

DEFAULT_MAX_EVENT_BYTES = 4 * 2**20
"""Largest SSE line, and largest SSE event (its data lines together), in bytes (4 MiB)."""

DEFAULT_MAX_TOOL_ARGUMENTS_BYTES = 4 * 2**20
"""Largest accumulated arguments of one streamed tool call (4 MiB)."""

DEFAULT_REQUEST_TIMEOUT = 600.0
"""Seconds a whole non-streaming call may take, headers and body included."""

# Decoded bytes between two checkpoints when one read inflates to many pieces.
_CHECKPOINT_EVERY = 2**20


class WireError(Exception):
    """The server sent something the protocol does not allow; ``kind`` says what.

    Internal: raised below the provider (decoder, accessors), where the
    provider's name is unknown, and converted by the provider's frame.
    """

    kind: ErrorKind = "malformed_response"


class ResponseTooLarge(WireError):
    """A body, line, event or tool call passed its cap."""

    kind: ErrorKind = "response_too_large"


class MalformedResponse(WireError):
    """A field of the wrong type, undecodable data, JSON nested too deep."""

    kind: ErrorKind = "malformed_response"


def check_cap(name: str, value: object) -> int:
    """``value`` as a byte cap, or a ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer number of bytes, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer number of bytes, got {value!r}")
    return value


def check_request_timeout(value: object) -> float | None:
    """``value`` as a total deadline in seconds (None: no deadline), or a clear error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"request_timeout must be a number of seconds or None, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(
            f"request_timeout must be a positive finite number of seconds or None, got {value!r}"
        )
    return float(value)


def _content_decoder(response: httpx2.Response) -> Any:
    get = getattr(response, "_get_content_decoder", None)
    return get() if get is not None else None


async def iter_body(response: httpx2.Response, limit: int) -> AsyncGenerator[bytes, None]:
    """The decoded body of ``response``, refused with :class:`ResponseTooLarge` past ``limit``.

    See the module docstring for the counting and the checkpoints. Close it
    (``aclosing``) like any async generator; closing it closes the raw
    stream below.
    """
    decoder = _content_decoder(response)
    total = 0
    if decoder is None:  # pragma: no cover - an httpx2 without the private hook
        async with aclosing(response.aiter_bytes()) as pieces:
            async for piece in pieces:
                total += len(piece)
                if total > limit:
                    raise ResponseTooLarge(f"response body larger than {limit} bytes")
                yield piece
        return
    since = 0
    async with aclosing(response.aiter_raw()) as raw:
        async for data in raw:
            for piece in decoder.decode(data):
                size = len(piece)
                total += size
                if total > limit:
                    raise ResponseTooLarge(
                        f"response body larger than {limit} bytes (after decompression)"
                    )
                since += size
                if since > _CHECKPOINT_EVERY:
                    since = 0
                    await current_backend().checkpoint()
                yield piece
        for piece in decoder.flush():
            total += len(piece)
            if total > limit:
                raise ResponseTooLarge(
                    f"response body larger than {limit} bytes (after decompression)"
                )
            if piece:
                yield piece


async def read_body(response: httpx2.Response, limit: int, *, truncate: bool = False) -> bytes:
    """The whole decoded body, at most ``limit`` bytes.

    With ``truncate`` (error bodies, which are cut to 500 characters anyway)
    a longer body is cut at ``limit`` instead of refused.
    """
    parts: list[bytes] = []
    size = 0
    async with aclosing(iter_body(response, limit if not truncate else 2**62)) as body:
        async for piece in body:
            parts.append(piece)
            size += len(piece)
            if truncate and size >= limit:
                break
            if size > limit:  # pragma: no cover - iter_body raised already
                raise ResponseTooLarge(f"response body larger than {limit} bytes")
    data = b"".join(parts)
    return data[:limit] if truncate else data
