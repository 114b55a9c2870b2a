"""Raw, byte-exact responses for the fake server: what no well-behaved server sends.

:meth:`FakeLLMServer.script_raw` queues :class:`RawResponse`\\ s for a model;
the server then writes their bytes to the socket as they are, status line
and headers included, bypassing its HTTP machine. That is how tests play a
hostile or broken upstream: a status line trickled one byte at a time, a gzip
bomb behind ``content-encoding: gzip``, bytes past ``Content-Length``, a line
of 200 MB. Helpers build the common shapes (:func:`http_response`,
:func:`trickle`, :func:`gzip_bomb`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import anyio
from anyio.abc import SocketStream

__all__ = ["RawResponse", "gzip_bomb", "http_response", "send_raw", "trickle"]

Then = Literal["close", "hang", "keep"]


@dataclass(frozen=True, slots=True)
class RawResponse:
    """Bytes the fake server sends verbatim in answer to one request.

    Attributes:
        chunks: Written one after another, each with one ``send_all``.
        gap: Seconds of sleep (on the loop's clock) before every chunk after the first.
        then: After the last chunk: ``"close"`` the connection, ``"hang"``
            (keep it open, send nothing more), or ``"keep"`` serving the next
            request on the same connection, as a kept-alive server would.
    """

    chunks: Sequence[bytes]
    gap: float = 0.0
    then: Then = "close"


def http_response(
    body: bytes,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_length: int | None = None,
    chunked: bool = False,
) -> bytes:
    """An HTTP/1.1 response as bytes; ``content_length`` may lie about ``body``.

    With ``chunked`` the body is one chunk of the chunked encoding (plus the
    last, empty one) and no ``content-length`` is sent.
    """
    lines = [f"HTTP/1.1 {status} X"]
    for name, value in (headers or {"content-type": "application/json"}).items():
        lines.append(f"{name}: {value}")
    if chunked:
        lines.append("transfer-encoding: chunked")
        payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    else:
        length = len(body) if content_length is None else content_length
        lines.append(f"content-length: {length}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def trickle(
    data: bytes, *, gap: float, then: Literal["close", "hang", "keep"] = "close"
) -> RawResponse:
    """``data`` one byte at a time, ``gap`` seconds apart."""
    return RawResponse([data[i : i + 1] for i in range(len(data))], gap=gap, then=then)


def gzip_bomb(size: int, *, unit: bytes = b"a") -> bytes:
    """``size`` bytes of ``unit`` repeated, gzip-compressed (about 1000:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = unit * (2**20 // len(unit))
    parts: list[bytes] = []
    left = size
    while left > 0:
        piece = block[: min(left, len(block))]
        parts.append(compressor.compress(piece))
        left -= len(piece)
    parts.append(compressor.flush())
    return b"".join(parts)


async def send_raw(stream: SocketStream, raw: RawResponse) -> None:
    """Write ``raw``'s chunks to ``stream``, ``gap`` apart."""
    for i, chunk in enumerate(raw.chunks):
        if i and raw.gap > 0:
            await anyio.sleep(raw.gap)
        await stream.send(chunk)


@dataclass(slots=True)
class RawScripts:
    """Per-model queues of raw responses; the last entry of a queue repeats."""

    queues: dict[str | None, list[RawResponse]] = field(default_factory=dict)

    def set(self, model: str | None, responses: Iterable[RawResponse]) -> None:
        items = list(responses)
        if items:
            self.queues[model] = items
        else:
            self.queues.pop(model, None)

    def take(self, model: str | None) -> RawResponse | None:
        queue = self.queues.get(model)
        if not queue:
            return None
        return queue.pop(0) if len(queue) > 1 else queue[0]
