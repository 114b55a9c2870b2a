"""The AWS event-stream decoder: spec vectors, every cutting, corruption, caps, linear time.

The byte vectors marked AWS are the event-stream test vectors published with
botocore (``tests/unit/test_eventstream.py`` of boto/botocore, Apache-2.0):
frames and their decodings as AWS specifies them. reliant types two header
kinds more precisely than botocore does there: a timestamp is a ``datetime``,
a UUID a ``uuid.UUID``.
"""

from __future__ import annotations

import contextlib
import struct
import uuid
import zlib
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reliant.providers._eventstream import EventMessage, EventStreamDecoder, encode_message
from reliant.providers._limits import MalformedResponse, ResponseTooLarge, WireError

MiB = 2**20

# AWS: (frame, headers, payload)
VECTORS = [
    (b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2H\xeb}\x98\xc8\xff", {}, b""),
    (b"\x00\x00\x00\x17\x00\x00\x00\x07)\x86\x01X\x04byte\x02\xff\xc2\xf8i\xdc", {"byte": -1}, b""),
    (
        b"\x00\x00\x00\x19\x00\x00\x00\tq\x0e\x92>\x05short\x03\xff\xff\xb2|\xb6\xcc",
        {"short": -1},
        b"",
    ),
    (
        b"\x00\x00\x00\x1d\x00\x00\x00\r\x83\xe3\xf0\xe7\x07integer\x04\xff\xff\xff\xff"
        b"\x8b\x8e\x12\xeb",
        {"integer": -1},
        b"",
    ),
    (
        b"\x00\x00\x00\x1e\x00\x00\x00\x0e]J\xdb\x8d\x04long\x05\xff\xff\xff\xff\xff\xff"
        b"\xff\xffK\xc22\xda",
        {"long": -1},
        b"",
    ),
    (
        b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96",
        {},
        b"{'foo':'bar'}",
    ),
    (
        b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent-type\x07\x00\x10"
        b"application/json{'foo':'bar'}\x8d\x9c\x08\xb1",
        {"content-type": "application/json"},
        b"{'foo':'bar'}",
    ),
    (
        b"\x00\x00\x00\x62\x00\x00\x00\x52\x03\xb5\xcb\x9c"
        b"\x010\x00\x011\x01\x012\x02\x02\x013\x03\x00\x03"
        b"\x014\x04\x00\x00\x00\x04\x015\x05\x00\x00\x00\x00\x00\x00\x00\x05"
        b"\x016\x06\x00\x05bytes\x017\x07\x00\x04utf8"
        b"\x018\x08\x00\x00\x00\x00\x00\x00\x00\x08\x019\x090123456789abcdef"
        b"\x63\x35\x36\x71",
        {
            "0": True,
            "1": False,
            "2": 2,
            "3": 3,
            "4": 4,
            "5": 5,
            "6": b"bytes",
            "7": "utf8",
            "8": datetime.fromtimestamp(0.008, UTC),
            "9": uuid.UUID(bytes=b"0123456789abcdef"),
        },
        b"",
    ),
    (
        b"\x00\x00\x00\x52\x00\x00\x00\x42\xbf\x23\x63\x7e"
        b"\x0d:message-type\x07\x00\x05error"
        b"\x0b:error-code\x07\x00\x04code"
        b"\x0e:error-message\x07\x00\x07message"
        b"\x6b\x6c\xea\x3d",
        {":message-type": "error", ":error-code": "code", ":error-message": "message"},
        b"",
    ),
]

# AWS: frames every decoder must refuse.
CORRUPT = [
    # total length corrupted (prelude CRC no longer matches)
    b"\x01\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96",
    # payload corrupted (message CRC)
    b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'\x8d\xc3e96",
    # a header name corrupted (message CRC)
    b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent+type\x07\x00\x10"
    b"application/json{'foo':'bar'}\x8d\x9c\x08\xb1",
    # headers length corrupted (prelude CRC)
    b"\x00\x00\x00=\xff\x00\x01\x02\x07\xfd\x83\x96\x0ccontent-type\x07\x00"
    b"\x10application/json{'foo':'bar'}\x8d\x9c\x08\xb1",
    # a header given twice
    b"\x00\x00\x00\x24\x00\x00\x00\x14\x4b\xb9\x82\xd0"
    b"\x04test\x04asdf\x04test\x04asdf\xf3\xf4\x75\x63",
]

STREAM = b"".join(frame for frame, _, _ in VECTORS)
EXPECTED = [EventMessage(headers, payload) for _, headers, payload in VECTORS]


def decode(pieces: list[bytes]) -> list[EventMessage]:
    decoder = EventStreamDecoder(16 * MiB)
    out: list[EventMessage] = []
    for piece in pieces:
        out += decoder.feed(piece)
    assert decoder.finish()
    return out


@pytest.mark.parametrize(("frame", "headers", "payload"), VECTORS)
def test_aws_vectors_decode(frame: bytes, headers: dict[str, object], payload: bytes) -> None:
    """Each AWS test vector decodes to its headers and payload, whole and byte by byte."""
    expected = [EventMessage(headers, payload)]  # type: ignore[arg-type]
    assert decode([frame]) == expected
    assert decode([frame[i : i + 1] for i in range(len(frame))]) == expected


def test_all_vectors_in_one_stream_at_every_split() -> None:
    """The vectors back to back decode the same at every two-way split of the stream."""
    for cut in range(len(STREAM) + 1):
        assert decode([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


@pytest.mark.parametrize("frame", CORRUPT)
def test_aws_corrupt_vectors_are_malformed(frame: bytes) -> None:
    """Corrupted lengths, payloads, headers and duplicate headers are MalformedResponse."""
    with pytest.raises(MalformedResponse):
        EventStreamDecoder(16 * MiB).feed(frame)


def test_encoder_round_trips_every_header_type() -> None:
    """encode_message writes what the decoder reads, for every header type."""
    when = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)
    headers = {
        ":message-type": "event",
        "t": True,
        "f": False,
        "small": -7,
        "big": 2**40,
        "raw": b"\x00\xff",
        "when": when,
        "id": uuid.UUID(int=42),
    }
    frame = encode_message(headers, b'{"x":1}')
    assert decode([frame]) == [EventMessage(headers, b'{"x":1}')]
    assert decode([frame])[0].message_type == "event"


def test_a_lying_length_is_refused_from_the_prelude_alone() -> None:
    """A frame announcing 1 GiB is refused on its first 12 bytes, not buffered."""
    frame = encode_message({":event-type": "x"}, b"a" * 100)
    head = struct.pack(">II", 2**30, 20)
    lie = head + struct.pack(">I", zlib.crc32(head))
    with pytest.raises(ResponseTooLarge, match="exceeds the cap"):
        EventStreamDecoder(16 * MiB).feed(lie)
    with pytest.raises(ResponseTooLarge):
        EventStreamDecoder(64).feed(frame)
    head = struct.pack(">II", 200_000, 150_000)
    big_headers = head + struct.pack(">I", zlib.crc32(head))
    with pytest.raises(ResponseTooLarge, match="headers"):
        EventStreamDecoder(16 * MiB).feed(big_headers)


def test_a_stream_cut_inside_a_frame_does_not_finish() -> None:
    """A body that ends in the middle of a frame is not a clean end (finish() is False)."""
    frame = encode_message({":event-type": "messageStop"}, b"{}")
    for cut in range(1, len(frame)):
        decoder = EventStreamDecoder(MiB)
        assert decoder.feed(frame[:cut]) == []
        assert not decoder.finish()


def test_many_frames_fed_byte_by_byte_keep_the_buffer_small() -> None:
    """Decoded frames leave the buffer: 2,000 frames fed a byte at a time hold one frame at most."""
    frame = encode_message({":event-type": "contentBlockDelta"}, b'{"delta":{"text":"hi"}}')
    decoder = EventStreamDecoder(MiB)
    count = 0
    for _ in range(2000):
        for i in range(len(frame)):
            count += len(decoder.feed(frame[i : i + 1]))
            assert len(decoder._buffer) <= 2 * len(frame)
    assert count == 2000 and decoder.finish()


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_random_cuttings_decode_the_same(cuts: list[int]) -> None:
    """Any cutting of a valid stream decodes to the same frames."""
    points = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert decode(pieces) == EXPECTED


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(0, len(STREAM) - 1),
    byte=st.integers(0, 255),
    cap=st.sampled_from([64, 1024, 16 * MiB]),
)
def test_corrupted_bytes_raise_only_wire_errors(position: int, byte: int, cap: int) -> None:
    """A stream with any byte changed decodes or fails with a WireError, never anything else."""
    data = bytearray(STREAM)
    data[position] = byte
    decoder = EventStreamDecoder(cap)
    with contextlib.suppress(WireError):
        decoder.feed(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_wire_errors(data: bytes) -> None:
    """Arbitrary bytes never raise anything but a WireError."""
    with contextlib.suppress(WireError):
        EventStreamDecoder(4096).feed(data)


def frame_with_raw_headers(raw_headers: bytes, payload: bytes = b"") -> bytes:
    """A frame with valid CRCs around headers bytes that may break the format."""
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + raw_headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize(
    "raw",
    [
        b"\x05short",  # a name with no type after it
        b"\x01a\x07\x00\x09abc",  # a string longer than the section
        b"\x01a\x0a",  # an unknown type
        b"\x01a\x09\x00\x01",  # a UUID cut short
        b"\x01a\x07\x00\x02\xff\xfe",  # a string that is not UTF-8
        b"\x01a\x08\x7f\xff\xff\xff\xff\xff\xff\xff",  # a timestamp out of range
    ],
)
def test_broken_headers_inside_valid_crcs_are_malformed(raw: bytes) -> None:
    """Headers that break the format are MalformedResponse even when both CRCs match."""
    with pytest.raises(MalformedResponse):
        EventStreamDecoder(MiB).feed(frame_with_raw_headers(raw))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_headers_inside_valid_crcs_raise_only_wire_errors(raw: bytes) -> None:
    """Arbitrary header bytes in a frame with valid CRCs decode or raise a WireError."""
    with contextlib.suppress(WireError):
        EventStreamDecoder(MiB).feed(frame_with_raw_headers(raw))
