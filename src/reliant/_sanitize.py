"""Scrubbing secrets out of error text before it is stored, logged or raised.

Upstream error bodies sometimes echo the credential that was sent (a bad key
in a 401, a proxy that reflects headers), so every body and message goes
through :func:`sanitize_api_error` before it reaches an exception, a log line
or a failure trail.

Algorithm: a token is a known secret prefix (``sk-``, ``xoxb-``, ``xoxp-``,
``ghp_``, ``gho_``, ``ghu_``, ``github_pat_``, ``AIza``) that does not sit
inside a longer word, followed by at least one character of
``[A-Za-z0-9-_.:]``; the whole token becomes ``[REDACTED]``. "Inside a longer
word" means glued to a letter or digit on the left (``task-123`` is no key);
a key right after a percent-escape (``key%3Dsk-...``) is still redacted. A bare prefix
(nothing after it) is left alone, as in the seed, because it is not a secret.
``Bearer <token>``, ``key=``/``api_key=``/``access_token=`` query values and
JSON string fields named like credentials (``"api_key": "..."``) are
redacted too, since those carry keys of any shape. Finally the text is cut
to 500 characters and ``...`` is appended when something was cut, so one huge
HTML error page cannot flood a log.
"""

from __future__ import annotations

import re

__all__ = ["MAX_ERROR_CHARS", "collapse_whitespace", "sanitize_api_error"]

MAX_ERROR_CHARS = 500

_PREFIXES = ("sk-", "xoxb-", "xoxp-", "ghp_", "gho_", "ghu_", "github_pat_", "AIza")
_TOKEN_RE = re.compile(
    r"(?:(?<![A-Za-z0-9])|(?<=%[0-9A-Fa-f]{2}))(?:"
    + "|".join(re.escape(p) for p in _PREFIXES)
    + r")[A-Za-z0-9\-_.:]+"
)
_BEARER_RE = re.compile(r"(?i)\b(bearer)(?:\s+|%20)[A-Za-z0-9\-_.:~+/=]+")
_QUERY_RE = re.compile(r"(?i)([?&](?:key|api[_-]?key|access_token|token)=)[^&\s\"']+")
_JSON_FIELD_RE = re.compile(
    r"(?i)(\"(?:api[_-]?key|apikey|access_token|secret|password|authorization|x-api-key)\""
    r"\s*:\s*\")[^\"]+"
)
_WS_RE = re.compile(r"\s+")


def sanitize_api_error(text: str) -> str:
    """Redact credentials from ``text`` and cap it at 500 characters.

    Args:
        text: Any error text that may have come from an upstream service.

    Returns:
        The text with secret-looking tokens replaced by ``[REDACTED]``, cut
        to 500 characters with ``...`` appended if it was longer.
    """
    if not text:
        return text
    text = _TOKEN_RE.sub("[REDACTED]", text)
    text = _BEARER_RE.sub(r"\1 [REDACTED]", text)
    text = _QUERY_RE.sub(r"\1[REDACTED]", text)
    text = _JSON_FIELD_RE.sub(r"\1[REDACTED]", text)
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + "..."
    return text


def collapse_whitespace(text: str) -> str:
    """Join every run of whitespace into one space, as failure trails need one line each."""
    return _WS_RE.sub(" ", text).strip()
