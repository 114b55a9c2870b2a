"""Helpers shared by the CLI commands: log capture and wording of fallbacks and errors."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from reliant import ProviderFallbackInfo

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "capture_reliant_logs",
    "describe_fallback",
    "say",
    "short_error",
]


def say(console: Console, message: str, style: str = "") -> None:
    """Print a message as is: no markup, no highlighting, no hard wrapping.

    ``soft_wrap`` leaves wrapping to the terminal, so a message piped into a
    log stays one line per line it was written as.
    """
    from rich.text import Text

    console.print(Text(message, style=style), soft_wrap=True)


_STATUS_RE = re.compile(r"\((\d{3})(?: ([^)]*))?\)")


@contextmanager
def capture_reliant_logs(
    on_record: Callable[[logging.LogRecord], None], level: int = logging.INFO
) -> Iterator[None]:
    """Send the ``reliant`` logger's records (with their ``extra`` fields) to ``on_record``.

    The logger's level is lowered to ``level`` for the duration so the INFO
    "recovered" records come through, and restored afterwards.
    """

    class _Tap(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            on_record(record)

    logger = logging.getLogger("reliant")
    tap = _Tap(level)
    previous = logger.level
    logger.addHandler(tap)
    if previous == logging.NOTSET or previous > level:
        logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(tap)
        logger.setLevel(previous)


def describe_fallback(info: ProviderFallbackInfo) -> str:
    """One sentence saying who served a request and who failed before.

    Examples: ``served by backup (model claude-x) after primary (model gpt-x) failed``.
    """
    same_provider = info.actual_provider == info.requested_provider
    same_model = info.actual_model == info.requested_model
    if same_provider and same_model:
        return (
            f"served by {info.actual_provider} (model {info.actual_model}) "
            "after a retry or a shortened history"
        )
    if same_provider:
        return (
            f"served by {info.actual_provider} (model {info.actual_model}) "
            f"after model {info.requested_model} failed"
        )
    primary = [a for a in info.attempts if a.provider == info.requested_provider]
    # The id the primary was sent, like the served model's: not the requested name.
    sent = primary[0].model if primary else info.requested_model
    if primary and all(a.reason == "hedge_lost" for a in primary):
        why = "was slower (hedged)"
    elif primary and all(a.reason == "circuit_open" for a in primary):
        why = "was skipped (circuit open)"
    else:
        why = "failed"
    return (
        f"served by {info.actual_provider} (model {info.actual_model}) "
        f"after {info.requested_provider} (model {sent}) {why}"
    )


def short_error(detail: str, limit: int = 100, provider: str | None = None) -> str:
    """A compact form of a sanitized error: ``429 Too Many Requests``, else its message.

    A leading ``provider`` name (the trail already says whose error it is)
    is dropped, and a long text is cut at a word boundary, never mid-word.
    """
    if provider and detail.startswith(provider):
        detail = detail[len(provider) :].lstrip(" :")
    status = _STATUS_RE.search(detail)
    message = _json_message(detail)
    text = " ".join(x for x in status.groups() if x) if status else message or detail
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit - 3)
    return text[: cut if cut > limit // 2 else limit - 3].rstrip(" ,;:") + "..."


def _json_message(detail: str) -> str | None:
    start = detail.find("{")
    if start < 0:
        return None
    try:
        payload = json.loads(detail[start:])
    except ValueError:
        match = re.search(r'"message"\s*:\s*"([^"]*)"', detail)
        return match.group(1) if match else None
    if isinstance(payload, dict):
        inner = payload.get("error", payload)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return None
