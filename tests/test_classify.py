"""Tests for reliant.classify: the seed's classification tests plus the structured path."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reliant._exceptions import ContentFilterError, ProviderError
from reliant.classify import (
    _CONTENT_FILTER_HINTS,
    _CONTEXT_WINDOW_HINTS,
    _HINT_KEYS,
    _RETRY_AFTER_PREFIXES,
    _TOOL_SCHEMA_HINTS,
    Classification,
    _may_hint,
    classify,
    is_content_filter,
    is_context_window_exceeded,
    is_non_retryable,
    is_non_retryable_rate_limit,
    is_rate_limited,
    is_tool_schema_error,
    json_code_field,
    parse_retry_after,
    primary_http_status,
)


def err(msg: str) -> Exception:
    """Build an arbitrary (non-ProviderError) exception, like the seed's anyhow!()."""
    return RuntimeError(msg)


# ── seed: non-retryable detection ────────────────────────────────────────


def test_non_retryable_detects_common_patterns() -> None:
    """4xx statuses and auth/model keywords are non-retryable; 429/408/5xx/transport are not."""
    assert is_non_retryable(err("400 Bad Request"))
    assert is_non_retryable(err("401 Unauthorized"))
    assert is_non_retryable(err("403 Forbidden"))
    assert is_non_retryable(err("404 Not Found"))
    assert is_non_retryable(err("invalid api key provided"))
    assert is_non_retryable(err("authentication failed"))
    assert is_non_retryable(err("model glm-4.7 not found"))
    assert is_non_retryable(err("unsupported model: glm-4.7"))
    assert not is_non_retryable(err("429 Too Many Requests"))
    assert not is_non_retryable(err("408 Request Timeout"))
    assert not is_non_retryable(err("500 Internal Server Error"))
    assert not is_non_retryable(err("502 Bad Gateway"))
    assert not is_non_retryable(err("timeout"))
    assert not is_non_retryable(err("connection reset"))
    assert not is_non_retryable(err("model overloaded, try again later"))
    # Context window errors are recoverable (not non-retryable).
    assert not is_non_retryable(
        err("OpenAI Codex stream error: Your input exceeds the context window of this model.")
    )


def test_non_retryable_detects_401() -> None:
    """A canonical 401 error is non-retryable."""
    assert is_non_retryable(err("API error (401 Unauthorized): invalid api key"))


def test_non_retryable_detects_403() -> None:
    """A canonical 403 error is non-retryable."""
    assert is_non_retryable(err("API error (403 Forbidden): access denied"))


def test_non_retryable_detects_404() -> None:
    """A canonical 404 error is non-retryable."""
    assert is_non_retryable(err("API error (404 Not Found): model not found"))


def test_non_retryable_does_not_flag_429() -> None:
    """A 429 is retryable with backoff, not non-retryable."""
    assert not is_non_retryable(err("429 Too Many Requests"))


def test_non_retryable_does_not_flag_408() -> None:
    """A 408 request timeout is retryable."""
    assert not is_non_retryable(err("408 Request Timeout"))


def test_non_retryable_does_not_flag_500() -> None:
    """A 500 server error is retryable."""
    assert not is_non_retryable(err("500 Internal Server Error"))


def test_non_retryable_does_not_flag_502() -> None:
    """A 502 bad gateway is retryable."""
    assert not is_non_retryable(err("502 Bad Gateway"))


def test_non_retryable_does_not_flag_5xx_with_embedded_4xx_token() -> None:
    """A 5xx whose body mentions a 4xx code stays retryable: the leading status wins."""
    assert not is_non_retryable(err("500 Internal Server Error: upstream returned 404 for model X"))
    assert not is_non_retryable(err("OpenAI API error (500 Internal Server Error): upstream 404"))


def test_non_retryable_does_not_flag_5xx_with_trace_number_in_4xx_range() -> None:
    """A 5xx whose request id holds a 400-499 number stays retryable."""
    assert not is_non_retryable(err("503 Service Unavailable (request id req-412abc)"))


def test_non_retryable_flags_canonical_4xx_error_shape() -> None:
    """The canonical "... API error (NNN ...)" shape flags a genuine 4xx."""
    assert is_non_retryable(err("Anthropic API error (404 Not Found): no such model"))


@pytest.mark.parametrize(
    "url",
    [
        "error sending request for url (https://host:456/v1): connection refused",
        "error sending request for url (https://api.example.com:404/v1/chat): dns error",
        "error sending request for url (http://10.0.0.5:480/x): operation timed out",
    ],
)
def test_non_retryable_does_not_flag_transport_error_with_4xx_port(url: str) -> None:
    """A transport error whose URL has a 4xx-band port is retryable."""
    assert not is_non_retryable(err(url))


def test_primary_http_status_skips_url_ports_but_keeps_real_status() -> None:
    """URL-glued digits are not statuses, but a standalone or anchored status is found."""
    assert (
        primary_http_status("error sending request for url (https://host:456/v1): refused") is None
    )
    assert primary_http_status("url (https://host:456/v1) returned 503 Service Unavailable") == 503
    assert primary_http_status("API error (404 Not Found): x") == 404
    assert primary_http_status("HTTP 500 upstream") == 500
    assert primary_http_status("429 Too Many Requests") == 429


# ── seed: retry-after parsing ────────────────────────────────────────────


def test_parse_retry_after_integer() -> None:
    """The text "Retry-After: 5" parses as 5 seconds."""
    assert parse_retry_after(err("429 Too Many Requests, Retry-After: 5")) == 5.0


def test_parse_retry_after_float() -> None:
    """The text "retry_after: 2.5 seconds" parses as 2.5 seconds."""
    assert parse_retry_after(err("Rate limited. retry_after: 2.5 seconds")) == 2.5


def test_parse_retry_after_missing() -> None:
    """No Retry-After hint parses as None."""
    assert parse_retry_after(err("500 Internal Server Error")) is None


def test_parse_retry_after_zero() -> None:
    """The text "Retry-After: 0" parses as 0 seconds, not None."""
    assert parse_retry_after(err("429 Too Many Requests, Retry-After: 0")) == 0.0


def test_parse_retry_after_with_underscore_separator() -> None:
    """The text "retry_after: 10" with an underscore parses as 10 seconds."""
    assert parse_retry_after(err("rate limited, retry_after: 10")) == 10.0


def test_parse_retry_after_space_separator() -> None:
    """The text "Retry-After 7" with a space separator parses as 7 seconds."""
    assert parse_retry_after(err("Retry-After 7")) == 7.0


def test_parse_retry_after_gemini_quota_reset_phrasing() -> None:
    """Gemini's "Your quota will reset after 32s." parses as 32 seconds."""
    e = err(
        "Gemini API error (429 Too Many Requests): You have exhausted your capacity "
        "on this model. Your quota will reset after 32s."
    )
    assert parse_retry_after(e) == 32.0


def test_parse_retry_after_gemini_retry_in_phrasing() -> None:
    """Gemini's "Please retry in 26.3s." parses as 26.3 seconds."""
    assert parse_retry_after(err("Resource has been exhausted. Please retry in 26.3s.")) == 26.3


def test_parse_retry_after_unparseable_number_tries_next_phrasing() -> None:
    """A prefix followed by no number is skipped and later phrasings are still tried."""
    assert parse_retry_after(err("retry-after: soon; please retry in 4s")) == 4.0
    assert parse_retry_after(err("Retry-After: 1.2.3")) is None


def test_parse_retry_after_survives_case_changing_characters() -> None:
    """Characters whose lowercase form is longer (e.g. "İ") do not shift the parsed number."""
    assert parse_retry_after(err("İİ Please retry in 26.3s.")) == 26.3


# ── seed: rate-limit detection and business 429s ────────────────────────


def test_rate_limited_detection() -> None:
    """429 with "Too Many"/"rate"/"limit" is rate-limited; 401 and 500 are not."""
    assert is_rate_limited(err("429 Too Many Requests"))
    assert is_rate_limited(err("HTTP 429 rate limit exceeded"))
    assert not is_rate_limited(err("401 Unauthorized"))
    assert not is_rate_limited(err("500 Internal Server Error"))


def test_rate_limited_false_for_generic_error() -> None:
    """A generic transport error is not rate-limited."""
    assert not is_rate_limited(err("Connection refused"))


def test_non_retryable_rate_limit_detects_plan_restricted_model() -> None:
    """A plan-restricted 429 (code 1311) skips retries."""
    e = err(
        'API error (429 Too Many Requests): {"code":1311,'
        '"message":"the current account plan does not include glm-5"}'
    )
    assert is_non_retryable_rate_limit(e)


def test_non_retryable_rate_limit_detects_insufficient_balance() -> None:
    """An insufficient-balance 429 (code 1113) skips retries."""
    e = err('API error (429 Too Many Requests): {"code":1113,"message":"insufficient balance"}')
    assert is_non_retryable_rate_limit(e)


def test_non_retryable_rate_limit_does_not_flag_generic_429() -> None:
    """A generic rate-limit 429 stays retryable."""
    assert not is_non_retryable_rate_limit(err("429 Too Many Requests: rate limit exceeded"))


def test_non_retryable_rate_limit_ignores_business_code_outside_code_field() -> None:
    """1311/1113 outside the JSON "code" field do not flag a transient 429."""
    e = err(
        'API error (429 Too Many Requests): {"request_id":"req-1311-abc","retries":1113,'
        '"message":"rate limit exceeded, slow down"}'
    )
    assert not is_non_retryable_rate_limit(e)


def test_non_retryable_rate_limit_detects_business_code_with_spacing() -> None:
    """A spaced `"code" : 1113` still skips retries."""
    e = err(
        'API error (429 Too Many Requests): { "code" : 1113, "message":"insufficient balance" }'
    )
    assert is_non_retryable_rate_limit(e)


def test_non_retryable_rate_limit_requires_rate_limit() -> None:
    """Business hints on a non-429 error do not make it a non-retryable rate limit."""
    assert not is_non_retryable_rate_limit(err('500 error: {"code":1311} insufficient balance'))


def test_json_code_field_reads_first_numeric_code() -> None:
    """Only a numeric JSON "code" counts; non-numeric or u32-overflowing ones are skipped."""
    assert json_code_field('{"code":1311,"message":"x"}') == 1311
    assert json_code_field('{ "code" :\t 42 }') == 42
    assert json_code_field('{"code":"rate_limit","inner":{"code":1113}}') == 1113
    assert json_code_field('{"code":99999999999} {"code":7}') == 7
    assert json_code_field('{"code":4294967295}') == 4294967295
    assert json_code_field('{"request_id":"1311","retries":1113}') is None
    assert json_code_field('{"code":' + "0" * 5000 + "12}") == 12
    assert json_code_field("") is None


# ── seed: context window and tool schema ─────────────────────────────────


def test_context_window_error_is_not_non_retryable() -> None:
    """Context-window errors are recoverable by truncation, hence not non-retryable."""
    assert not is_non_retryable(err("exceeds the context window"))
    assert not is_non_retryable(err("maximum context length exceeded"))
    assert not is_non_retryable(err("too many tokens in the request"))
    assert not is_non_retryable(err("token limit exceeded"))


def test_is_context_window_exceeded_detects_llamacpp() -> None:
    """llama.cpp's "exceeds the available context size" is a context-window error."""
    assert is_context_window_exceeded(
        err(
            "request (8968 tokens) exceeds the available context size (8448 tokens), "
            "try increasing it"
        )
    )


def test_tool_schema_error_detects_groq_validation_failure() -> None:
    """Groq's "tool call validation failed" 400 is a tool-schema error."""
    msg = (
        'Groq API error (400 Bad Request): {"error":{"message":"tool call validation failed: '
        "attempted to call tool 'memory_recall' which was not in request\"}}"
    )
    assert is_tool_schema_error(err(msg))


def test_tool_schema_error_detects_not_in_request() -> None:
    """The phrase "was not in request" marks a tool-schema error."""
    assert is_tool_schema_error(err("tool 'search' was not in request"))


def test_tool_schema_error_detects_not_found_in_tool_list() -> None:
    """The phrase "not found in tool list" marks a tool-schema error."""
    assert is_tool_schema_error(err("function 'foo' not found in tool list"))


def test_tool_schema_error_detects_invalid_tool_call() -> None:
    """The phrase "invalid_tool_call" marks a tool-schema error."""
    assert is_tool_schema_error(err("invalid_tool_call: no matching function"))


def test_tool_schema_error_ignores_unrelated_errors() -> None:
    """Auth and model errors are not tool-schema errors."""
    assert not is_tool_schema_error(err("invalid api key"))
    assert not is_tool_schema_error(err("model not found"))


def test_non_retryable_returns_false_for_tool_schema_400() -> None:
    """A 400 carrying tool-schema validation text is not non-retryable."""
    msg = (
        "400 Bad Request: tool call validation failed: attempted to call tool 'x' "
        "which was not in request"
    )
    assert not is_non_retryable(err(msg))


def test_non_retryable_returns_true_for_other_400_errors() -> None:
    """A regular 400 (e.g. invalid API key) is non-retryable."""
    assert is_non_retryable(err("400 Bad Request: invalid api key provided"))


# ── structured facts (ProviderError) ─────────────────────────────────────


def test_structured_401_without_text_is_non_retryable() -> None:
    """A ProviderError with status 401 is non-retryable even with an empty message."""
    e = ProviderError("", status_code=401)
    assert is_non_retryable(e)
    assert classify(e).reason == "non_retryable"


def test_structured_503_with_4xx_in_body_is_retryable() -> None:
    """A 503 ProviderError is retryable even when its body holds "404" and model keywords."""
    e = ProviderError(
        "p API error (503 Service Unavailable): model 404 not found",
        status_code=503,
        body="model 404 not found",
    )
    assert not is_non_retryable(e)
    assert classify(e).retryable
    # The same text without the structured status trips the keyword heuristics.
    assert is_non_retryable(err(str(e)))


def test_structured_429_is_rate_limited() -> None:
    """A ProviderError with status 429 is rate-limited and retryable without any text."""
    e = ProviderError("", status_code=429)
    assert is_rate_limited(e)
    assert not is_non_retryable(e)
    assert classify(e).reason == "rate_limited"


def test_structured_status_overrides_rate_limit_text() -> None:
    """A non-429 status is not rate-limited even if the text says 429."""
    assert not is_rate_limited(ProviderError("429 Too Many Requests", status_code=500))


def test_structured_429_with_business_hint_is_non_retryable_rate_limit() -> None:
    """A 429 ProviderError whose text names a quota problem is a non-retryable rate limit."""
    e = ProviderError('p API error (429): {"code": 1311, "message": "x"}', status_code=429)
    assert is_non_retryable_rate_limit(e)
    assert classify(e).reason == "rate_limited_non_retryable"
    assert not classify(e).retryable
    plan = ProviderError("quota exhausted", status_code=429)
    assert is_non_retryable_rate_limit(plan)


def test_structured_retry_after_attribute_wins_over_text() -> None:
    """The retry_after attribute beats a Retry-After hint in the text."""
    e = ProviderError("429 Too Many Requests, Retry-After: 9", status_code=429, retry_after=3.0)
    assert parse_retry_after(e) == 3.0
    assert classify(e).retry_after == 3.0


def test_structured_retry_after_missing_falls_back_to_text() -> None:
    """Without a retry_after attribute the text hint is used."""
    e = ProviderError("429 Too Many Requests, Retry-After: 9", status_code=429)
    assert parse_retry_after(e) == 9.0


def test_structured_negative_retry_after_means_now() -> None:
    """A negative retry_after (an HTTP-date in the past) counts as 0 seconds."""
    assert parse_retry_after(ProviderError("x", status_code=429, retry_after=-4.0)) == 0.0


def test_structured_nan_retry_after_is_ignored() -> None:
    """A NaN retry_after is no hint, so the text is consulted."""
    e = ProviderError("retry in 2s", status_code=429, retry_after=math.nan)
    assert parse_retry_after(e) == 2.0


def test_structured_status_none_is_retryable() -> None:
    """A transport failure (status None) is retryable."""
    e = ProviderError("p: connection refused", provider="p")
    assert not is_non_retryable(e)
    assert classify(e) == Classification("retryable", True, False, False, None)


def test_structured_status_none_keeps_keyword_heuristics() -> None:
    """With status None the auth/model keyword heuristics still apply."""
    assert is_non_retryable(ProviderError("authentication failed"))
    assert is_non_retryable(ProviderError("model foo does not exist"))


def test_structured_529_is_retryable() -> None:
    """529 (overloaded) is retryable."""
    e = ProviderError("p API error (529 Overloaded): overloaded", status_code=529)
    assert not is_non_retryable(e)
    assert classify(e).reason == "retryable"


def test_structured_408_is_retryable() -> None:
    """408 (request timeout) is retryable."""
    assert not is_non_retryable(ProviderError("", status_code=408))


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
def test_structured_5xx_is_retryable(status: int) -> None:
    """Every 5xx status is retryable, even next to auth keywords."""
    assert not is_non_retryable(ProviderError("invalid api key", status_code=status))


def test_structured_400_with_tool_schema_text_is_retryable() -> None:
    """A 400 ProviderError with tool-schema text is not non-retryable."""
    e = ProviderError(
        "groq API error (400 Bad Request): tool call validation failed", status_code=400
    )
    assert is_tool_schema_error(e)
    assert not is_non_retryable(e)


def test_structured_400_with_context_window_text_is_not_non_retryable() -> None:
    """A 400 ProviderError with context-window text is not non-retryable."""
    e = ProviderError(
        "p API error (400 Bad Request): This model's maximum context length is 8192 tokens",
        status_code=400,
    )
    assert is_context_window_exceeded(e)
    assert not is_non_retryable(e)
    c = classify(e)
    assert c.context_window
    assert c.retryable


# ── classify() ───────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("500 Internal Server Error", "retryable"),
        ("401 Unauthorized", "non_retryable"),
        ("429 Too Many Requests", "rate_limited"),
        ('API error (429 Too Many Requests): {"code":1113}', "rate_limited_non_retryable"),
    ],
)
def test_classify_failure_reason(message: str, reason: str) -> None:
    """classify() spells the reason like the seed's failure_reason()."""
    assert classify(err(message)).reason == reason


def test_classify_record_is_frozen() -> None:
    """Classification is an immutable record."""
    c = classify(err("429 Too Many Requests, Retry-After: 5"))
    assert c == Classification("rate_limited", True, True, False, 5.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.retryable = False  # type: ignore[misc]


# ── properties ───────────────────────────────────────────────────────────

_hosts = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=8)


@given(
    scheme=st.sampled_from(["http", "https"]),
    host=_hosts,
    port=st.integers(min_value=100, max_value=599),
    path=st.sampled_from(["/v1", "/v1/chat/completions", "/x", ""]),
    cause=st.sampled_from(["connection refused", "dns error", "operation timed out"]),
)
def test_status_anchoring_never_picks_url_port(
    scheme: str, host: str, port: int, path: str, cause: str
) -> None:
    """A 3-digit URL port is never read as an HTTP status."""
    msg = f"error sending request for url ({scheme}://{host}:{port}{path}): {cause}"
    assert primary_http_status(msg) is None
    assert not is_non_retryable(err(msg))
    assert not is_non_retryable(ProviderError(msg))


@given(
    status=st.integers(min_value=100, max_value=599),
    body=st.text(alphabet="abc 0123456789():/-", max_size=30),
)
def test_canonical_status_is_primary(status: int, body: str) -> None:
    """The status in the canonical "API error (NNN ...)" shape is always the primary one."""
    assert primary_http_status(f"p API error ({status} Reason): {body}") == status


@given(status=st.integers(min_value=100, max_value=599))
def test_structured_status_decides_non_retryable(status: int) -> None:
    """Without recoverable text, a status_code alone decides non-retryability."""
    e = ProviderError("invalid api key; model not found (404)", status_code=status)
    assert is_non_retryable(e) == (400 <= status < 500 and status not in (408, 429))
    assert is_rate_limited(e) == (status == 429)


_fragments = st.sampled_from(
    [
        "429",
        "Too Many Requests",
        "rate limit",
        "limit",
        "401 Unauthorized",
        "API error (500 Internal Server Error):",
        "API error (404 Not Found):",
        "HTTP 404",
        "HTTP 408",
        "(https://host:456/v1)",
        "529 overloaded",
        "model",
        "not found",
        "unsupported",
        "invalid api key",
        "forbidden",
        "Retry-After: 3",
        "retry_after: 2.5",
        "retry in 26.3s",
        "reset after 32s",
        "Retry-After 7",
        '{"code":1311}',
        '{ "code" : 1113 }',
        '"code":"x"',
        "insufficient balance",
        "plan does not include",
        "exceeds the context window",
        "maximum context length",
        "tool call validation failed",
        "was not in request",
        "content_policy_violation",
        "safety system",
        "İ",
    ]
)
_messages = st.lists(st.one_of(_fragments, st.text(max_size=8)), max_size=8).map(" ".join)


@st.composite
def _errors(draw: st.DrawFn) -> BaseException:
    msg = draw(_messages)
    if draw(st.booleans()):
        return RuntimeError(msg)
    return ProviderError(
        msg,
        status_code=draw(st.none() | st.integers(min_value=100, max_value=599)),
        retry_after=draw(st.none() | st.floats()),
    )


@given(_errors())
def test_classify_agrees_with_individual_functions(e: BaseException) -> None:
    """classify() gives exactly what the individual predicates give."""
    c = classify(e)
    non_retryable = is_non_retryable(e) or is_non_retryable_rate_limit(e)
    rate_limited = is_rate_limited(e)
    assert c.retryable is (not non_retryable)
    assert c.rate_limited is rate_limited
    assert c.context_window is is_context_window_exceeded(e)
    assert c.retry_after == parse_retry_after(e)
    assert c.content_filter is is_content_filter(e)
    expected = (
        "content_filter"
        if c.content_filter
        else "rate_limited_non_retryable"
        if rate_limited and non_retryable
        else "rate_limited"
        if rate_limited
        else "non_retryable"
        if non_retryable
        else "retryable"
    )
    assert c.reason == expected


def test_hint_keys_cover_every_hint() -> None:
    """Every content-filter, context-window and tool-schema hint contains a prefilter key."""
    hints = _CONTENT_FILTER_HINTS + _CONTEXT_WINDOW_HINTS + _TOOL_SCHEMA_HINTS
    for hint in hints:
        assert any(key in hint for key in _HINT_KEYS), hint
    for prefix in _RETRY_AFTER_PREFIXES:
        assert "retry" in prefix or "reset after " in prefix, prefix


@given(st.one_of(_messages, st.sampled_from(_HINT_KEYS)))
def test_hint_prefilter_is_any_key(text: str) -> None:
    """The written-out prefilter says exactly whether some key is in the text."""
    lower = text.lower()
    assert _may_hint(lower) is any(key in lower for key in _HINT_KEYS)


@given(_errors())
def test_classify_invariants(e: BaseException) -> None:
    """Recoverable errors are never non-retryable and retry hints are non-negative."""
    recoverable = is_context_window_exceeded(e) or is_tool_schema_error(e)
    if recoverable and not is_rate_limited(e) and not is_content_filter(e):
        assert classify(e).retryable
    if is_content_filter(e):
        assert not classify(e).retryable
    ra = parse_retry_after(e)
    assert ra is None or ra >= 0.0


# ── content filter ───────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "message",
    [
        'openai API error (400 Bad Request): {"error": {"code": "content_policy_violation"}}',
        "azure API error (400 Bad Request): The response was filtered due to the prompt "
        "triggering Azure OpenAI's content management policy.",
        '{"error": {"code": "content_filter", "status": 400}}',
        "Your request was rejected as a result of our safety system.",
        "stream ended: finish_reason CONTENT_FILTER",
    ],
)
def test_content_filter_text_is_final(message: str) -> None:
    """Content-filter wording in any error classifies as a final content_filter refusal."""
    for e in (
        RuntimeError(message),
        ProviderError(message),
        ProviderError(message, status_code=400),
    ):
        c = classify(e)
        assert c.content_filter
        assert c.reason == "content_filter"
        assert not c.retryable
        assert is_content_filter(e)
        assert is_non_retryable(e)


def test_content_filter_wins_over_recoverable_text() -> None:
    """A refusal that also mentions the context window is still final, not truncatable."""
    e = ProviderError(
        "p API error (400 Bad Request): safety system; maximum context length", status_code=400
    )
    c = classify(e)
    assert (c.reason, c.retryable, c.content_filter, c.context_window) == (
        "content_filter",
        False,
        True,
        True,
    )


def test_content_filter_kind_is_structured() -> None:
    """ContentFilterError is a refusal whatever its text says."""
    e = ContentFilterError("p API error: refused", provider="p")
    assert is_content_filter(e)
    assert classify(e) == Classification("content_filter", False, False, False, None, True)


def test_ordinary_errors_are_not_content_filter() -> None:
    """Errors without refusal wording keep content_filter False."""
    for message in ("500 Internal Server Error", "content too long", "filtered list"):
        assert not classify(err(message)).content_filter
        assert not is_content_filter(err(message))
