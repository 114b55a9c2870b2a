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

Known secrets
-------------
Keys of any shape (custom gateways hand out keys that look like nothing in
particular) are scrubbed by exact match: the HTTP providers register their
key with :func:`register_secret`, and from then on every text that goes
through :func:`sanitize_api_error` (every ``ProviderError``, failure trail
and log line of reliant) has it replaced, in each spelling a server or a
library may echo it back in: as is, JSON-escaped (``\\/`` for ``/``),
URL-encoded (``quote`` and ``quote_plus``, either hex case), and base64 of
``user:key`` when the key travels as HTTP basic auth. A custom provider that
quotes its own key back in its errors can register it the same way.
Registration is counted, so two providers sharing a key may come and go
independently; keys shorter than six characters (``EMPTY``) are not
secrets and are never registered, or ordinary words would be mangled.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
from collections.abc import Callable
from urllib.parse import quote, quote_plus

__all__ = [
    "MAX_ERROR_CHARS",
    "cap_error_text",
    "collapse_whitespace",
    "redact",
    "register_secret",
    "sanitize_api_error",
    "scrub_exception",
    "scrub_secrets",
    "secret_spellings",
]

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

MIN_SECRET_CHARS = 6
"""Shorter credentials (``EMPTY``, ``none``) are not treated as secrets."""

_lock = threading.Lock()
_secrets: dict[str, int] = {}
_secrets_re: re.Pattern[str] | None = None


def secret_spellings(secret: str, user: str | None = None) -> set[str]:
    """Every spelling of ``secret`` that may come back in an error text.

    As is, JSON-escaped (with and without ``\\/`` for ``/``), URL-encoded
    with ``quote`` (``safe=""`` and the default ``safe="/"``) and
    ``quote_plus``, and, with ``user``, base64 of ``user:secret`` (HTTP basic
    auth). Hex case of the percent-escapes is covered by matching them case
    insensitively in :func:`sanitize_api_error`.
    """
    escaped = json.dumps(secret)[1:-1]
    spellings = {
        secret,
        escaped,
        escaped.replace("/", "\\/"),
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
    }
    if user is not None:
        spellings.add(base64.b64encode(f"{user}:{secret}".encode()).decode("ascii"))
    return {s for s in spellings if len(s) >= MIN_SECRET_CHARS}


def register_secret(secret: str | None, user: str | None = None) -> Callable[[], None]:
    """Scrub ``secret`` (in every spelling) from all sanitized text from now on.

    The HTTP providers register their own keys. A custom provider whose
    key no pattern would recognise (a gateway's opaque token, a password)
    registers it, and from then on reliant scrubs it from every error
    message, failure trail, log line and exception chain it keeps or
    raises. Call the returned function to undo the registration (say, when
    the provider is closed); registrations are counted, so two users of
    one key may come and go independently.

    Example::

        forget = reliant.register_secret(os.environ["GATEWAY_TOKEN"])
        try:
            ...
        finally:
            forget()

    Args:
        secret: An API key or password; None or one shorter than six
            characters is ignored.
        user: The basic-auth user name that goes with it, if any.

    Returns:
        A function that forgets the registration again (idempotent).
    """
    if not secret or len(secret) < MIN_SECRET_CHARS:
        return lambda: None
    spellings = secret_spellings(secret, user)
    with _lock:
        for spelling in spellings:
            _secrets[spelling] = _secrets.get(spelling, 0) + 1
        _drain()
        _rebuild()
    done = False

    def forget() -> None:
        # Often called by a weakref finalizer, i.e. by the garbage collector,
        # which may run in the middle of register_secret on this very thread
        # while it holds the lock: waiting for the lock there would deadlock
        # (it did, under hypothesis). So forgetting only queues the spellings
        # (list.append is atomic) and applies them when the lock is free now,
        # or else at the next registration. A stale pattern only redacts a
        # key that is no longer used, which is harmless.
        nonlocal done
        if done:
            return
        done = True
        _forgotten.append(spellings)
        if _lock.acquire(blocking=False):
            try:
                _drain()
                _rebuild()
            finally:
                _lock.release()

    return forget


_forgotten: list[set[str]] = []


def _drain() -> None:
    while _forgotten:
        for spelling in _forgotten.pop():
            left = _secrets.get(spelling, 0) - 1
            if left > 0:
                _secrets[spelling] = left
            else:
                _secrets.pop(spelling, None)


def _rebuild() -> None:
    global _secrets_re
    if not _secrets:
        _secrets_re = None
        return
    # Longest first, so a spelling that contains another is replaced whole.
    ordered = sorted(_secrets, key=len, reverse=True)
    _secrets_re = re.compile("|".join(re.escape(s) for s in ordered), re.IGNORECASE)


def scrub_secrets(text: str) -> str:
    """``text`` with every registered secret (in every spelling) replaced."""
    pattern = _secrets_re
    return text if pattern is None else pattern.sub("[REDACTED]", text)


def sanitize_api_error(text: str) -> str:
    """Redact credentials from ``text`` and cap it at 500 characters.

    Args:
        text: Any error text that may have come from an upstream service.

    Returns:
        The text with secret-looking tokens replaced by ``[REDACTED]``, cut
        to 500 characters with ``...`` appended if it was longer.
    """
    return cap_error_text(redact(text)) if text else text


def redact(text: str) -> str:
    """``text`` with every secret :func:`sanitize_api_error` knows replaced, not cut."""
    if not text:
        return text
    pattern = _secrets_re
    if pattern is not None:
        text = pattern.sub("[REDACTED]", text)
    # The token and Bearer patterns start with a lookbehind or a word
    # boundary, which makes the regex engine try every position: a plain
    # substring test first (exact: neither can match without its literal;
    # "bearer" has no letter with a special case fold) skips them for the
    # usual error text, which holds neither. That halved the cost of a
    # ProviderError.
    # The query and JSON-field patterns likewise: a query value needs its
    # "=", and every field name holds one of _FIELD_KEYS once lowered (the
    # keys avoid "s" and "i", the two letters here that IGNORECASE matches
    # to characters whose lower() differs: U+017F and U+0130/U+0131).
    if any(prefix in text for prefix in _PREFIXES):
        text = _TOKEN_RE.sub("[REDACTED]", text)
    lower = text.lower()
    if "bearer" in lower:
        text = _BEARER_RE.sub(r"\1 [REDACTED]", text)
    if "=" in text:
        text = _QUERY_RE.sub(r"\1[REDACTED]", text)
    if any(key in lower for key in _FIELD_KEYS):
        text = _JSON_FIELD_RE.sub(r"\1[REDACTED]", text)
    return text


# One of these is in every name _JSON_FIELD_RE redacts (api_key, apikey,
# x-api-key, access_token, secret, password, authorization), lowered.
_FIELD_KEYS = ("key", "token", "ecret", "word", "author")


def cap_error_text(text: str) -> str:
    """``text`` cut to 500 characters, with ``...`` appended if something was cut."""
    if len(text) > MAX_ERROR_CHARS:
        return text[:MAX_ERROR_CHARS] + "..."
    return text


def collapse_whitespace(text: str) -> str:
    """Join every run of whitespace into one space, as failure trails need one line each."""
    # Most texts are one line already. Every character ``\s`` matches other
    # than the ASCII space is non-printable (categories Cc, Zs, Zl, Zp), so a
    # printable text without a double or an outer space has nothing to join:
    # two quick scans instead of a regex substitution.
    if "  " not in text and text.isprintable() and text[:1] != " " and text[-1:] != " ":
        return text
    return _WS_RE.sub(" ", text).strip()


# -- exception chains ------------------------------------------------------------------
#
# A message is only one place a key can hide. ``traceback.format_exception``
# and ``logger.exception`` print every exception below the one raised (its
# ``__cause__`` and ``__context__``, an ExceptionGroup's members, notes
# added with ``add_note``), and a debugger or an error tracker reads the
# objects they keep: an httpx2 transport error keeps the request it was
# sending, headers and all. So every error reliant records or raises is
# scrubbed in place, all the way down: string arguments and notes are
# redacted (not cut: a long message stays whole), a JSONDecodeError's
# ``doc`` too, and every credential header and key-bearing URL of a kept
# request is masked. Masking keeps the request (``err.request`` still tells
# what was sent, and where) rather than dropping it. Scrubbing is
# idempotent; it visits at most 64 exceptions, so a pathological chain
# costs a bounded walk.

CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "x-amz-security-token",
    }
)
"""Request headers whose values are credentials, whatever their shape (lower case)."""

_MAX_CHAIN = 64


def scrub_exception(exc: BaseException | None) -> None:
    """Scrub secrets, in place, from ``exc`` and every exception chained below it."""
    todo = [] if exc is None else [exc]
    seen: set[int] = set()
    while todo and len(seen) < _MAX_CHAIN:
        err = todo.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        _scrub_one(err)
        if err.__cause__ is not None:
            todo.append(err.__cause__)
        if err.__context__ is not None:
            todo.append(err.__context__)
        if isinstance(err, BaseExceptionGroup):
            todo.extend(err.exceptions)


def _scrub_one(err: BaseException) -> None:
    args = err.args
    if args and any(type(a) is str for a in args):
        cleaned = tuple(redact(a) if type(a) is str else a for a in args)
        if cleaned != args:
            err.args = cleaned
    notes = getattr(err, "__notes__", None)
    if type(notes) is list:
        notes[:] = [redact(n) if type(n) is str else n for n in notes]
    doc = getattr(err, "doc", None)
    if type(doc) is str:
        with contextlib.suppress(AttributeError):  # a read-only doc stays
            err.doc = redact(doc)  # type: ignore[attr-defined]
    # httpx2 keeps the request as ``_request`` (its ``request`` property
    # raises when none was set), and so does a status error's ``response``.
    try:
        owners = (err, getattr(err, "response", None))
    except Exception:  # a property of a foreign exception that raises
        owners = (err, None)
    for owner in owners:
        request = getattr(owner, "_request", None) if owner is not None else None
        if request is not None:
            _mask_request(request)


def _mask_request(request: object) -> None:
    headers = getattr(request, "headers", None)
    if headers is not None and hasattr(headers, "items") and hasattr(headers, "__setitem__"):
        try:
            for name, value in list(headers.items()):
                if name.lower() in CREDENTIAL_HEADERS and value != "[REDACTED]":
                    headers[name] = "[REDACTED]"
        except Exception:  # a foreign object that only looks like headers: leave it
            pass
    url = getattr(request, "url", None)
    if url is not None:
        text = str(url)
        cleaned = redact(text)
        if cleaned != text:
            with contextlib.suppress(Exception):  # an immutable or foreign request stays
                request.url = type(url)(cleaned)  # type: ignore[attr-defined]
