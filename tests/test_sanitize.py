"""Tests for reliant.sanitize_api_error and the failure-trail whitespace collapse."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from reliant import ProviderError, sanitize_api_error
from reliant._sanitize import MAX_ERROR_CHARS, collapse_whitespace

PREFIXES = ("sk-", "xoxb-", "xoxp-", "ghp_", "gho_", "ghu_", "github_pat_", "AIza")
TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:"

# Pieces that make random text likely to hit every branch of the sanitizer.
_FRAGMENTS = st.sampled_from(
    [
        *PREFIXES,
        "Bearer ",
        "bearer\t",
        "?key=",
        "&api_key=",
        "&token=",
        "%20",
        "task-",
        " ",
        "\n",
        "-",
        "_",
        ".",
        ":",
        '"',
        "&",
        "[REDACTED]",
        '"api_key": "',
        '"X-API-KEY":"',
        '"\u017fecret": "',  # long s
        '"author\u0131zation":"',  # dotless i
        '"AUTHOR\u0130ZATION" : "',  # dotted capital I
        '"Password":"',
        '"access_token":"',
        "=",
    ]
)
_MIXED_TEXT = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=8)), max_size=80).map("".join)


# -- secret prefixes -----------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_each_prefix_is_redacted_with_its_tail(prefix: str) -> None:
    """Every known secret prefix is replaced, together with its tail, by [REDACTED]."""
    text = f"Incorrect API key provided: {prefix}abc123XYZ789 (check your settings)"
    assert sanitize_api_error(text) == (
        "Incorrect API key provided: [REDACTED] (check your settings)"
    )


@pytest.mark.parametrize("prefix", PREFIXES)
def test_bare_prefix_stays(prefix: str) -> None:
    """A prefix with nothing after it is not a secret and is left alone."""
    assert sanitize_api_error(f"keys look like {prefix} followed by more") == (
        f"keys look like {prefix} followed by more"
    )
    assert sanitize_api_error(f"ends with {prefix}") == f"ends with {prefix}"


def test_token_runs_on_through_dash_underscore_dot_colon() -> None:
    """The token continues over letters, digits and - _ . : so no piece of it survives."""
    assert sanitize_api_error("key sk-proj-AB_cd.12:ef-9 end") == "key [REDACTED] end"


@pytest.mark.parametrize("stop", ["/", ",", '"', "'", " ", "@", "!", ")", "\n", "}", "="])
def test_token_stops_at_other_chars(stop: str) -> None:
    """The token ends at the first character outside [A-Za-z0-9-_.:]."""
    assert sanitize_api_error(f"sk-abc123{stop}tail") == f"[REDACTED]{stop}tail"


def test_several_tokens_all_redacted() -> None:
    """Every token in the text is redacted, not just the first."""
    text = '{"a": "ghp_one", "b": "xoxb-two-three", "c": "AIzaFour"}'
    assert sanitize_api_error(text) == '{"a": "[REDACTED]", "b": "[REDACTED]", "c": "[REDACTED]"}'


@pytest.mark.parametrize("text", ["task-123 failed", "disk-full", "ask-me", "mask-1: ok"])
def test_prefix_inside_longer_word_not_redacted(text: str) -> None:
    """A prefix that is the tail of a longer word (e.g. "task-123") is not a secret."""
    assert sanitize_api_error(text) == text


@pytest.mark.parametrize("encoded", ["%20", "%3D", "%3A", "%2F", "%3d"])
def test_prefix_after_percent_escape_is_redacted(encoded: str) -> None:
    """A key glued to a URL escape (e.g. "Bearer%20sk-...") is still redacted."""
    assert sanitize_api_error(f"auth{encoded}sk-secret123 x") == f"auth{encoded}[REDACTED] x"


# -- Bearer and query strings --------------------------------------------------


@pytest.mark.parametrize("word", ["Bearer", "bearer", "BEARER", "BeArEr"])
def test_bearer_token_redacted_case_insensitively(word: str) -> None:
    """`Bearer <token>` loses its token whatever the case of the keyword, keeping the keyword."""
    text = f"Authorization: {word} eyJhbGciOi.J9+abc/def= rejected"
    assert sanitize_api_error(text) == f"Authorization: {word} [REDACTED] rejected"


def test_bearer_url_encoded_redacted() -> None:
    """`Bearer%20<token>` (a URL-encoded header echo) loses its token too."""
    assert sanitize_api_error("h=Bearer%20opaqueTOKEN123&x=1") == "h=Bearer [REDACTED]&x=1"


def test_bearer_with_prefixed_token() -> None:
    """A prefixed key after Bearer is redacted once, leaving a single marker."""
    assert sanitize_api_error("Bearer sk-abc") == "Bearer [REDACTED]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /v1/models?key=s3cr3t&alt=json", "GET /v1/models?key=[REDACTED]&alt=json"),
        ("GET /x?alt=json&api_key=s3cr3t failed", "GET /x?alt=json&api_key=[REDACTED] failed"),
        ("url https://h/p?KEY=abc", "url https://h/p?KEY=[REDACTED]"),
        ('GET /x?a=1&access_token=t0k"', 'GET /x?a=1&access_token=[REDACTED]"'),
        ("GET /x?api-key=abc", "GET /x?api-key=[REDACTED]"),
    ],
)
def test_query_key_values_redacted(text: str, expected: str) -> None:
    """?key= / &api_key= / &access_token= query values are redacted up to & or whitespace."""
    assert sanitize_api_error(text) == expected


def test_unrelated_query_params_kept() -> None:
    """Query parameters that do not name a key are left alone."""
    text = "GET /x?monkey=1&keys=2&alt=json"
    assert sanitize_api_error(text) == text


# -- the 500-character cut -----------------------------------------------------


def test_empty_text_unchanged() -> None:
    """The empty string stays empty."""
    assert sanitize_api_error("") == ""


def test_exactly_500_chars_not_cut() -> None:
    """Text of exactly 500 characters is returned whole, without an ellipsis."""
    text = "a" * MAX_ERROR_CHARS
    assert MAX_ERROR_CHARS == 500
    assert sanitize_api_error(text) == text


def test_501_chars_cut_with_ellipsis() -> None:
    """Text longer than 500 characters is cut to 500 and "..." is appended."""
    assert sanitize_api_error("a" * 499 + "bc") == "a" * 499 + "b..."


def test_redaction_happens_before_cut() -> None:
    """A key straddling position 500 is redacted first, so no partial key can leak."""
    text = "x" * 495 + " sk-" + "A" * 20 + " tail"
    out = sanitize_api_error(text)
    assert out == "x" * 495 + " [RED..."
    assert "sk-" not in out
    assert "A" not in out


def test_redaction_shrinking_text_avoids_cut() -> None:
    """The cut applies to the redacted text: a long key can bring it under the limit."""
    text = "error: sk-" + "k" * 600
    assert sanitize_api_error(text) == "error: [REDACTED]"


def test_provider_error_stores_sanitized_message_and_body() -> None:
    """ProviderError sanitizes both its message and its body before storing them."""
    err = ProviderError(
        "OpenAI API error (401 Unauthorized): bad key sk-live-123",
        provider="openai",
        status_code=401,
        body='{"error": "Incorrect API key sk-live-123", "pad": "' + "p" * 600 + '"}',
    )
    assert str(err) == "OpenAI API error (401 Unauthorized): bad key [REDACTED]"
    assert err.body is not None
    assert "sk-live" not in err.body
    assert err.body.startswith('{"error": "Incorrect API key [REDACTED]", "pad": "ppp')
    assert err.body.endswith("...")
    assert len(err.body) == 503
    assert ProviderError("plain").body is None


# -- properties ----------------------------------------------------------------


@given(
    before=st.text(max_size=600),
    after=st.text(max_size=600),
    prefix=st.sampled_from(PREFIXES),
    tail=st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=60),
)
def test_secret_never_survives(before: str, after: str, prefix: str, tail: str) -> None:
    """Whatever surrounds it, a prefixed secret never appears in the output."""
    # The surrounding text must not carry the prefix itself: a prefix glued to
    # a word there is (by design) not a secret and could legitimately survive.
    assume(prefix not in before and prefix not in after)
    secret = prefix + tail
    out = sanitize_api_error(f"{before} {secret}{after}")
    assert secret not in out
    assert prefix + tail[0] not in out


@given(st.one_of(st.text(max_size=2000), _MIXED_TEXT))
def test_output_never_longer_than_503(text: str) -> None:
    """The output is at most 500 characters plus the "..." marker."""
    assert len(sanitize_api_error(text)) <= MAX_ERROR_CHARS + 3


@given(st.one_of(st.text(max_size=MAX_ERROR_CHARS), _MIXED_TEXT))
def test_idempotent_for_short_input(text: str) -> None:
    """Sanitizing an already-sanitized text of <= 500 characters changes nothing."""
    assume(len(text) <= MAX_ERROR_CHARS)
    once = sanitize_api_error(text)
    assert sanitize_api_error(once) == once


# -- collapse_whitespace -------------------------------------------------------


def test_collapse_whitespace_joins_runs() -> None:
    """Runs of spaces, tabs and newlines become one space, and the ends are stripped."""
    assert collapse_whitespace("  a\n\n b\t\tc \r\n") == "a b c"


@given(st.one_of(st.text(), st.text(alphabet=" \t\r\n\x0b\x0c\u2028\u00a0ab")))
def test_collapse_whitespace_single_line(text: str) -> None:
    """The result has no double spaces, no line breaks, no edge spaces, and the same words."""
    out = collapse_whitespace(text)
    assert "  " not in out
    assert "\n" not in out
    assert "\r" not in out
    assert out == out.strip()
    assert out.split() == text.split()


@given(st.one_of(st.text(), st.text(alphabet=" \t\n\x1c\x85\u00a0\u2028\u3000\x00ab")))
@example(" a")
@example("a ")
@example("a\u00a0b")
def test_collapse_whitespace_fast_path_changes_nothing(text: str) -> None:
    """The one-line fast path gives what the regex substitution gives."""
    assert collapse_whitespace(text) == re.sub(r"\s+", " ", text).strip()


def test_json_credential_fields_are_redacted() -> None:
    """A JSON string field named like a credential loses its value, whatever its shape."""
    out = sanitize_api_error('{"api_key": "custom-Key-123", "apiKey":"q", "x": "keep"}')
    assert out == '{"api_key": "[REDACTED]", "apiKey":"[REDACTED]", "x": "keep"}'


def test_forgetting_while_registering_never_deadlocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key forgotten by a finalizer while register_secret holds its lock (GC) never deadlocks."""
    import threading

    from reliant import _sanitize

    forget_a = _sanitize.register_secret("first-secret-abcdef")
    real_rebuild = _sanitize._rebuild

    def rebuild_during_gc() -> None:
        forget_a()  # what a provider's weakref finalizer does when the GC runs here
        real_rebuild()

    monkeypatch.setattr(_sanitize, "_rebuild", rebuild_during_gc)
    forgets: list[Callable[[], None]] = []
    thread = threading.Thread(
        target=lambda: forgets.append(_sanitize.register_secret("second-secret-abcdef")),
        daemon=True,
    )
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "register_secret deadlocked"
    monkeypatch.undo()
    forget_c = _sanitize.register_secret("third-secret-abcdef")  # applies the queued forget
    assert "first-secret-abcdef" not in _sanitize._secrets
    assert _sanitize.scrub_secrets("second-secret-abcdef") == "[REDACTED]"
    for forget in (*forgets, forget_c):
        forget()
    assert not any("secret-abcdef" in s for s in _sanitize._secrets)


@given(
    st.one_of(
        st.text(max_size=600),
        _MIXED_TEXT,
        st.text(alphabet="BbEeAaRr \t%20skxobghpu_-AIza:.", max_size=80),
    )
)
# Field names whose lowered spelling loses the letter IGNORECASE still matches.
@example('{"\u017fecret": "hunter22"}')
@example('{"author\u0131zation":"Basic abc"}')
@example('{"AUTHOR\u0130ZATION" : "Basic abc"}')
def test_substring_prefilters_change_nothing(text: str) -> None:
    """Skipping a pattern whose literal is absent gives what running every pattern gives."""
    from reliant import _sanitize as s

    secrets = s._secrets_re
    expected = text if secrets is None else secrets.sub("[REDACTED]", text)
    expected = s._TOKEN_RE.sub("[REDACTED]", expected)
    expected = s._BEARER_RE.sub(r"\1 [REDACTED]", expected)
    expected = s._QUERY_RE.sub(r"\1[REDACTED]", expected)
    expected = s._JSON_FIELD_RE.sub(r"\1[REDACTED]", expected)
    if len(expected) > MAX_ERROR_CHARS:
        expected = expected[:MAX_ERROR_CHARS] + "..."
    assert sanitize_api_error(text) == expected


_NAMES = st.one_of(
    st.sampled_from(["p", "openai", "my-gateway", "bearer", "Bearer x", "sk-live1", "a?key=b"]),
    st.text(min_size=1, max_size=12),
)


@given(
    name=_NAMES,
    body=st.one_of(st.text(max_size=700), _MIXED_TEXT),
    status=st.sampled_from([400, 401, 429, 500, 503]),
)
# Cut at 500 characters right after a bare prefix: "AIza" + "..." reads as a
# key the second time round, so a cut body must take the constructor's way.
@example(name="p", body="x" * 495 + " AIza tail", status=500)
def test_a_leaf_status_error_is_the_same_either_way(name: str, body: str, status: int) -> None:
    """The error a leaf builds from a scrubbed body equals the one the constructor builds."""
    import httpx2

    from reliant.providers import OpenAICompatible

    provider = OpenAICompatible(name=name, base_url="http://127.0.0.1:1/v1", api_key="k")
    response = httpx2.Response(status, headers={"retry-after": "3"}, content=body.encode())
    fast = provider._status_error(response, body)
    provider._plain_name = False  # the constructor's way: every text sanitized again
    slow = provider._status_error(response, body)

    def facts(err: ProviderError) -> tuple[object, ...]:
        return (
            type(err),
            str(err),
            err.body,
            err.provider,
            err.status_code,
            err.retry_after,
            err.kind,
        )

    assert facts(fast) == facts(slow)
