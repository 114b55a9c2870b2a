"""What every HTTP provider shares: the client, error mapping, Retry-After and the SSE frame.

Error mapping lives here, in one place:

- a non-2xx response becomes ``ProviderError`` with ``status_code``,
  ``retry_after`` (from ``retry-after-ms``, or ``retry-after`` as seconds or
  an HTTP date), the sanitized body, and the canonical message
  ``"{name} API error ({status} {reason}): {body}"``;
- a transport failure (refused, reset, DNS, TLS, timeouts: any
  ``httpx2.RequestError``) becomes ``ProviderError`` without a status, which
  classification treats as retryable;
- during a stream, a failure before the first item is a ``ProviderError``
  (failover may still happen); after it, a ``StreamError`` whose
  ``__cause__`` is the underlying failure, with ``tool_call_in_progress``
  set by the provider when a tool call was arriving. A stream that ends
  without its terminator is a failure too, never a silent success, unless
  the provider had already said why the model stopped (a finish reason)
  and the body then ended cleanly;
- a 4xx whose body is a content-filter refusal (OpenAI's
  ``content_policy_violation``, Azure's ``content_filter``) becomes
  :class:`~reliant.ContentFilterError`, as do refusals a provider finds in a
  2xx answer before any text (:meth:`HTTPProvider._refusal`).

The provider's own API key is scrubbed from every text by exact match (custom
keys need not look like ``sk-...``) before the generic sanitizer runs.

SSE decoding decision, measured per event over loopback against the fake
server running in its own process (client CPU time, ``json.loads``
included, 20,000 events coalesced into large reads):

=================================================  ==============
``aiter_bytes`` + this module's line splitter      2.34 us/event
``response.aiter_lines()``                         2.49 us/event
httpx2 ``_SSEParser`` over ``aiter_text()``        3.73 us/event
``httpx2.EventSource``                             3.71 us/event
=================================================  ==============

With one event per socket read (a 0.5 ms gap) all variants cost 93-98 us of
CPU per event, dominated by the wake-up, so the decoder choice only matters
for bursts. We use a tight line loop over ``aiter_bytes()`` because it is the
fastest and because it is the only variant whose whole generator chain can be
closed deterministically: ``aiter_lines``/``aiter_text`` iterate inner
generators without ``aclosing``, and trio reports every such generator that
is garbage-collected unexhausted (a ``ResourceWarning``) when a caller leaves
a stream early. For the same reason :func:`closing_response_stream` replaces
httpx2's response stream, whose ``__aiter__`` is an async generator over the
connection pool's stream (pydantic/httpx2 PR 1036 fixes that upstream).

Each provider's stream loop is this module's frame around its own dispatch:
:meth:`HTTPProvider._open_event_stream` (POST, status and content-type
check), one :meth:`SSEEventDecoder.feed` per network read (lines, ``data:``
accumulation, ``json.loads``, terminator and in-band errors), then
:meth:`HTTPProvider._end_event_stream` (malformed data, in-band error,
drain, lenient terminator) and :meth:`HTTPProvider._stream_failure`
(transport errors, wrong shapes). ``feed`` is a plain (sync) generator, not
an async generator the provider would ``async for`` over: that layer would
cost an extra ``asend`` per event, about 0.3 us of a 6 us budget. Nor does it
return a list per read: holding a whole read's parsed events at once lets
the garbage collector run mid-read (measured +0.15-0.45 us per event).
"""

from __future__ import annotations

import codecs
import email.utils
import functools
import http
import json
import logging
import math
import re
import ssl
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import aclosing, asynccontextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, NoReturn, Self
from urllib.parse import unquote, urlsplit, urlunsplit

import h11
import httpx2

from .._backend import current as current_backend
from .._exceptions import (
    FAKE_SERVER_SPEC_HEADER,
    ContentFilterError,
    ErrorKind,
    FakeServerSpecError,
    ProviderError,
    ReliantError,
    StreamError,
)
from .._provider import Provider
from .._sanitize import MAX_ERROR_CHARS, register_secret, sanitize_api_error, scrub_exception
from ._limits import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_TOOL_ARGUMENTS_BYTES,
    DEFAULT_REQUEST_TIMEOUT,
    ResponseTooLarge,
    WireError,
    check_cap,
    check_request_timeout,
    iter_body,
    read_body,
)

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "HTTPProvider",
    "STREAM_FAILURES",
    "SSEEventDecoder",
    "SSELineDecoder",
    "closing_response_stream",
    "coerce_timeout",
    "create_client",
    "drain",
    "is_content_filter_body",
    "parse_retry_after",
    "reason_phrase",
    "retry_after_from_body",
    "status_from_error_payload",
]

logger = logging.getLogger("reliant.providers")

DEFAULT_TIMEOUT = httpx2.Timeout(connect=10.0, read=300.0, write=30.0, pool=30.0)
"""Leaf timeouts: no total timeout that would kill a long stream; the
reliability wrapper adds first-chunk and idle timeouts on top."""

DEFAULT_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
"""LLM streams hold a connection for their whole length, so the pool is wide."""

# Seconds a finished stream may spend reading the rest of its body (the
# chunked-encoding trailer after ``[DONE]``) so the connection goes back to
# the pool instead of being closed.
_DRAIN_TIMEOUT = 0.5

# Keys shorter than this are not secrets (local servers use "EMPTY" and the
# like) and replacing them would mangle ordinary text.
_MIN_SCRUB_LEN = 6

_EXTRA_REASONS = {529: "Overloaded"}

# Error "type"/"code" strings of OpenAI and Anthropic payloads -> HTTP status.
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "request_too_large": 413,
    # The Responses API's ``response.error.code`` for a refused prompt.
    "invalid_prompt": 400,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "api_error": 500,
    "server_error": 500,
    "internal_error": 500,
    "service_unavailable": 503,
    "timeout_error": 504,
    "overloaded_error": 529,
    # google.rpc.Code names, the ``status`` of Gemini and Vertex AI errors.
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

TimeoutArg = float | httpx2.Timeout | None

PARSE_FAILURES = (
    WireError,
    AttributeError,
    TypeError,
    KeyError,
    IndexError,
    ValueError,
    RecursionError,
)
"""What may escape turning a non-streaming JSON answer into a ``ChatResponse``."""

STREAM_FAILURES = (httpx2.RequestError, *PARSE_FAILURES)
"""What may escape a stream's read loop, for :meth:`HTTPProvider._stream_failure`.

Beyond transport errors and :class:`WireError` (caps, typed accessors), the
generic lookup errors are a safety net: valid JSON of a shape no accessor
expected must still end as a ``ProviderError``, never reach the caller raw.
"""


# Error bodies are cut to 500 characters anyway; read no more than this of them.
_MAX_ERROR_BODY = 64 * 1024

# A Retry-After beyond 10**9 s (31 years) is a broken or hostile header; the
# backoff caps the actual wait far lower (30 s), this only keeps the recorded
# number finite and sane (1e12, 1e308 and dates past 9999 all end here).
MAX_RETRY_AFTER_HEADER = 1e9

_SCHEMES = ("http", "https")


def create_client(
    *,
    timeout: float | httpx2.Timeout = DEFAULT_TIMEOUT,
    limits: httpx2.Limits = DEFAULT_LIMITS,
    **kwargs: Any,
) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` configured for LLM traffic.

    Share one between providers to share its connection pool; the caller
    owns it and closes it (``await client.aclose()``).

    Without ``verify``, ``cert`` or ``trust_env=False`` the client gets the
    process's one default TLS context (the system's CA bundle, and
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` as they were when it was built):
    building one reads the whole bundle, about 35 ms, which every provider
    that owns its client would otherwise pay again.

    Args:
        timeout: Seconds for every phase, or an ``httpx2.Timeout``.
        limits: Connection-pool limits.
        **kwargs: Passed to ``httpx2.AsyncClient``.
    """
    if not {"verify", "cert"} & kwargs.keys() and kwargs.get("trust_env", True):
        kwargs["verify"] = _default_tls()
    return httpx2.AsyncClient(timeout=coerce_timeout(timeout), limits=limits, **kwargs)


@functools.cache
def _default_tls() -> ssl.SSLContext:
    # Made once per process, on the first client that needs it (SSLContext
    # is safe to share between clients and threads).
    return httpx2.create_ssl_context()


def coerce_timeout(timeout: float | httpx2.Timeout) -> httpx2.Timeout:
    """``httpx2.Timeout`` from seconds (every phase) or a ``Timeout``."""
    return timeout if isinstance(timeout, httpx2.Timeout) else httpx2.Timeout(timeout)


def reason_phrase(status: int, fallback: str = "") -> str:
    """The standard reason phrase of ``status`` (``http.HTTPStatus``), else ``fallback``."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return _EXTRA_REASONS.get(status) or fallback or "Unknown Status"


_RETRY_HEADERS = (b"retry-after-ms", b"retry-after", b"date")
_CHARSET_RE = re.compile(r";\s*charset\s*=\s*\"?([^\s;\"]+)", re.IGNORECASE)


def _retry_headers(response: httpx2.Response) -> dict[str, str]:
    """The headers :func:`parse_retry_after` reads, in one pass over the raw list.

    ``Headers.get`` re-encodes the name and decodes every header on each
    call; on the error path of every failed attempt that was a measurable
    share. Repeated headers are joined with ``", "``, as ``get`` does.
    """
    found: dict[str, str] = {}
    for key, value in response.headers.raw:
        name = key.lower()
        if name in _RETRY_HEADERS:
            text, label = value.decode("latin-1"), name.decode("ascii")
            found[label] = f"{found[label]}, {text}" if label in found else text
    return found


def _charset(response: httpx2.Response) -> str:
    """The charset the ``content-type`` names if Python knows it, else UTF-8.

    For error bodies: what ``Response.encoding`` gives with httpx2's default
    ``default_encoding``, without the ``email.message`` machinery it parses
    the header with (an error text is decoded with ``errors="replace"``, so
    a client's charset autodetection would add nothing).
    """
    match = _CHARSET_RE.search(response.headers.get("content-type", ""))
    if match is not None:
        try:
            return codecs.lookup(match.group(1)).name
        except LookupError:
            pass
    return "utf-8"


def _finite_non_negative(value: str) -> float | None:
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait according to the response headers, or None.

    ``retry-after-ms`` wins (milliseconds); then ``retry-after`` as seconds or
    as an HTTP date. A date is measured against the response's own ``date``
    header when there is one (so clock skew between us and the server does
    not matter), else against the local wall clock; a date in the past gives 0.
    Never raises: garbage, NaN, negative numbers and dates past year 9999 give
    None, and the result is clamped to [0, ``MAX_RETRY_AFTER_HEADER``].
    """
    try:
        seconds = _parse_retry_after(headers)
    except (TypeError, ValueError, OverflowError, IndexError, AttributeError):
        return None
    if seconds is None:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_HEADER)


def _parse_retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after-ms")
    if value is not None:
        ms = _finite_non_negative(value.strip())
        if ms is not None:
            return ms / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    seconds = _finite_non_negative(value)
    if seconds is not None:
        return seconds
    when = _parse_http_date(value)
    if when is None:
        return None
    date = headers.get("date")
    now = _parse_http_date(date) if date else None
    if now is None:
        now = datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def _parse_http_date(value: str) -> datetime | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


_DURATION_RE = re.compile(r"\s*(\d{1,12}(?:\.\d{1,9})?)s\s*")


def retry_after_from_body(body: str) -> float | None:
    """Seconds to wait according to an error body, or None.

    Google APIs (Gemini, Vertex AI) carry no ``Retry-After`` header on a 429:
    the delay travels in the body, as a ``google.rpc.RetryInfo`` detail whose
    ``retryDelay`` is a protobuf Duration (``"30s"``, ``"1.5s"``):
    ``{"error": {"details": [{"@type": ".../google.rpc.RetryInfo",
    "retryDelay": "30s"}]}}``. Never raises; bodies without ``retryDelay``
    skip the JSON parse.
    """
    if "retryDelay" not in body:
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, list) and data:  # some Google front ends wrap the error in a list
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    if not isinstance(details, list):
        return None
    for detail in details:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str):
            match = _DURATION_RE.fullmatch(delay)
            if match is not None:
                return min(float(match.group(1)), MAX_RETRY_AFTER_HEADER)
    return None


def status_from_error_payload(error: Any) -> int | None:
    """The HTTP status an in-band error payload carries, if any.

    Looks at ``status``/``code`` (an integer or a numeric string in 100-599),
    then at ``type``/``code`` strings such as Anthropic's ``overloaded_error``
    (529) and ``rate_limit_error`` (429), OpenAI's ``rate_limit_exceeded`` or
    Google's ``status`` names (``RESOURCE_EXHAUSTED``, ``UNAVAILABLE``).
    """
    if not isinstance(error, Mapping):
        return None
    for key in ("status", "code", "status_code"):
        value = error.get(key)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    for key in ("type", "code", "status"):
        value = error.get(key)
        if isinstance(value, str) and value in _ERROR_TYPE_STATUS:
            return _ERROR_TYPE_STATUS[value]
    return None


# ``error.code`` values that mean a safety system refused the request:
# OpenAI's moderation of inputs, Azure OpenAI's prompt filter.
_CONTENT_FILTER_CODES = frozenset({"content_policy_violation", "content_filter"})
# Azure's inner error code for the same refusal (``innererror`` in older API
# versions, ``inner_error`` in newer ones).
_AZURE_FILTER_INNER_CODE = "ResponsibleAIPolicyViolation"


def is_content_filter_body(body: str) -> bool:
    """Whether an error response body says a content filter refused the request.

    Recognised: OpenAI's ``{"error": {"code": "content_policy_violation"}}``,
    Azure OpenAI's ``{"error": {"code": "content_filter", "innererror":
    {"code": "ResponsibleAIPolicyViolation", ...}}}`` (also ``inner_error``).
    Structured fields only: free text is left to :mod:`reliant.classify`.
    """
    # Every shape we recognise contains this word; most error bodies do not,
    # so they skip the JSON parse.
    if "content" not in body and _AZURE_FILTER_INNER_CODE not in body:
        return False
    try:
        data = json.loads(body)
    except ValueError:
        return False
    error = data.get("error") if isinstance(data, Mapping) else None
    if not isinstance(error, Mapping):
        return False
    if error.get("code") in _CONTENT_FILTER_CODES:
        return True
    for key in ("innererror", "inner_error"):
        inner = error.get(key)
        if isinstance(inner, Mapping) and inner.get("code") == _AZURE_FILTER_INNER_CODE:
            return True
    return False


class SSELineDecoder:
    """Incremental splitter of an SSE byte stream into lines, linear in its input.

    ``decode`` is called once per network read and returns the complete
    lines in it (without line terminators; ``\\n``, ``\\r\\n`` and ``\\r``
    all end a line). UTF-8 sequences split across reads are handled.

    Algorithm: each read is decoded and split on its own; only when it
    contains a line break is the held-back start of the line (the pieces of
    earlier reads that had none) joined, once, in front of its first line.
    Reads without a line break are appended to a list, never concatenated
    to a growing string, so a line that arrives in ``n`` reads costs O(its
    length) in total instead of O(n x length): a 200 MB line is refused at
    the cap after reading the cap, not after 20 s of copying. The held-back
    line is measured in raw bytes (from the position of the last line break
    of each read) and refused with :class:`ResponseTooLarge` as soon as it
    passes ``max_line_bytes``; a complete line inside one large read is
    checked only when the read itself could hold one that long, so ordinary
    reads pay one addition and one comparison.
    """

    __slots__ = ("_decoder", "_line_bytes", "_max", "_parts", "_pending")

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""
        self._parts: list[str] = []
        self._line_bytes = 0
        self._max = max_line_bytes

    def decode(self, data: bytes) -> list[str]:
        """The lines completed by ``data``."""
        text = self._decoder.decode(data)
        if "\r" in text or self._pending[-1:] == "\r":
            # A CR in this read, or one held back from the last read (it may
            # be the first half of a CRLF, or end a line on its own).
            return self._decode_cr(text, data)
        lines = text.split("\n")
        tail = lines.pop()
        if not lines:
            self._hold(tail, len(data))
            return lines
        if self._line_bytes + len(data) > self._max:
            self._check_lines(lines, data)
        if self._pending:
            lines[0] = self._take_pending() + lines[0]
        self._pending = tail
        self._line_bytes = len(data) - data.rfind(b"\n") - 1
        return lines

    def _hold(self, tail: str, size: int) -> None:
        # The line goes on: keep the piece without copying what came before.
        if self._pending:
            self._parts.append(tail)
        else:
            self._pending = tail
        self._line_bytes += size
        if self._line_bytes > self._max:
            raise ResponseTooLarge(f"SSE line longer than {self._max} bytes")

    def _take_pending(self) -> str:
        pending = self._pending
        if self._parts:
            pending += "".join(self._parts)
            self._parts.clear()
        self._pending = ""
        return pending

    def _check_lines(self, lines: list[str], data: bytes) -> None:
        first = self._line_bytes + len(lines[0].encode())
        if first > self._max or any(
            len(line) * 4 > self._max and len(line.encode()) > self._max for line in lines[1:]
        ):
            raise ResponseTooLarge(f"SSE line longer than {self._max} bytes")

    def _decode_cr(self, text: str, data: bytes) -> list[str]:
        # Rare (servers send LF): a CR also ends a line, and a trailing CR may
        # be the first half of a CRLF, so it is kept pending.
        if self._pending:
            text = self._take_pending() + text
        held = text.endswith("\r")
        if held:
            text = text[:-1]
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        tail = lines.pop()
        if any(len(line) * 4 > self._max and len(line.encode()) > self._max for line in lines):
            raise ResponseTooLarge(f"SSE line longer than {self._max} bytes")
        self._pending = tail + ("\r" if held else "")
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
        self._line_bytes = len(data) - cut - 1 if cut >= 0 else self._line_bytes + len(data)
        if self._line_bytes > self._max:
            raise ResponseTooLarge(f"SSE line longer than {self._max} bytes")
        return lines

    def flush(self) -> list[str]:
        """The last, unterminated line at the end of the stream, if any."""
        text = self._take_pending() + self._decoder.decode(b"", final=True)
        self._line_bytes = 0
        text = text.rstrip("\r")
        return [text] if text else []


class SSEEventDecoder:
    """The SSE frame both providers share: bytes in, JSON objects out.

    ``feed`` is called once per network read and yields the events that
    read completed, each event's ``data`` lines joined and parsed with
    ``json.loads``. It stops early, setting ``stopped``, at:

    - the terminator (``done``): the data ``done_data`` (OpenAI's ``[DONE]``),
      or an event whose ``type`` is ``done_type`` (Anthropic's ``message_stop``);
    - an in-band error (``inband``, the error payload and the raw data): an
      event with an ``error`` member, or with ``done_type`` given (typed
      events), an event of type ``error``;
    - data that is not a JSON object (``malformed``, a detail; the
      ``json.loads`` failure in ``malformed_cause``); JSON nested deeper than
      the interpreter's recursion limit counts as malformed too.

    A line or an event (its data lines together) longer than
    ``max_event_bytes`` raises :class:`ResponseTooLarge` from ``feed``.

    The events before the stop are still yielded, so the caller dispatches
    them, then leaves its read loop on ``stopped`` and lets
    :meth:`HTTPProvider._end_event_stream` raise or drain: only the caller
    knows whether it has committed. Neither the terminator nor an in-band
    error is ever yielded as an event.
    """

    __slots__ = (
        "_data",
        "_done_data",
        "_done_type",
        "_extra",
        "_extra_size",
        "_lines",
        "_max",
        "done",
        "inband",
        "malformed",
        "malformed_cause",
        "stopped",
        "terminator",
    )

    def __init__(
        self,
        *,
        done_data: str | None = None,
        done_type: str | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self._lines = SSELineDecoder(max_event_bytes)
        self._max = max_event_bytes
        self._data: str | None = None
        # Data lines after an event's first (rare): kept in a list so an
        # event of many lines is joined once, not re-copied per line.
        self._extra: list[str] = []
        self._extra_size = 0
        self._done_data = done_data
        self._done_type = done_type
        # The terminator as error messages name it.
        self.terminator = f"data: {done_data}" if done_data is not None else str(done_type)
        self.stopped = False
        self.done = False
        self.inband: tuple[Any, str] | None = None
        self.malformed: str | None = None
        self.malformed_cause: BaseException | None = None

    def _more_data(self, first: str, value: str) -> None:
        self._extra.append(value)
        self._extra_size += len(value) + 1
        if len(first) + self._extra_size > self._max:
            raise ResponseTooLarge(f"SSE event larger than {self._max} bytes")

    def _joined(self, first: str) -> str:
        text = "\n".join([first, *self._extra])
        self._extra.clear()
        self._extra_size = 0
        return text

    def feed(self, raw: bytes) -> Iterator[dict[str, Any]]:
        """The events completed by ``raw``, up to a stop (see the class).

        A generator rather than a list: each event is dispatched and dropped
        before the next is parsed, so a large read never keeps hundreds of
        parsed objects alive at once (which makes the garbage collector run).
        """
        done_data = self._done_data
        done_type = self._done_type
        data = self._data
        for line in self._lines.decode(raw):
            if line:
                # Other fields (event, id, retry) and comments are ignored.
                if line.startswith("data: "):
                    value = line[6:]
                elif line.startswith("data:"):
                    value = line[5:]
                else:
                    continue
                if data is None:
                    data = value
                else:
                    self._more_data(data, value)
                continue
            if data is None:
                continue
            text, data = data, None
            if self._extra:
                text = self._joined(text)
            if text == done_data:
                self.done = self.stopped = True
                return
            try:
                event = json.loads(text)
            except (ValueError, RecursionError) as exc:
                reason = "invalid JSON" if isinstance(exc, ValueError) else "JSON nested too deeply"
                self.malformed = f"{reason} in SSE data: {text[:2000]}"
                self.malformed_cause = exc
                self.stopped = True
                return
            if type(event) is not dict:
                self.malformed = f"unexpected SSE data: {text[:2000]}"
                self.stopped = True
                return
            if done_type is None:
                error = event.get("error")
                if error is not None:
                    self.inband = (error, text)
                    self.stopped = True
                    return
            else:
                kind = event.get("type")
                if kind == done_type:
                    self.done = self.stopped = True
                    return
                if kind == "error":
                    self.inband = (event.get("error"), text)
                    self.stopped = True
                    return
            yield event
        self._data = data

    def finish(self) -> bool:
        """At the end of the body: whether the stream was terminated.

        Lenient about a terminator cut off before its blank line: the data
        left undispatched (an unterminated last line included) ends the
        stream if it is ``done_data``, or mentions ``"done_type"``.
        """
        if not self.done:
            data = self._data
            if data is not None and self._extra:
                data = self._joined(data)
            for line in self._lines.flush():
                if line.startswith("data:"):
                    value = line[6:] if line[5:6] == " " else line[5:]
                    data = value if data is None else f"{data}\n{value}"
            self._data = None
            if data is not None:
                data = data.strip()
                if self._done_data is not None:
                    self.done = data == self._done_data
                else:
                    self.done = f'"{self._done_type}"' in data
        return self.done


try:  # pragma: no branch
    from httpx2._transports.default import AsyncResponseStream as _AsyncResponseStream
    from httpx2._transports.default import map_httpcore_exceptions as _map_exceptions
except ImportError:  # pragma: no cover - a future httpx2 without the generator problem
    _AsyncResponseStream = None  # type: ignore[assignment, misc]


class _ClosingResponseStream(httpx2.AsyncByteStream):
    """httpx2's response stream, with an iterator that is closed, not garbage-collected."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._iterator: Any = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._iterator is None:
            self._iterator = self._inner.__aiter__()
        with _map_exceptions():
            chunk: bytes = await self._iterator.__anext__()
            return chunk

    async def aclose(self) -> None:
        iterator, self._iterator = self._iterator, None
        _refuse_trailing_bytes(self._inner)
        try:
            if iterator is not None and hasattr(iterator, "aclose"):
                await iterator.aclose()
        finally:
            if hasattr(self._inner, "aclose"):
                await self._inner.aclose()


def _refuse_trailing_bytes(inner: Any) -> None:
    """Close, rather than reuse, a connection that sent bytes past its response.

    A server that sends more than its ``Content-Length`` leaves the excess in
    the HTTP/1.1 parser's buffer; on a kept-alive connection those bytes
    would be read as the *next* request's response (response smuggling: a
    forged answer to a different caller). httpcore2 checks the socket for
    stray bytes before it reuses a connection, but not the parser's buffer.
    So when the response is complete and bytes are left over, the h11 state
    is marked failed (``send_failed``, public h11 API), which makes httpcore2
    close the connection instead of returning it to the pool.
    """
    connection = getattr(getattr(inner, "_stream", None), "_connection", None)
    state = getattr(connection, "_h11_state", None)
    if not isinstance(state, h11.Connection):
        return
    if state.their_state is h11.DONE and state.trailing_data[0]:
        logger.warning("closing a connection whose server sent bytes past its response")
        state.send_failed()


def closing_response_stream(response: httpx2.Response) -> None:
    """Make ``response`` close its connection-pool iterator deterministically.

    httpx2 2.16's response stream iterates the pool's stream through an
    async generator that is dropped, unexhausted, when a caller stops
    reading early; trio then warns from the garbage collector. This swaps in
    an equivalent stream whose ``aclose`` closes that iterator. Responses of
    other transports are left alone.
    """
    if _AsyncResponseStream is None:  # pragma: no cover
        return
    holder: Any = response
    attribute = "stream"
    stream: Any = response.stream
    if type(stream) is not _AsyncResponseStream:
        # The client wraps the transport's stream in a BoundAsyncStream.
        holder, attribute = stream, "_stream"
        stream = getattr(stream, "_stream", None)
        if type(stream) is not _AsyncResponseStream:
            return
    inner = getattr(stream, "_httpcore_stream", None)
    if inner is not None:
        setattr(holder, attribute, _ClosingResponseStream(inner))


class HTTPProvider(Provider):
    """Base of the HTTP leaf providers: client ownership, headers and error mapping.

    Not part of the public API; subclasses set ``_headers`` and implement the
    protocol.
    """

    # What a stream's body is made of, as error messages name it.
    _stream_format = "SSE"

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        api_key: str | None,
        client: httpx2.AsyncClient | None,
        timeout: TimeoutArg,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_tool_arguments_bytes: int = DEFAULT_MAX_TOOL_ARGUMENTS_BYTES,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty string, got {name!r}")
        if api_key is not None and not isinstance(api_key, str):
            raise TypeError(f"api_key must be a string or None, got {type(api_key).__name__}")
        self._name = name
        # A name no pattern of the sanitizer touches (almost every name) lets
        # an error message quoting an already scrubbed body skip a second
        # pass (see _status_error).
        self._plain_name = sanitize_api_error(name) == name and "bearer" not in name.lower()
        self._base_url, user, password = _checked_base_url(base_url)
        self._api_key = api_key or None
        # Every text this provider raises or logs goes through the sanitizer,
        # which from now on knows this key (and a password in base_url) in
        # every spelling; forgotten again when the provider is collected.
        for secret, secret_user in ((self._api_key, None), (password, user)):
            if secret:
                weakref.finalize(self, register_secret(secret, secret_user))
        self._client = client
        self._owns_client = client is None
        # Applied per request, shared clients included: httpx2's own default
        # (5 s for every phase) would kill a model that thinks before it
        # streams. None defers to the client's configuration.
        self._timeout = None if timeout is None else coerce_timeout(timeout)
        self._max_response_bytes = check_cap("max_response_bytes", max_response_bytes)
        self._max_event_bytes = check_cap("max_event_bytes", max_event_bytes)
        self._max_tool_arguments_bytes = check_cap(
            "max_tool_arguments_bytes", max_tool_arguments_bytes
        )
        self._total_timeout = check_request_timeout(request_timeout)
        self._headers: dict[str, str] = {}
        # Given every response's headers (routing learns rate limits from them).
        self._header_sinks: tuple[Callable[[Mapping[str, str]], bool], ...] = ()
        # An httpx2.Auth that signs each request (Bedrock's SigV4), else the client's own.
        self._auth: Any = httpx2.USE_CLIENT_DEFAULT

    # -- identity ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The provider name used in messages and failure trails."""
        return self._name

    @property
    def base_url(self) -> str:
        """The API base URL, with any ``user:password@`` shown as ``[REDACTED]@``."""
        return _redact_userinfo(self._base_url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, base_url={self.base_url!r})"

    def watch_headers(self, sink: Callable[[Mapping[str, str]], bool]) -> None:
        """Give every response's headers to ``sink`` (errors and streams included).

        Routing registers one per deployment to learn the rate limits a
        server announces (``x-ratelimit-remaining-requests``, ...). A sink
        that returns False is dropped (its router is gone). Sinks run
        inline, before the body is read: they must not block or raise.
        """
        self._header_sinks = (*self._header_sinks, sink)

    def _saw_headers(self, response: httpx2.Response) -> None:
        headers, sinks = response.headers, self._header_sinks
        kept = tuple(sink for sink in sinks if sink(headers))
        if len(kept) != len(sinks):
            self._header_sinks = kept

    # -- client --------------------------------------------------------------------

    @property
    def _request_timeout(self) -> httpx2.Timeout | Any:
        return self._timeout if self._timeout is not None else httpx2.USE_CLIENT_DEFAULT

    def _get_client(self) -> httpx2.AsyncClient:
        client = self._client
        if client is None:
            client = self._client = create_client(timeout=self._timeout or DEFAULT_TIMEOUT)
        return client

    async def aclose(self) -> None:
        """Close the HTTP client if this provider created it (a shared one is left open)."""
        client, owned = self._client, self._owns_client
        if owned and client is not None:
            self._client = None
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _warmup_get(self, url: str) -> None:
        """Open a pooled connection with a cheap GET; never raises an ``Exception``."""
        try:
            response = await self._get_client().get(
                url, headers=self._headers, timeout=httpx2.Timeout(10.0)
            )
        except Exception as exc:
            logger.debug("%s warm-up failed: %s", self._name, self._clean(repr(exc)))
        else:
            logger.debug("%s warm-up: HTTP %s", self._name, response.status_code)

    # -- errors --------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        """``text`` without this provider's key (every spelling, see
        :func:`reliant._sanitize.register_secret`) and other secrets."""
        key = self._api_key
        if key and len(key) >= _MIN_SCRUB_LEN and key in text:
            text = text.replace(key, "[REDACTED]")
        return sanitize_api_error(text)

    def _scrub_chain(self, exc: BaseException | None) -> None:
        """Scrub secrets out of the exceptions chained below one we raise.

        A transport error may quote a request header and keeps the request
        itself; a ``JSONDecodeError`` keeps the whole document. Both end up
        in ``__cause__`` and so in every traceback a logger prints
        (``exc_info``): see :func:`reliant._sanitize.scrub_exception`.
        """
        scrub_exception(exc)

    def _error_reason(self, response: httpx2.Response) -> str:
        """The words after the status in an HTTP error's message (its reason phrase)."""
        return reason_phrase(response.status_code, response.reason_phrase)

    def _status_error(self, response: httpx2.Response, body: str) -> ProviderError:
        status = response.status_code
        spec_error = response.headers.get(FAKE_SERVER_SPEC_HEADER)
        if spec_error is not None and 400 <= status < 500:
            # reliant.testing's fake server refused a test's spec: say so plainly.
            return FakeServerSpecError(
                f"{self._name}: {spec_error}", provider=self._name, status_code=status
            )
        # Decided on the raw body: sanitizing may cut it, and a cut body is no JSON.
        cls = (
            ContentFilterError
            if 400 <= status < 500 and is_content_filter_body(body)
            else ProviderError
        )
        raw_body = body
        body = self._clean(body)
        reason = self._error_reason(response)
        message = f"{self._name} API error ({status} {reason}): {body}"
        retry_after = parse_retry_after(_retry_headers(response))
        if retry_after is None:
            retry_after = retry_after_from_body(raw_body)
        if self._plain_name and len(body) <= MAX_ERROR_CHARS:
            # The body was scrubbed just now and not cut, the rest of the
            # message is our own plain words: the constructor's second and
            # third pass over the same text would change nothing (a property
            # test holds the two ways equal).
            return cls._from_sanitized(
                message,
                provider=self._name,
                status_code=status,
                retry_after=retry_after,
                body=body,
                kind="content_filter" if cls is ContentFilterError else None,
            )
        return cls(
            message, provider=self._name, status_code=status, retry_after=retry_after, body=body
        )

    def _transport_error(self, exc: Exception) -> ProviderError:
        self._scrub_chain(exc)
        timed_out = isinstance(exc, httpx2.TimeoutException)
        detail = str(exc) or ("timed out" if timed_out else "no detail")
        kind: ErrorKind | None = "timeout" if timed_out else None
        if isinstance(exc, httpx2.DecodingError):
            kind = "malformed_response"
        return ProviderError(
            self._clean(f"{self._name} transport error: {type(exc).__name__}: {detail}"),
            provider=self._name,
            kind=kind,
        )

    def _payload_error(self, error: Any, raw: str) -> ProviderError:
        """An error the server reported inside a 200 (an SSE error event or JSON body)."""
        status = status_from_error_payload(error)
        cls = (
            ContentFilterError
            if isinstance(error, Mapping) and error.get("code") in _CONTENT_FILTER_CODES
            else ProviderError
        )
        body = self._clean(raw)
        if status is None:
            message = f"{self._name} API error: {body}"
        else:
            message = f"{self._name} API error ({status} {reason_phrase(status)}): {body}"
        return cls(
            message,
            provider=self._name,
            status_code=status,
            retry_after=retry_after_from_body(raw),
            body=body,
        )

    def _refusal(self, raw_reason: str, raw: str) -> ContentFilterError:
        """A 2xx answer (or stream) whose only content is a safety refusal.

        ``raw_reason`` is the provider's word (``content_filter``,
        ``refusal``), ``raw`` the JSON it came in. Raised only before any
        text reached the caller; after text, the stream ends normally with
        ``finish_reason="content_filter"`` instead.
        """
        body = self._clean(raw)
        return ContentFilterError(
            f"{self._name} API error: the content filter refused to answer "
            f"(finish reason {raw_reason}): {body}",
            provider=self._name,
            body=body,
        )

    def _invalid_response(
        self, detail: str, kind: ErrorKind = "malformed_response"
    ) -> ProviderError:
        """A 2xx answer we cannot use (not JSON, JSON of the wrong shape, too large)."""
        return ProviderError(
            self._clean(f"{self._name} API error: {detail}"), provider=self._name, kind=kind
        )

    def _parse_failure(self, exc: Exception, data: Any) -> ProviderError:
        """The error for one of ``PARSE_FAILURES`` while reading a JSON answer."""
        if isinstance(exc, WireError):
            return self._invalid_response(str(exc), exc.kind)
        try:
            shown = json.dumps(data)[:2000]
        except (TypeError, ValueError, RecursionError):
            shown = type(data).__name__
        return self._invalid_response(f"unexpected response: {shown}")

    def _broken(
        self,
        detail: str,
        committed: bool,
        kind: ErrorKind | None = None,
        cause: BaseException | None = None,
        tool_call: bool = False,
    ) -> ReliantError:
        """A stream failure that is not a transport error (malformed, too large, unterminated).

        Before the first item a ``ProviderError`` (failover may move on);
        after it the ``StreamError`` of a committed stream, whose
        ``__cause__`` is that ``ProviderError``. ``tool_call``: a tool call's
        arguments were being received when the stream broke
        (``StreamError.tool_call_in_progress``).
        """
        self._scrub_chain(cause)
        failure = ProviderError(
            self._clean(f"{self._name} stream error: {detail}"), provider=self._name, kind=kind
        )
        failure.__cause__ = cause
        if not committed:
            return failure
        broken = StreamError(
            self._clean(f"{self._name} stream broke after the first chunk: {detail}"),
            tool_call_in_progress=tool_call,
        )
        # The ProviderError (with its kind) is the cause; an undecodable
        # event keeps its JSONDecodeError as the direct cause, as it always did.
        broken.__cause__ = cause if isinstance(cause, json.JSONDecodeError) else failure
        return broken

    def _stream_transport_error(
        self, exc: Exception, committed: bool, tool_call: bool = False
    ) -> ReliantError:
        error = self._transport_error(exc)
        error.__cause__ = exc
        if committed:
            broken = StreamError(
                self._clean(f"{self._name} stream broke after the first chunk: {error}"),
                tool_call_in_progress=tool_call,
            )
            # A committed transport break keeps the transport error as its
            # cause, as it always did (the ProviderError adds nothing to it).
            broken.__cause__ = exc
            return broken
        return error

    def _raise_inband(
        self, error: Any, raw: str, committed: bool, tool_call: bool = False
    ) -> NoReturn:
        failure = self._payload_error(error, raw)
        if committed:
            raise StreamError(
                self._clean(f"{self._name} stream broke after the first chunk: {failure}"),
                tool_call_in_progress=tool_call,
            ) from failure
        raise failure

    # -- requests ------------------------------------------------------------------

    async def _post_json(self, url: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST a JSON request; the JSON object answered, or ``ProviderError``.

        The whole call (connect, headers, body) runs under ``request_timeout``
        so a server trickling its answer a byte at a time cannot hold the
        caller beyond it (each byte would reset httpx2's per-read timeout);
        the body is read through :func:`iter_body`, refused past
        ``max_response_bytes`` after decompression.
        """
        deadline = math.inf if self._total_timeout is None else self._total_timeout
        with current_backend().move_on_after(deadline):
            return await self._post_json_within(url, payload)
        raise ProviderError(
            f"{self._name} API error: no complete response within "
            f"{self._total_timeout:g} s (request_timeout); timed out",
            provider=self._name,
            kind="timeout",
        )

    async def _post_json_within(self, url: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        try:
            async with self._get_client().stream(
                "POST",
                url,
                json=payload,
                headers=self._headers,
                timeout=self._request_timeout,
                auth=self._auth,
            ) as response:
                closing_response_stream(response)
                if self._header_sinks:
                    self._saw_headers(response)
                if not 200 <= response.status_code < 300:
                    raise self._status_error(response, await self._error_text(response))
                raw = await read_body(response, self._max_response_bytes)
                encoding = response.encoding or "utf-8"
        except httpx2.RequestError as exc:
            raise self._transport_error(exc) from exc
        except WireError as exc:
            raise self._invalid_response(str(exc), exc.kind) from None
        try:
            data = json.loads(raw.decode(encoding, errors="replace"))
        except (ValueError, RecursionError, LookupError) as exc:
            self._scrub_chain(exc)
            text = raw[:2000].decode("utf-8", errors="replace")
            reason = "JSON nested too deeply" if isinstance(exc, RecursionError) else "invalid JSON"
            raise self._invalid_response(f"{reason} response: {text}") from exc
        if type(data) is not dict:
            text = raw[:2000].decode("utf-8", errors="replace")
            raise self._invalid_response(f"unexpected response: {text}")
        return data

    async def _error_text(self, response: httpx2.Response) -> str:
        """The (possibly truncated) body of an error response, as text; never raises a cap."""
        try:
            raw = await read_body(response, _MAX_ERROR_BODY, truncate=True)
        except (httpx2.RequestError, WireError):
            return ""
        return raw.decode(_charset(response), errors="replace")

    async def _check_event_stream(
        self, response: httpx2.Response, expected: str = "text/event-stream"
    ) -> None:
        """Raise ``ProviderError`` unless ``response`` is a 2xx of content type ``expected``."""
        closing_response_stream(response)
        if self._header_sinks:
            self._saw_headers(response)
        if not 200 <= response.status_code < 300:
            raise self._status_error(response, await self._error_text(response))
        content_type = response.headers.get("content-type", "")
        if content_type.partition(";")[0].strip().lower() != expected:
            text = await self._error_text(response)
            shown = content_type or "no content type"
            raise ProviderError(
                self._clean(
                    f"{self._name} API error: expected a {expected} response, "
                    f"got {response.status_code} {shown}: {text}"
                ),
                provider=self._name,
            )

    @asynccontextmanager
    async def _open_event_stream(
        self, url: str, payload: Mapping[str, Any], expected: str = "text/event-stream"
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """POST a streaming request; its checked body (of type ``expected``), closed on exit."""
        async with self._get_client().stream(
            "POST",
            url,
            json=payload,
            headers=self._headers,
            timeout=self._request_timeout,
            auth=self._auth,
        ) as response:
            await self._check_event_stream(response, expected)
            async with aclosing(iter_body(response, self._max_response_bytes)) as body:
                yield body

    async def _end_event_stream(
        self,
        body: AsyncIterator[bytes],
        sse: SSEEventDecoder,
        committed: bool,
        *,
        finished: bool = False,
        tool_call: bool = False,
    ) -> None:
        """After a stream's read loop: raise what stopped it, or drain after the terminator.

        A body that ran out without its terminator (leniently checked, see
        :meth:`SSEEventDecoder.finish`) is a failure, never a silent success,
        unless the provider already said why the model stopped (``finished``:
        an OpenAI ``finish_reason``, an Anthropic ``message_delta`` with a
        ``stop_reason``). A clean end of the body after that is a server that
        omits the terminator, not a cut: a cut connection raises a transport
        error from the read loop before this is reached.

        ``tool_call`` marks a ``StreamError`` raised here as broken in the
        middle of a tool call.
        """
        if sse.malformed is not None:
            raise self._broken(
                sse.malformed, committed, "malformed_response", sse.malformed_cause, tool_call
            )
        if sse.inband is not None:
            error, raw = sse.inband
            self._raise_inband(error, raw, committed, tool_call)
        if sse.done:
            await drain(body)
        elif not sse.finish() and not finished:
            raise self._broken(
                f"stream ended without {sse.terminator}", committed, tool_call=tool_call
            )

    def _stream_failure(
        self, exc: Exception, committed: bool, tool_call: bool = False
    ) -> ReliantError:
        """The error for one of ``STREAM_FAILURES`` escaping a stream's read loop.

        Callers raise the result as it is (its ``__cause__`` is set here:
        the ``ProviderError`` under a ``StreamError``, the original below).
        """
        if isinstance(exc, httpx2.RequestError):
            return self._stream_transport_error(exc, committed, tool_call)
        if isinstance(exc, ResponseTooLarge):
            return self._broken(str(exc), committed, exc.kind, tool_call=tool_call)
        if isinstance(exc, WireError):
            return self._broken(
                f"unexpected {self._stream_format} data: {exc}",
                committed,
                exc.kind,
                tool_call=tool_call,
            )
        # Valid JSON of a shape no accessor expected (a string where an object belongs).
        detail = f"unexpected {self._stream_format} data: {type(exc).__name__}: {exc}"
        return self._broken(detail, committed, "malformed_response", exc, tool_call)


async def drain(body: AsyncIterator[bytes]) -> None:
    """Read what is left of a finished stream's body, briefly, so its connection is reused."""
    with current_backend().move_on_after(_DRAIN_TIMEOUT):
        try:
            async for _ in body:
                pass
        except (httpx2.RequestError, WireError):
            pass


def _checked_base_url(base_url: object) -> tuple[str, str | None, str | None]:
    """``base_url`` without a trailing slash, and its userinfo; a clear error if unusable.

    Only ``http`` and ``https`` are accepted: anything else is a
    configuration mistake (``ftp://``, ``file://``, a missing scheme) that
    would otherwise surface as an obscure transport error on every call.
    """
    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be a string, got {type(base_url).__name__}")
    try:
        parts = urlsplit(base_url)
        user, password = parts.username, parts.password
    except ValueError as exc:
        raise ValueError(
            f"base_url is not a valid URL: {_redact_userinfo(base_url)!r} ({exc})"
        ) from None
    if parts.scheme.lower() not in _SCHEMES or not parts.hostname:
        raise ValueError(
            f"base_url must be an http:// or https:// URL with a host, "
            f"got {_redact_userinfo(base_url)!r}"
        )
    return (
        base_url.rstrip("/"),
        None if user is None else unquote(user),
        None if password is None else unquote(password),
    )


def _redact_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``[REDACTED]@``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "[REDACTED]" if "@" in url else url
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"[REDACTED]@{host}"))
