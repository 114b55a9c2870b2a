"""Typed reads of wire fields: the right type, or ``MalformedResponse`` naming the field.

A server can lie about any field: ``content`` an int, ``choices`` a dict,
a tool-call id a number, usage counts strings. Whatever reaches a
``StreamChunk``, ``TextDelta``, ``ToolCall`` or ``TokenUsage`` must be what
those records promise, so every field a provider reads goes through one of
these accessors. Each is a ``type(x) is ...`` test or two (JSON decoding
only ever produces exact ``str``/``int``/``list``/``dict``, never
subclasses), cheap enough for the per-event hot path; on a mismatch it
raises :class:`~reliant.providers._limits.MalformedResponse`, which the
provider turns into ``ProviderError(kind="malformed_response")`` with the
field's path in the message (``choices[0].delta.content is int, expected a
string``).

``None`` (or a missing key) is always allowed where the field is optional:
absence is the protocol's business, a wrong type is a lie.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from ._limits import MalformedResponse, ResponseTooLarge

__all__ = [
    "append_arguments",
    "arguments_object",
    "count",
    "field_path",
    "loads",
    "need_list",
    "need_object",
    "opt_list",
    "opt_object",
    "opt_str",
    "tool_call_id",
    "wrong",
]


def field_path(where: str, key: str) -> str:
    """``where.key``, or ``key`` at the top level."""
    return f"{where}.{key}" if where else key


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def wrong(path: str, value: Any, expected: str) -> MalformedResponse:
    """The error for field ``path`` holding ``value`` instead of ``expected``."""
    return MalformedResponse(
        f"malformed response: {path} is {_type_name(value)}, expected {expected}"
    )


def opt_str(obj: Mapping[str, Any], key: str, where: str = "") -> str | None:
    """``obj[key]`` if it is a string, None if absent or null; else malformed."""
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    raise wrong(field_path(where, key), value, "a string")


def opt_object(obj: Mapping[str, Any], key: str, where: str = "") -> dict[str, Any] | None:
    """``obj[key]`` if it is an object, None if absent or null; else malformed."""
    value = obj.get(key)
    if value is None or type(value) is dict:
        return value
    raise wrong(field_path(where, key), value, "an object")


def opt_list(obj: Mapping[str, Any], key: str, where: str = "") -> list[Any] | None:
    """``obj[key]`` if it is a list, None if absent or null; else malformed."""
    value = obj.get(key)
    if value is None or type(value) is list:
        return value
    raise wrong(field_path(where, key), value, "a list")


def need_object(value: Any, path: str) -> dict[str, Any]:
    """``value`` if it is an object; else malformed (``path`` names it)."""
    if type(value) is dict:
        return value
    raise wrong(path, value, "an object")


def need_list(value: Any, path: str) -> list[Any]:
    """``value`` if it is a list; else malformed (``path`` names it)."""
    if type(value) is list:
        return value
    raise wrong(path, value, "a list")


def count(obj: Mapping[str, Any], key: str, where: str = "") -> int | None:
    """A token count: a non-negative integer, None if absent or null; else malformed."""
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is int and value >= 0:
        return value
    raise wrong(field_path(where, key), value, "a non-negative integer")


def loads(text: str | bytes, what: str) -> Any:
    """``json.loads``, with bad or too deeply nested JSON as ``MalformedResponse``."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise MalformedResponse(f"malformed response: invalid JSON in {what}: {exc}") from None
    except RecursionError:
        raise MalformedResponse(
            f"malformed response: JSON in {what} is nested too deeply"
        ) from None


def append_arguments(parts: list[str], piece: Any, size: int, limit: int, path: str) -> int:
    """Add one fragment of a streamed tool call's arguments; the new accumulated size.

    Fragments must be strings; their total is capped at ``limit``
    (``max_tool_arguments_bytes``; counted in characters, which equal bytes
    for the ASCII JSON models send, and is refused at once when crossed).
    """
    if type(piece) is not str:
        raise wrong(path, piece, "a string")
    size += len(piece)
    if size > limit:
        raise ResponseTooLarge(f"tool call arguments larger than {limit} bytes")
    parts.append(piece)
    return size


_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]")


def tool_call_id(call_id: str, limit: int = 40) -> str:
    """A tool-call id in the form every provider accepts, the same for a call and its result.

    Ids travel between providers when a conversation that used tools is
    continued elsewhere: Anthropic requires ``^[a-zA-Z0-9_-]+$``, OpenAI at
    most 40 characters. An id already in that form is kept as it is (the
    common case); any other is mapped deterministically (characters outside
    the set become ``_``; a longer one becomes ``call_`` plus a hash of the
    original), so a tool call and the tool result that names it still match.
    """
    if len(call_id) <= limit and call_id and not _UNSAFE_ID.search(call_id):
        return call_id
    cleaned = _UNSAFE_ID.sub("_", call_id)
    if cleaned and len(cleaned) <= limit:
        return cleaned
    digest = hashlib.sha256(call_id.encode()).hexdigest()
    return f"call_{digest[: limit - 5]}"


def arguments_object(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as the object Anthropic and Gemini want.

    ``{}`` when empty; arguments that are not a JSON object (a model's
    broken JSON) are kept as ``{"arguments": <the text>}`` rather than lost.
    """
    if not arguments:
        return {}
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return {"arguments": arguments}
    return value if type(value) is dict else {"arguments": arguments}
