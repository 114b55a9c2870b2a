"""What a failed provider call means: retry it, move on, wait, or shrink the prompt.

Every failed attempt in the failover loop is classified once, and the answer
decides what happens next:

* **non-retryable** (bad key, unknown model, malformed request): retrying the
  same provider cannot help, so the loop moves to the next provider at once.
* **rate-limited** (429): retryable with backoff, honouring Retry-After...
* ...unless it is a **quota/plan 429** (insufficient balance, plan does not
  include the model, provider business codes 1113/1311): waiting will not fix
  a billing problem, so it is treated as non-retryable.
* **context window exceeded**: never "non-retryable", because the caller can
  recover by truncating history; the failover loop handles it specially.
* **tool-schema errors** (e.g. Groq's "tool call validation failed"): never
  "non-retryable", because the provider can fall back to prompt-guided tools.
* **content filter** (a safety system refused the request or the answer):
  final, never retried; ``reason`` is ``"content_filter"``. Known from
  ``ProviderError.kind`` (our providers set it) or, for arbitrary errors,
  from the text: ``content_policy_violation``, ``content_filter``, "content
  management policy" (Azure), "safety system" (OpenAI).

Structured facts first
----------------------
Our leaf providers raise :class:`~reliant.ProviderError` carrying the HTTP
``status_code`` and ``retry_after`` (seconds) they saw on the wire. Those are
facts, so they win: a ``status_code`` decides non-retryable (4xx except 408
and 429) and rate-limited (429) without looking at the text, and a
``retry_after`` attribute beats anything the body says. Guessing from text is
only needed for errors whose origin we do not control (third-party providers,
transport libraries), and for the parts only the text can tell: context-window
and tool-schema errors and the quota/plan 429 hints. A ``ProviderError`` with
``status_code=None`` (no response at all: refused, reset, timed out) has no
status fact and goes through the text heuristics like any other exception.

Text heuristics (ported from the seed)
--------------------------------------
The status of an arbitrary error is read from ``str(err)`` by
:func:`primary_http_status`. Providers print the canonical shape
``"... API error (NNN Reason): body"`` or ``"HTTP NNN"``, so the code right
after a ``(`` or ``HTTP `` is taken first. Otherwise the first *standalone*
three-digit run in 100-599 is used: the leading status wins over any 4xx-looking
number later in the body (a 5xx whose body says "upstream 404" stays
retryable), and a run glued on its left to a letter, digit or one of
``: / . - _`` is skipped. That last rule exists because transport errors print
the URL, e.g. ``error sending request for url (https://host:456/v1): connection
refused``; without it the port 456 would read as a 4xx status and a transient
network failure would wrongly abort retries. Runs longer than three digits are
ids or counts, never statuses. Without any status, keyword hints catch
authentication failures and unknown models.

Only ``str(err)`` is inspected (not ``__cause__`` chains): the message is what
the failure trail records, so classification and the trail agree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ._exceptions import FailureReason, ProviderError

__all__ = [
    "Classification",
    "classify",
    "is_content_filter",
    "is_context_window_exceeded",
    "is_non_retryable",
    "is_non_retryable_rate_limit",
    "is_rate_limited",
    "is_tool_schema_error",
    "json_code_field",
    "parse_retry_after",
    "primary_http_status",
]

# Rust's `char::is_whitespace` (Unicode White_Space). Python's `str.isspace`
# also counts U+001C..U+001F, so an explicit set keeps trimming identical to
# the seed's `trim_start`.
_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

_ASCII_DIGITS_RE = re.compile(r"[0-9]*")
_RETRY_NUMBER_RE = re.compile(r"[0-9.]*")
# A run of exactly three ASCII digits that is not glued on its left to an
# identifier/URL character (the run-length rule covers digits on both sides).
_STANDALONE_STATUS_RE = re.compile(r"(?<![A-Za-z0-9:/.\-_])[0-9]{3}(?![0-9])")

_U32_MAX = 2**32 - 1

_AUTH_FAILURE_HINTS = (
    "invalid api key",
    "incorrect api key",
    "missing api key",
    "api key not set",
    "authentication failed",
    "auth failed",
    "unauthorized",
    "forbidden",
    "permission denied",
    "access denied",
    "invalid token",
)
_MODEL_FAILURE_HINTS = ("not found", "unknown", "unsupported", "does not exist", "invalid")
_TOOL_SCHEMA_HINTS = (
    "tool call validation failed",
    "was not in request",
    "not found in tool list",
    "invalid_tool_call",
)
_CONTEXT_WINDOW_HINTS = (
    "exceeds the context window",
    "exceeds the available context size",
    "context window of this model",
    "maximum context length",
    "context length exceeded",
    "too many tokens",
    "token limit exceeded",
    "prompt is too long",
    "input is too long",
    "prompt exceeds max length",
    # Gemini: "The input token count (N) exceeds the maximum number of tokens allowed (M)."
    "exceeds the maximum number of tokens allowed",
)
# OpenAI's moderation code and message ("...rejected as a result of our
# safety system"), Azure OpenAI's prompt-filter code and message ("...
# triggering Azure OpenAI's content management policy").
_CONTENT_FILTER_HINTS = (
    "content_policy_violation",
    "content_filter",
    "content management policy",
    "safety system",
)
_BUSINESS_HINTS = (
    "plan does not include",
    "doesn't include",
    "not include",
    "insufficient balance",
    "insufficient_balance",
    "insufficient quota",
    "insufficient_quota",
    "quota exhausted",
    "out of credits",
    "no available package",
    "package not active",
    "purchase package",
    "model not available for your plan",
)
# Z.AI business codes seen on 429s that no amount of waiting fixes.
_BUSINESS_CODES = frozenset({1113, 1311})


def _any_of(hints: tuple[str, ...]) -> re.Pattern[str]:
    # One scan of the text per group of hints (plain substrings), instead of
    # one ``in`` per hint from a Python loop: a third of a failure's cost.
    return re.compile("|".join(re.escape(hint) for hint in hints))


# Every content-filter, context-window and tool-schema hint contains one of
# these: a failure whose text has none of them (most do, e.g. any 5xx) skips
# the three scans. Six ``in`` checks cost a tenth of the scans (each a
# regex over the whole text, ~1 us per 100 characters); a test keeps the
# keys covering every hint, and the predicates below stay unfiltered, so the
# property test comparing them with classify() checks the filter too.
_HINT_KEYS = ("cont", "safety", "exceed", "too ", "tool", "was not in")


def _may_hint(lower: str) -> bool:
    return (
        "cont" in lower
        or "safety" in lower
        or "exceed" in lower
        or "too " in lower
        or "tool" in lower
        or "was not in" in lower
    )


_AUTH_FAILURE_RE = _any_of(_AUTH_FAILURE_HINTS)
_TOOL_SCHEMA_RE = _any_of(_TOOL_SCHEMA_HINTS)
_CONTEXT_WINDOW_RE = _any_of(_CONTEXT_WINDOW_HINTS)
_CONTENT_FILTER_RE = _any_of(_CONTENT_FILTER_HINTS)
_BUSINESS_RE = _any_of(_BUSINESS_HINTS)
_RETRY_AFTER_PREFIXES = (
    "retry-after:",
    "retry_after:",
    "retry-after ",
    "retry_after ",
    # Gemini: cloudcode-pa says "Your quota will reset after 32s.",
    # generativelanguage says "Please retry in 26.3s.".
    "reset after ",
    "retry in ",
)


@dataclass(frozen=True, slots=True)
class Classification:
    """Everything the failover loop needs to know about one failure.

    Attributes:
        reason: ``"retryable"``, ``"non_retryable"``, ``"rate_limited"`` or
            ``"rate_limited_non_retryable"``, as written in failure trails.
        retryable: False when retrying the same provider/model cannot help
            (a non-retryable error or a quota/plan 429).
        rate_limited: True for a 429.
        context_window: True when the request did not fit the model's context
            window (recoverable by truncation, never "non-retryable").
        retry_after: Seconds the server asked us to wait, or None.
        content_filter: True when a safety system refused: final for the
            whole request unless the caller opted into fallback.
        final: True when the error ends the whole request at once, raised
            as it is: no retry, no other candidate, whatever the options
            (a :class:`~reliant.FakeServerSpecError`: a test's own mistake).
    """

    reason: FailureReason
    retryable: bool
    rate_limited: bool
    context_window: bool
    retry_after: float | None
    content_filter: bool = False
    final: bool = False


# ── string-level helpers ─────────────────────────────────────────────────


def _parse_status_at(msg: str, pos: int) -> int | None:
    """Return the status if ``msg[pos:]`` starts with exactly three digits in 100-599."""
    match = _ASCII_DIGITS_RE.match(msg, pos)
    digits = match.group() if match else ""
    if len(digits) == 3:
        code = int(digits)
        if 100 <= code < 600:
            return code
    return None


def primary_http_status(msg: str) -> int | None:
    """Extract the primary HTTP status code from an error message.

    The code right after a ``(`` (every ``(`` in order) or after ``HTTP ``
    (every occurrence in order) wins; failing that, the first standalone run
    of exactly three ASCII digits in 100-599 that is not glued on its left to
    a letter, digit, ``:``, ``/``, ``.``, ``-`` or ``_`` (so URL ports, hosts
    and path segments are never read as statuses).

    Args:
        msg: The error text.

    Returns:
        The status code, or None when the text carries none.
    """
    start = msg.find("(")
    while start != -1:
        code = _parse_status_at(msg, start + 1)
        if code is not None:
            return code
        start = msg.find("(", start + 1)
    start = msg.find("HTTP ")
    while start != -1:
        code = _parse_status_at(msg, start + len("HTTP "))
        if code is not None:
            return code
        start = msg.find("HTTP ", start + len("HTTP "))
    for match in _STANDALONE_STATUS_RE.finditer(msg):
        code = int(match.group())
        if 100 <= code < 600:
            return code
    return None


def json_code_field(msg: str) -> int | None:
    """Extract the numeric value of the first parseable JSON ``"code"`` field.

    ``{"code":1311,...}`` and ``{ "code" : 1311 }`` both give 1311. A
    ``"code"`` whose value is not an unsigned 32-bit integer is skipped and the
    search continues after it; numbers elsewhere (ids, counts) are ignored.

    Args:
        msg: The error text (the caller decides on case; the key is matched
            exactly as ``"code"``).

    Returns:
        The code, or None when no ``"code"`` field holds a number.
    """
    key = '"code"'
    search = msg
    while (rel := search.find(key)) != -1:
        after = search[rel + len(key) :].lstrip(_WHITESPACE)
        if after.startswith(":"):
            rest = after[1:].lstrip(_WHITESPACE)
            match = _ASCII_DIGITS_RE.match(rest)
            digits = match.group() if match else ""
            # Strip leading zeros before int(): Python refuses to parse
            # strings over 4300 digits, and such a value overflows u32 anyway.
            significant = digits.lstrip("0")
            if digits and len(significant) <= 10 and int(significant or "0") <= _U32_MAX:
                return int(significant or "0")
        search = after
    return None


# ── internal predicates on pre-computed text ─────────────────────────────
# Each public function and `classify` share these, so `classify` lowers the
# message once and still behaves exactly like the individual functions.


def _status_fact(err: BaseException) -> int | None:
    return err.status_code if isinstance(err, ProviderError) else None


# Longest Retry-After we record, in seconds; anything above (1e12, inf) is a
# broken or hostile hint. The backoff waits at most 30 s whatever this says.
_MAX_RETRY_AFTER_FACT = 1e9


def _retry_after_fact(err: BaseException) -> float | None:
    if not isinstance(err, ProviderError) or err.retry_after is None:
        return None
    # Set by any provider, so any type may arrive: never raise while classifying.
    try:
        value = float(err.retry_after)
    except (TypeError, ValueError, OverflowError):
        return None
    if math.isnan(value):
        return None
    # A negative value (an HTTP-date already in the past) means "now".
    return min(max(value, 0.0), _MAX_RETRY_AFTER_FACT)


def _context_window(lower: str) -> bool:
    return _CONTEXT_WINDOW_RE.search(lower) is not None


def _tool_schema(lower: str) -> bool:
    return _TOOL_SCHEMA_RE.search(lower) is not None


def _content_filter(lower: str) -> bool:
    return _CONTENT_FILTER_RE.search(lower) is not None


def _non_retryable(
    status: int | None,
    msg: str,
    lower: str,
    content_filter: bool | None = None,
    context_window: bool | None = None,
    tool_schema: bool | None = None,
) -> bool:
    # A safety refusal is final, whatever else the text says.
    if _content_filter(lower) if content_filter is None else content_filter:
        return True
    # Recoverable by truncating history / by prompt-guided tools, so the
    # retry loop must get to handle them even when they come as a 400.
    if context_window is None:
        context_window = _context_window(lower)
    if context_window or (_tool_schema(lower) if tool_schema is None else tool_schema):
        return False
    if status is not None:
        return 400 <= status < 500 and status not in (408, 429)
    code = primary_http_status(msg)
    if code is not None and 400 <= code < 500:
        return code not in (408, 429)
    # No (client-error) status: fall back to keywords for transports that
    # carry none, e.g. gRPC or custom clients.
    if _AUTH_FAILURE_RE.search(lower) is not None:
        return True
    return "model" in lower and any(hint in lower for hint in _MODEL_FAILURE_HINTS)


def _rate_limited(status: int | None, msg: str) -> bool:
    if status is not None:
        return status == 429
    # Case-sensitive on purpose, as in the seed.
    return "429" in msg and ("Too Many" in msg or "rate" in msg or "limit" in msg)


def _non_retryable_rate_limit(rate_limited: bool, lower: str) -> bool:
    if not rate_limited:
        return False
    if _BUSINESS_RE.search(lower) is not None:
        return True
    return json_code_field(lower) in _BUSINESS_CODES


def _text_retry_after(lower: str) -> float | None:
    # The seed finds the prefix in the lowered text and slices the original at
    # that offset; digits, dots and whitespace are unchanged by lowering, so
    # reading the lowered text gives the same number and stays aligned even
    # when lowering changes the length of some other character.
    if "retry" not in lower and "reset after " not in lower:
        return None  # no prefix can be there: they all contain one of these two
    for prefix in _RETRY_AFTER_PREFIXES:
        pos = lower.find(prefix)
        if pos == -1:
            continue
        after = lower[pos + len(prefix) :].lstrip(_WHITESPACE)
        match = _RETRY_NUMBER_RE.match(after)
        number = match.group() if match else ""
        try:
            secs = float(number)
        except (ValueError, OverflowError):
            continue
        if math.isfinite(secs) and secs >= 0.0:
            return min(secs, _MAX_RETRY_AFTER_FACT)
    return None


# ── public predicates ────────────────────────────────────────────────────


def is_non_retryable(err: BaseException) -> bool:
    """Tell whether retrying the same provider/model cannot fix ``err``.

    A content-filter refusal (see :func:`is_content_filter`) always is.
    Context-window and tool-schema errors never are (they are
    recoverable). A :class:`~reliant.ProviderError` with a ``status_code`` is
    non-retryable iff the status is 4xx other than 408 and 429. Otherwise the
    primary status in the text decides for 4xx, and keyword hints catch
    authentication failures and unknown models.

    Args:
        err: The failure.

    Returns:
        True when the loop should move on to the next provider at once.
    """
    msg = str(err)
    return _non_retryable(_status_fact(err), msg, msg.lower())


def is_rate_limited(err: BaseException) -> bool:
    """Tell whether ``err`` is a rate-limit (429) error.

    A :class:`~reliant.ProviderError` with a ``status_code`` is rate-limited
    iff the status is 429. Otherwise the text must contain ``429`` and one of
    ``Too Many``, ``rate`` or ``limit`` (case-sensitive).

    Args:
        err: The failure.

    Returns:
        True for a 429.
    """
    return _rate_limited(_status_fact(err), str(err))


def is_non_retryable_rate_limit(err: BaseException) -> bool:
    """Tell whether ``err`` is a quota/plan 429 that waiting cannot fix.

    It must be rate-limited (see :func:`is_rate_limited`) and either mention a
    business problem (insufficient balance or quota, plan does not include the
    model, package not active, ...) or carry a JSON ``"code"`` of 1113 or 1311.

    Args:
        err: The failure.

    Returns:
        True for a 429 that should not be retried.
    """
    msg = str(err)
    return _non_retryable_rate_limit(_rate_limited(_status_fact(err), msg), msg.lower())


def is_context_window_exceeded(err: BaseException) -> bool:
    """Tell whether ``err`` says the request did not fit the context window.

    Args:
        err: The failure.

    Returns:
        True when the text matches a known context-window phrasing.
    """
    return _context_window(str(err).lower())


def is_content_filter(err: BaseException) -> bool:
    """Tell whether ``err`` is a safety system's refusal.

    A :class:`~reliant.ProviderError` whose ``kind`` is ``"content_filter"``
    (every :class:`~reliant.ContentFilterError`) is; otherwise the text
    decides, case insensitively: ``content_policy_violation``,
    ``content_filter``, "content management policy" or "safety system".

    Args:
        err: The failure.

    Returns:
        True when the request or its answer was refused by a content filter.
    """
    if isinstance(err, ProviderError) and err.kind == "content_filter":
        return True
    return _content_filter(str(err).lower())


def is_tool_schema_error(err: BaseException) -> bool:
    """Tell whether ``err`` is a tool-schema validation failure.

    Such errors (e.g. Groq's "tool call validation failed: attempted to call
    tool 'x' which was not in request") are recoverable by falling back to
    prompt-guided tools, so they are never non-retryable.

    Args:
        err: The failure.

    Returns:
        True when the text matches a known tool-schema phrasing.
    """
    return _tool_schema(str(err).lower())


def parse_retry_after(err: BaseException) -> float | None:
    """Find how long the server asked us to wait, in seconds.

    A :class:`~reliant.ProviderError` ``retry_after`` attribute wins (a
    negative one counts as 0). Otherwise the text is searched, case
    insensitively, for ``retry-after:``, ``retry_after:``, ``retry-after``,
    ``retry_after``, ``reset after`` and ``retry in`` (in that order, first
    occurrence of each), followed by a non-negative number such as ``5`` or
    ``26.3`` (trailing units like ``s`` are ignored).

    Args:
        err: The failure.

    Returns:
        Seconds to wait, or None when the server gave no hint.
    """
    fact = _retry_after_fact(err)
    if fact is not None:
        return fact
    return _text_retry_after(str(err).lower())


def _failure_reason(rate_limited: bool, non_retryable: bool) -> FailureReason:
    if rate_limited and non_retryable:
        return "rate_limited_non_retryable"
    if rate_limited:
        return "rate_limited"
    if non_retryable:
        return "non_retryable"
    return "retryable"


def classify(err: BaseException) -> Classification:
    """Classify one failure in a single pass over its text.

    Equivalent to calling every predicate above: ``retryable`` is
    ``not (is_non_retryable(err) or is_non_retryable_rate_limit(err))``,
    ``content_filter`` is :func:`is_content_filter`, and ``reason`` is
    ``"content_filter"`` for a refusal, else combines ``retryable`` with
    :func:`is_rate_limited` the way failure trails spell it. A structured
    ``ProviderError.kind`` decides on its own (see below).

    Args:
        err: The failure.

    Returns:
        The classification record.
    """
    kind = getattr(err, "kind", None) if isinstance(err, ProviderError) else None
    if kind is not None:
        return _KIND_CLASSIFICATION.get(kind) or _classify_text(err)
    return _classify_text(err)


# A structured kind set by a leaf provider is a fact, like a status code. A
# timeout is worth another try; a response that was too large or malformed
# will most likely be so again from the same (provider, model), so the loop
# moves to the next candidate; a content-filter refusal is final.
_KIND_CLASSIFICATION: dict[str, Classification] = {
    "timeout": Classification("timeout", True, False, False, None),
    "response_too_large": Classification("response_too_large", False, False, False, None),
    "malformed_response": Classification("malformed_response", False, False, False, None),
    "content_filter": Classification("content_filter", False, False, False, None, True),
    # A test's mistyped fake-server spec: failing over would hide it.
    "fake_server_spec": Classification("fake_server_spec", False, False, False, None, final=True),
    # Routing's client-side rate limit refused a failover candidate: no call
    # was made; the next candidate is tried at once (never opens a breaker).
    "capacity": Classification("capacity", False, False, False, None),
}


def _classify_text(err: BaseException) -> Classification:
    msg = str(err)
    lower = msg.lower()
    status = _status_fact(err)
    rate_limited = _rate_limited(status, msg)
    if _may_hint(lower):
        content_filter = _content_filter(lower)
        context_window = _context_window(lower)
        tool_schema = _tool_schema(lower)
    else:
        content_filter = context_window = tool_schema = False
    non_retryable = _non_retryable(
        status, msg, lower, content_filter, context_window, tool_schema
    ) or _non_retryable_rate_limit(rate_limited, lower)
    retry_after = _retry_after_fact(err)
    if retry_after is None:
        retry_after = _text_retry_after(lower)
    reason = "content_filter" if content_filter else _failure_reason(rate_limited, non_retryable)
    if retry_after is None:
        # Without a Retry-After there are few distinct records: made once each
        # (a frozen dataclass costs a microsecond to build).
        key = (reason, non_retryable, rate_limited, context_window, content_filter)
        known = _RECORDS.get(key)
        if known is None:
            known = _RECORDS[key] = Classification(
                reason, not non_retryable, rate_limited, context_window, None, content_filter
            )
        return known
    return Classification(
        reason=reason,
        retryable=not non_retryable,
        rate_limited=rate_limited,
        context_window=context_window,
        retry_after=retry_after,
        content_filter=content_filter,
    )


_RECORDS: dict[tuple[FailureReason, bool, bool, bool, bool], Classification] = {}
