"""AWS event-stream framing (``application/vnd.amazon.eventstream``), decoded incrementally.

Bedrock's ConverseStream answers with binary frames, not SSE. One frame::

    +--------------+---------------+-------------+---------+---------+-------------+
    | total length | headers length| prelude CRC | headers | payload | message CRC |
    |   uint32 BE  |   uint32 BE   |  uint32 BE  |  bytes  |  bytes  |  uint32 BE  |
    +--------------+---------------+-------------+---------+---------+-------------+
    \\______________ prelude (12 bytes) ________/

The prelude CRC32 covers the first 8 bytes; the message CRC32 covers
everything before it (prelude included). A header is a 1-byte name length,
the name (UTF-8), a 1-byte type and a typed value: 0 true, 1 false, 2 int8,
3 int16, 4 int32, 5 int64, 6 bytes (uint16 length), 7 string (uint16
length), 8 timestamp (int64 milliseconds), 9 UUID (16 bytes). The headers
that matter here are ``:message-type`` (``event``, ``exception`` or
``error``), ``:event-type``, ``:exception-type``, ``:error-code`` and
``:error-message``.

Algorithm (:class:`EventStreamDecoder`)
---------------------------------------
Bytes arrive cut anywhere. The decoder keeps one ``bytearray`` and an
offset into it: ``feed`` appends the new bytes, then decodes every whole
frame from the offset on, and compacts the buffer (drops what was decoded)
only when the consumed part is at least half of it, so each byte is copied
a bounded number of times and decoding stays linear however the body is
cut (the ``+=`` on ``bytes`` of a naive buffer is quadratic). Caps are
checked from the prelude, before a frame is buffered: a total length above
``max_message_bytes`` or a headers length above ``max_header_bytes`` (128
KiB, the protocol's own limit) is refused at once, so a lying length never
makes the decoder wait for, or hold, gigabytes. A prelude whose CRC does
not match is refused before its lengths are trusted; a message CRC that does
not match, a header that runs past its section, an unknown header type or a
length inconsistent with the frame is a ``MalformedResponse``; frames
decoded before it in the same bytes are still returned, and the error is
raised by ``check`` (and by every later call). ``finish``
tells whether the body ended on a frame boundary: a cut in the middle of a
frame is a broken stream, never a silent end.

Pure: no I/O and no httpx2, so it is tested byte by byte and at every split.
:func:`encode_message` builds frames (for the fake server and the tests).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeAlias

from ._limits import MalformedResponse, ResponseTooLarge, WireError

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "EventMessage",
    "EventStreamDecoder",
    "HeaderValue",
    "encode_message",
]

HeaderValue: TypeAlias = bool | int | bytes | str | datetime | uuid.UUID
"""A decoded header value: its type follows the header's wire type."""

DEFAULT_MAX_HEADER_BYTES = 128 * 1024
"""Largest headers section of one frame (the protocol's own limit)."""

_PRELUDE = 12
_MIN_FRAME = _PRELUDE + 4  # no headers, no payload
_PRELUDE_STRUCT = struct.Struct(">III")
_CRC_STRUCT = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class EventMessage:
    """One decoded frame.

    Attributes:
        headers: Header name -> typed value.
        payload: The frame's payload bytes (JSON for Bedrock).
    """

    headers: Mapping[str, HeaderValue]
    payload: bytes

    @property
    def message_type(self) -> str:
        """``:message-type`` (``event``, ``exception`` or ``error``; ``event`` if absent)."""
        value = self.headers.get(":message-type", "event")
        return value if isinstance(value, str) else ""

    def text(self, name: str) -> str | None:
        """A string header's value, or None when absent or not a string."""
        value = self.headers.get(name)
        return value if isinstance(value, str) else None


class EventStreamDecoder:
    """Decode AWS event-stream frames from bytes cut anywhere (see the module comment).

    Args:
        max_message_bytes: Largest frame (prelude, headers, payload, CRC).
        max_header_bytes: Largest headers section of a frame.
    """

    __slots__ = ("_buffer", "_error", "_max_header", "_max_message", "_offset")

    def __init__(
        self, max_message_bytes: int, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    ) -> None:
        self._buffer = bytearray()
        self._offset = 0
        self._max_message = max_message_bytes
        self._max_header = max_header_bytes
        self._error: WireError | None = None

    def feed(self, data: bytes) -> list[EventMessage]:
        """Take the next bytes; return every frame they complete, in order.

        A bad frame after good ones in the same bytes does not lose them: they
        are returned, and the error is raised by :meth:`check` (and by every
        later ``feed`` and ``finish``), so a caller sees the frames the
        server sent before the fault, in order, whatever the network cuts.

        Raises:
            ResponseTooLarge: A frame or its headers announce more than the caps.
            MalformedResponse: A CRC mismatch or a frame that breaks the format.
        """
        self.check()
        buffer = self._buffer
        buffer += data
        messages: list[EventMessage] = []
        try:
            self._decode(messages)
        except WireError as exc:
            if not messages:
                raise
            self._error = exc
        return messages

    def check(self) -> None:
        """Raise the error found after the frames the last :meth:`feed` returned, if any."""
        if self._error is not None:
            raise self._error

    def _decode(self, messages: list[EventMessage]) -> None:
        buffer = self._buffer
        offset = self._offset
        end = len(buffer)
        while end - offset >= _PRELUDE:
            total, header_length, prelude_crc = _PRELUDE_STRUCT.unpack_from(buffer, offset)
            if zlib.crc32(buffer[offset : offset + 8]) != prelude_crc:
                raise MalformedResponse("malformed event stream: prelude CRC mismatch")
            if total > self._max_message:
                raise ResponseTooLarge(
                    f"event stream message of {total} bytes exceeds the cap of "
                    f"{self._max_message} bytes"
                )
            if header_length > self._max_header:
                raise ResponseTooLarge(
                    f"event stream headers of {header_length} bytes exceed the cap of "
                    f"{self._max_header} bytes"
                )
            if total < _MIN_FRAME or header_length > total - _MIN_FRAME:
                raise MalformedResponse(
                    f"malformed event stream: total length {total} cannot hold "
                    f"{header_length} bytes of headers"
                )
            if end - offset < total:
                break  # the rest of this frame has not arrived yet
            frame = memoryview(buffer)[offset : offset + total]
            try:
                (message_crc,) = _CRC_STRUCT.unpack_from(frame, total - 4)
                if zlib.crc32(frame[: total - 4]) != message_crc:
                    raise MalformedResponse("malformed event stream: message CRC mismatch")
                headers = _headers(frame[_PRELUDE : _PRELUDE + header_length])
                payload = bytes(frame[_PRELUDE + header_length : total - 4])
            finally:
                frame.release()
            messages.append(EventMessage(headers, payload))
            offset += total
            # Kept at once: a bad frame later in these bytes leaves this one decoded.
            self._offset = offset
        if offset and offset * 2 >= end:
            del buffer[:offset]
            offset = 0
        self._offset = offset

    def finish(self) -> bool:
        """True when the bytes fed so far end exactly on a frame boundary.

        Raises:
            WireError: The error :meth:`check` raises.
        """
        self.check()
        return self._offset == len(self._buffer)


def _headers(data: memoryview) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    i, end = 0, len(data)
    try:
        while i < end:
            size = data[i]
            name = bytes(data[i + 1 : i + 1 + size]).decode("utf-8")
            i += 1 + size
            kind = data[i]
            i += 1
            value: HeaderValue
            if kind == 0:
                value = True
            elif kind == 1:
                value = False
            elif kind in _FIXED:
                width, fmt = _FIXED[kind]
                (value,) = struct.unpack_from(fmt, data, i)
                i += width
            elif kind in (6, 7):
                (length,) = struct.unpack_from(">H", data, i)
                raw = bytes(data[i + 2 : i + 2 + length])
                if len(raw) != length:
                    raise MalformedResponse("malformed event stream: a header runs past its end")
                value = raw if kind == 6 else raw.decode("utf-8")
                i += 2 + length
            elif kind == 8:
                (millis,) = struct.unpack_from(">q", data, i)
                value = datetime.fromtimestamp(millis / 1000, UTC)
                i += 8
            elif kind == 9:
                raw = bytes(data[i : i + 16])
                if len(raw) != 16:
                    raise MalformedResponse("malformed event stream: a header runs past its end")
                value = uuid.UUID(bytes=raw)
                i += 16
            else:
                raise MalformedResponse(f"malformed event stream: unknown header type {kind}")
            if i > end:
                raise MalformedResponse("malformed event stream: a header runs past its end")
            if name in headers:
                raise MalformedResponse(f"malformed event stream: header {name!r} given twice")
            headers[name] = value
    except (IndexError, struct.error, ValueError, OverflowError, OSError) as exc:
        # (UnicodeDecodeError is a ValueError; a timestamp out of range is
        # an OverflowError or OSError, depending on the platform.)
        raise MalformedResponse(f"malformed event stream: bad headers ({exc})") from None
    return headers


_FIXED = {2: (1, ">b"), 3: (2, ">h"), 4: (4, ">i"), 5: (8, ">q")}


def encode_message(headers: Mapping[str, HeaderValue], payload: bytes = b"") -> bytes:
    """One event-stream frame with these headers (typed by their Python type) and payload.

    ``bool`` → true/false, ``int`` → int32 (int64 when it does not fit),
    ``bytes`` → bytes, ``str`` → string, ``datetime`` → timestamp,
    ``UUID`` → uuid.
    """
    parts: list[bytes] = []
    for name, value in headers.items():
        raw_name = name.encode("utf-8")
        parts.append(bytes([len(raw_name)]) + raw_name)
        if value is True:
            parts.append(b"\x00")
        elif value is False:
            parts.append(b"\x01")
        elif isinstance(value, int):
            if -(2**31) <= value < 2**31:
                parts.append(b"\x04" + struct.pack(">i", value))
            else:
                parts.append(b"\x05" + struct.pack(">q", value))
        elif isinstance(value, bytes):
            parts.append(b"\x06" + struct.pack(">H", len(value)) + value)
        elif isinstance(value, str):
            raw = value.encode("utf-8")
            parts.append(b"\x07" + struct.pack(">H", len(raw)) + raw)
        elif isinstance(value, datetime):
            parts.append(b"\x08" + struct.pack(">q", round(value.timestamp() * 1000)))
        else:
            parts.append(b"\x09" + value.bytes)
    header_bytes = b"".join(parts)
    total = _PRELUDE + len(header_bytes) + len(payload) + 4
    prelude = struct.pack(">II", total, len(header_bytes))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + header_bytes + payload
    return body + struct.pack(">I", zlib.crc32(body))
