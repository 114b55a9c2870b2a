"""A fault-injecting fake LLM server on loopback, built on anyio and h11.

It speaks just enough of three wire protocols to drive real HTTP clients:

- ``POST /v1/chat/completions``: OpenAI-compatible, JSON or SSE (``data: {...}``
  chunks ending with ``data: [DONE]``; a usage chunk when
  ``stream_options.include_usage`` is set);
- ``POST /v1/messages``: Anthropic-compatible, JSON or SSE (``message_start``,
  ``ping``, ``content_block_start``/``_delta``/``_stop``, ``message_delta``,
  ``message_stop``; ``error`` for in-band errors);
- ``POST /model/{model}/converse`` and ``/model/{model}/converse-stream``:
  Amazon Bedrock's Converse (JSON) and ConverseStream (AWS event-stream
  frames), the model taken from the path; how each behaviour reads there is
  in :mod:`reliant.testing._fake_bedrock`;
- ``POST /v1beta/models/{model}:generateContent`` and
  ``:streamGenerateContent?alt=sse`` (also under Vertex AI's
  ``/v1/projects/{p}/locations/{l}/publishers/google/models/``): Gemini,
  rendered by :mod:`._fake_gemini`;
- ``POST /v1/responses``: the OpenAI Responses API, rendered by
  :mod:`._fake_responses`;
- ``POST /openai/v1/chat/completions`` and
  ``/openai/deployments/{deployment}/chat/completions?api-version=...``:
  Azure OpenAI, rendered by :mod:`._fake_azure`;
- ``GET /v1/models``: a small model list (for warm-ups).

Gemini and Azure deployment URLs name the model in the path: it chooses the
behaviour as a body's ``model`` does elsewhere.

It runs on the caller's own event loop, trio or asyncio (anyio's sockets,
task groups and clock), and only that loop's time is used (``anyio.sleep``,
``anyio.current_time``), so tests can run it on a virtual clock (trio's
``MockClock``, looptime on asyncio) with real loopback sockets: nothing
busy-waits, every wait is a sleep or a socket read.

Choosing a behaviour
--------------------
Each request gets a :class:`Behavior`. Programmatic scripts win:
``server.script("m", [...])`` for requests naming model ``"m"``, then
``server.script(None, [...])`` for every other model; a script is consumed
one behaviour per request and its last entry repeats. Without a script, the
model name itself is the behaviour, written ``kind[:arg]...`` with
``key=value`` arguments. A name that is plainly a model id (``gpt-4o``,
``claude-sonnet-4-5``, ``llama3.1:8b``) behaves as ``ok``. Everything else
gets a 400 that names the problem and the closest kind, so a test never
runs against a behaviour it did not ask for: a known kind with bad arguments
(``ok:chunk=2``: did you mean ``chunks``?), and a name that looks like a
behaviour but is none (``hang`` or ``timeout``: did you mean ``hang_headers``?;
``500`` or ``status=500``: ``status:500``; ``hang_header``, ``reset_``, a
bare ``key=value``). Such a 400 carries the ``x-reliant-fake-server-error``
header, which reliant's providers turn into a
:class:`~reliant.FakeServerSpecError`: final, never retried or failed over,
raised to the test as it is.

``ok``
    Answer normally: ``chunks`` pieces ``"tok0 "``, ``"tok1 "``, ... (default
    5). ``ok:chunks=200:ttft=0.05:gap=0.001`` sends 200 pieces, the first 50 ms
    after the headers, then one every 1 ms; ``ok:reasoning=2`` sends reasoning
    pieces ``"think0 "``, ``"think1 "`` first; ``ok:delay=2`` waits 2 s before
    the response headers.
``status:429:retry_after=3``
    HTTP 429 with ``retry-after: 3`` and a JSON error body shaped like the
    provider's (also ``retry_after_ms=1500``, ``message=...``). Any status
    works: ``status:401``, ``status:500``, ``status:503``, ``status:529``, ...
``inband_error``
    HTTP 200, ``after`` pieces (default 0), then an in-band error: a
    ``{"error": ...}`` data chunk (OpenAI) or ``event: error`` (Anthropic),
    carrying ``status`` (default 500; Anthropic error types follow it: 429
    ``rate_limit_error``, 529 ``overloaded_error``, ...). Non-streaming: a 200
    whose JSON body is the error.
``cut:after=3``
    Send 3 pieces, then close the connection cleanly (FIN) in the middle of
    the chunked body. Non-streaming: half the JSON body, then close.
``reset:after=3``
    Send 3 pieces, then reset the connection (``SO_LINGER`` 0).
``hang_headers``
    Read the request and never answer.
``hang_body``
    Send the headers (and ``after`` pieces), then stall: the stall-after-N
    behaviour (``hang_body:after=3``), for idle timeouts.
``malformed``
    After ``after`` pieces, a data line that is not JSON, then the rest and
    the terminator (so a lenient client is caught). Non-streaming: a 200 with
    a broken JSON body.
``empty``
    An SSE stream with only the terminator (``data: [DONE]`` /
    ``message_stop``); non-streaming: an empty answer.
``no_terminator``
    The stream's content, cleanly ended, but with nothing that says it is
    complete: no ``finish_reason`` chunk, no usage chunk and no
    ``data: [DONE]`` (OpenAI); no ``message_delta`` and no ``message_stop``
    (Anthropic). A client must treat it as broken.
``no_done``
    The whole stream with its ``finish_reason`` (OpenAI) or ``message_delta``
    with its ``stop_reason`` (Anthropic), cleanly ended, but without
    ``data: [DONE]`` / ``message_stop``, as some compatible servers do. A
    client may treat it as complete.
``not_sse``
    A JSON answer even when a stream was asked for.
``tools``
    Answer with ``calls`` (default 1) tool calls: the request's tools in turn
    (``get_weather`` if it offers none), arguments ``{"location": "Paris",
    "unit": "celsius"}`` streamed in three fragments. Other kinds send tool
    calls too when ``calls`` is given: ``cut:after=2:calls=1`` breaks after
    the text and the first argument fragment, in the middle of a tool call.
``content_filter``
    A safety refusal. OpenAI: HTTP 400 with OpenAI's ``content_policy_violation``
    body. Anthropic: a 200 answer without text whose ``stop_reason`` is
    ``refusal``. ``content_filter:after=3`` (either protocol; also
    ``content_filter:status=200`` on OpenAI for no text): ``after`` pieces, then
    the answer ends with ``finish_reason: "content_filter"`` /
    ``stop_reason: "refusal"``, terminated normally; non-streaming, the answer
    carries those pieces and that reason.
``reject_prefill``
    When the request's last message is an assistant message: HTTP 400
    ``invalid_request_error`` about it (Anthropic: "This model does not
    support assistant message prefill...", OpenAI-compatible: Mistral's
    "Expected last role User or Tool (or Assistant with prefix True)...").
    Otherwise it answers like ``ok`` (with the same arguments).
``context:2000``
    A 2000-character context window: a request whose message text (system
    prompt included) totals more gets the provider's context-length 400
    (OpenAI: code ``context_length_exceeded``, "This model's maximum context
    length is 2000 tokens. However, your messages resulted in N tokens...";
    Anthropic: "prompt is too long: N tokens > 2000 maximum"); otherwise it
    answers like ``ok``. ``context=N`` works on every kind
    (``cut:after=2:context=500``).

Finish reasons, model, error bodies
-----------------------------------
Answers end the way the real APIs end them: OpenAI ``finish_reason``
``stop`` / ``tool_calls`` / ``content_filter``, Anthropic ``stop_reason``
``end_turn`` / ``tool_use`` / ``refusal``; ``finish=length`` (or
``max_tokens``, ``pause_turn``, ...) sends that word instead. Every answer
reports a ``model``: the requested one, or ``served_model=...``. Error
bodies keep the real field types: OpenAI ``{"error": {"message", "type",
"param", "code"}}`` with ``code`` a string or null (``invalid_api_key``,
``model_not_found``, ``rate_limit_exceeded``, ...), never a number; an
OpenAI in-band error adds the status as an integer ``status`` member, as
Azure OpenAI does, since nothing else on the wire carries it.

Prefill (continuing a trailing assistant message)
-------------------------------------------------
When the request's last message is an assistant message whose text starts
the behaviour's full answer (as sent, or with its trailing whitespace
stripped, since Anthropic clients must strip it), the Anthropic endpoint
streams only the rest of the answer, cut along the original piece
boundaries; the OpenAI endpoint does so only with ``prefill`` in the spec
(``ok:prefill``, as vLLM with ``continue_final_message``), and otherwise
answers anew from the start, as OpenAI's API does. ``overlap=N`` first
repeats the last N characters of the matched prefill as a piece of its own
(``ok:prefill:overlap=4``), to test overlap trimming. ``after=N`` and the
faults count the continuation's pieces (``cut:after=1:prefill``). A
prefill that does not start the answer gets the whole answer.

Arguments combine freely (``inband_error:after=2:status=529``); every field
of :class:`Behavior` except ``kind`` and ``headers`` can be given this way,
a boolean one also bare (``ok:prefill``).
The ``status`` behaviour with status 200, a ``body`` and a ``content-type``
header sends any raw body, for wire-level tests.

``after=N`` counts content pieces (text, reasoning and tool-argument
fragments), not the protocol preamble (the OpenAI role chunk, Anthropic's
``message_start``, ``ping`` and block starts), which is sent with the headers.
With ``gap=0`` pieces are coalesced into one write.

Usage is deterministic: ``input_tokens`` (default 10), ``cached_tokens``
(default 0) and output tokens = number of text pieces in this answer (a
continuation's or a refusal's own pieces) + reasoning pieces.

Deployments (routing across several deployments of one model)
--------------------------------------------------------------
``server.deployment("east", ttft=0.05, rpm=600, tpm=None, prefix_cache=True)``
declares a deployment, reachable under the path prefix ``/d/east`` before
any route above (``/d/east/v1/chat/completions``, ``/d/east/v1/messages``,
...; ``server.deployment_url("east")`` is its root), and a later call
changes its settings while the server runs (arguments left out are kept).
Per deployment: ``ttft`` seconds before the response (headers, the
stream's preamble and first piece, or the JSON answer) of every request;
``rpm``/``tpm`` limits kept as token buckets
on the loop clock, reported on every response in the provider's own
headers (``x-ratelimit-*-requests``/``-tokens``, or Anthropic's
``anthropic-ratelimit-*``) and enforced with 429s in the provider's error
shape, with ``retry-after``; a prompt-prefix cache reporting
``x-fake-cache: hit|miss`` and cached tokens in the usage. A prefix naming
no declared deployment gets a 404 (and the fake-server-error header) that
names it. ``server.deployment_stats(name)`` counts requests, 429s, cache
hits and misses and tokens; ``server.rate_limited`` all 429s sent by
limits; ``POST``/``GET /_fake/deployments/<name>`` does the same over HTTP.
The algorithms, the token estimate and the header formats are in
:mod:`reliant.testing._fake_deployments`.

Records
-------
``server.requests`` lists every request as a :class:`FakeRequest` (in
arrival order; ``received_at`` is the loop time the request was complete;
``deployment`` the ``/d/<name>`` it came through, its ``path`` without it).
``server.disconnects`` lists ``(request_index, loop_time)`` whenever a client
closed a connection, with the index of the last request on it; the close is
seen at once, even while the server sleeps between chunks, because a watcher
task reads the socket for EOF during every response. ``server.aborted`` lists
the indices of requests whose response the client abandoned before it ended.
"""

from __future__ import annotations

import difflib
import email.utils
import http
import json
import logging
import re
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, NamedTuple, TypeAlias, get_args

import anyio
import h11
from anyio.abc import Listener, SocketAttribute, SocketStream

from .._exceptions import FAKE_SERVER_SPEC_HEADER
from ._fake_deployments import DeploymentControls, Deployments, Style, Visit, split_deployment
from ._raw import RawResponse, RawScripts, send_raw

__all__ = [
    "Behavior",
    "BehaviorKind",
    "Disconnect",
    "FakeLLMServer",
    "FakeRequest",
    "serve_fake_llm",
]

logger = logging.getLogger("reliant.testing.fake_server")

BehaviorKind: TypeAlias = Literal[
    "ok",
    "status",
    "inband_error",
    "cut",
    "reset",
    "hang_headers",
    "hang_body",
    "malformed",
    "empty",
    "no_terminator",
    "no_done",
    "not_sse",
    "tools",
    "content_filter",
    "reject_prefill",
    "context",
]
_KINDS: frozenset[str] = frozenset(get_args(BehaviorKind))

_DEFAULT_ARGUMENTS = '{"location": "Paris", "unit": "celsius"}'
_WORD_RE = re.compile(r"\s*\S+\s*")


@dataclass(frozen=True, slots=True)
class Behavior:
    """What the fake server does with one request.

    Attributes:
        kind: The behaviour (see the module docstring).
        chunks: Number of text pieces ``"tok{i} "``; None means 5 (0 for ``tools``).
        text: Answer text instead of ``tok`` pieces, streamed word by word.
        reasoning: Number of reasoning pieces ``"think{i} "`` before the text.
        ttft: Seconds between the response headers and the first piece.
        gap: Seconds between pieces.
        delay: Seconds before the response headers.
        after: Pieces sent before the fault of ``cut``, ``reset``, ``hang_body``,
            ``inband_error`` and ``malformed``.
        status: HTTP status of ``status``; error status carried by ``inband_error``.
        retry_after: Value of a ``retry-after`` header (seconds or an HTTP date).
        retry_after_ms: Value of a ``retry-after-ms`` header.
        headers: Extra response headers.
        message: Error message text of ``status`` and ``inband_error``.
        body: Raw response body of ``status``, replacing the JSON error.
        calls: Number of tool calls; None means 1 for ``tools`` and 0 for
            every other kind (``cut:after=2:calls=1`` breaks inside a tool call).
        tool_name: Name of every tool call; None takes the request's tools.
        tool_arguments: Arguments JSON of every tool call.
        input_tokens: Reported input tokens.
        cached_tokens: Reported cached input tokens.
        finish: The provider's own finish word sent instead of the natural one
            (``length``, ``function_call``, ``max_tokens``, ``pause_turn``, ...).
        served_model: The model id the server reports instead of the requested one.
        prefill: OpenAI endpoint: continue a trailing assistant message (as
            vLLM does) instead of answering anew (as OpenAI does). The
            Anthropic endpoint always continues.
        overlap: When continuing, first repeat the last ``overlap`` characters
            of the assistant message, as a piece of their own.
        context: Context window in characters: a request whose message text
            totals more is refused with the provider's context-length 400.
        reject_stream_options: Azure OpenAI endpoints: refuse a request that
            carries ``stream_options`` with a 400, as deployments on older API
            versions do (``ok:reject_stream_options``).
    """

    kind: BehaviorKind = "ok"
    chunks: int | None = None
    text: str | None = None
    reasoning: int = 0
    ttft: float = 0.0
    gap: float = 0.0
    delay: float = 0.0
    after: int = 0
    status: int | None = None
    retry_after: str | None = None
    retry_after_ms: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    message: str | None = None
    body: str | None = None
    calls: int | None = None
    tool_name: str | None = None
    tool_arguments: str = _DEFAULT_ARGUMENTS
    input_tokens: int = 10
    cached_tokens: int = 0
    finish: str | None = None
    served_model: str | None = None
    prefill: bool = False
    overlap: int = 0
    context: int | None = None
    reject_stream_options: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown behaviour kind {self.kind!r}")
        if self.kind == "context" and self.context is None:
            raise ValueError("the context behaviour needs a size: context:N")

    @classmethod
    def parse(cls, spec: str) -> Behavior:
        """Parse a model-name behaviour such as ``"status:429:retry_after=3"``.

        Raises:
            ValueError: ``spec`` names no known kind or has a bad argument.
        """
        head, *tokens = spec.split(":")
        if head not in _KINDS:
            suggestion = misread_behavior(spec)
            hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
            raise ValueError(f"unknown behaviour kind {head!r}{hint}")
        kwargs: dict[str, Any] = {}
        for position, token in enumerate(tokens):
            key, sep, value = token.partition("=")
            if not sep:
                positional = _POSITIONAL.get(head)
                if positional is not None and position == 0 and token.isdigit():
                    kwargs[positional] = int(token)
                    continue
                if _PARSERS.get(token) is _parse_bool:
                    kwargs[token] = True
                    continue
                raise ValueError(f"bad behaviour argument {token!r} in {spec!r}")
            converter = _PARSERS.get(key)
            if converter is None:
                close = difflib.get_close_matches(key, _PARSERS, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"unknown behaviour argument {key!r} in {spec!r}{hint}")
            try:
                kwargs[key] = converter(value)
            except ValueError:
                raise ValueError(f"bad value for {key!r} in {spec!r}") from None
        return cls(kind=head, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def for_model(cls, model: str | None) -> Behavior:
        """The behaviour a model name asks for; ``ok`` for names that are plainly model ids.

        Raises:
            ValueError: ``model`` names a kind with bad arguments, or looks
                like a behaviour that does not exist (the message suggests
                the closest one).
        """
        if not model:
            return cls()
        if model.split(":", 1)[0] in _KINDS:
            return cls.parse(model)
        suggestion = misread_behavior(model)
        if suggestion is not None:
            raise ValueError(
                f"{model!r} is not a fake-server behaviour (did you mean {suggestion!r}?); "
                "a model name answers 'ok' only when it is plainly a model id such as 'gpt-4o'"
            )
        return cls()

    def text_pieces(self) -> list[str]:
        """The text pieces of a full answer, in order."""
        if self.text is not None:
            return _WORD_RE.findall(self.text) or ([self.text] if self.text else [])
        count = self.chunks if self.chunks is not None else (0 if self.kind == "tools" else 5)
        return [f"tok{i} " for i in range(count)]

    def reasoning_pieces(self) -> list[str]:
        """The reasoning pieces sent before the text."""
        return [f"think{i} " for i in range(self.reasoning)]

    @property
    def full_text(self) -> str:
        """The whole answer text of a complete response."""
        return "".join(self.text_pieces())

    def text_before_fault(self) -> str:
        """The text a client sees before the fault (``after`` pieces, reasoning first)."""
        return "".join(self.text_pieces()[: max(0, self.after - self.reasoning)])

    def continuation_pieces(self, prefill: str) -> list[str] | None:
        """The pieces that continue ``prefill``, or None when it does not start the answer.

        ``prefill`` (a trailing assistant message) must be a prefix of
        :attr:`full_text`, as sent or with its trailing whitespace stripped
        (Anthropic clients strip it, since the API rejects it); the answer is
        then the rest of the full text, cut along the original piece
        boundaries (the piece the prefill ends in is sent from where it
        stopped). With ``overlap=N`` the last N characters of the matched
        prefill come first, as their own piece.
        """
        full = self.full_text
        if full.startswith(prefill):
            head = prefill
        else:
            head = prefill.rstrip()
            if not full.startswith(head):
                return None
        cut = len(head)
        pieces: list[str] = []
        if self.overlap > 0 and head:
            pieces.append(head[-self.overlap :])
        end = 0
        for piece in self.text_pieces():
            start, end = end, end + len(piece)
            if end > cut:
                pieces.append(piece[max(0, cut - start) :])
        return pieces


# Words a newcomer reaches for, mapped to the kind that does it. Without this
# table each of them used to answer a normal ``ok``, and a failover test
# written with one was silently served by the primary.
_MISREAD: dict[str, str] = {
    "hang": "hang_headers",
    "hung": "hang_headers",
    "timeout": "hang_headers",
    "time_out": "hang_headers",
    "stall": "hang_body",
    "stalled": "hang_body",
    "slow": "ok:ttft=5",
    "delay": "ok:delay=5",
    "error": "status:500",
    "fail": "status:500",
    "failure": "status:500",
    "server_error": "status:500",
    "rate_limit": "status:429:retry_after=1",
    "rate_limited": "status:429:retry_after=1",
    "ratelimit": "status:429:retry_after=1",
    "overloaded": "status:529",
    "unavailable": "status:503",
    "disconnect": "cut",
    "close": "cut",
    "truncate": "cut",
    "truncated": "cut",
    "broken": "cut",
    "refusal": "content_filter",
    "refuse": "content_filter",
    "filter": "content_filter",
    "tool": "tools",
    "tool_call": "tools",
    "tool_calls": "tools",
    "inband": "inband_error",
    "invalid_json": "malformed",
    "bad_json": "malformed",
    "context_window": "context:2000",
    "context_length": "context:2000",
}


def misread_behavior(spec: str) -> str | None:
    """The behaviour ``spec`` was probably meant to be, or None when it is plainly a model id.

    A model id (``gpt-4o``, ``claude-sonnet-4-5``, ``llama3.1:8b``) shares
    no shape with a behaviour spec. A status code (``500``), a ``key=value``
    (``status=500``), a word from the table above (``hang``, ``timeout``), a
    near miss of a kind (``hang_header``) or an underscore name starting like
    a kind (``hang_forever``) does, and answering it ``ok`` would make a test
    quietly wrong.
    """
    head, _, rest = spec.partition(":")
    word = head.strip().lower()
    tail = f":{rest}" if rest else ""
    if word in _KINDS:
        return word + tail  # ``OK``, ``Status:500``
    if word in _MISREAD:
        return _MISREAD[word]
    if word.isdigit():
        return f"status:{word}" if 100 <= int(word) <= 599 else "status:500"
    key, eq, value = word.partition("=")
    if eq:
        if key in _POSITIONAL:
            return f"{key}:{value}{tail}"
        return f"ok:{word}{tail}" if key in _PARSERS else "ok"
    close = difflib.get_close_matches(word, [*_KINDS, *_MISREAD], n=1, cutoff=0.75)
    if close:
        return _MISREAD.get(close[0], close[0]) + tail
    stem = word.split("_", 1)[0]
    if "_" in word and stem in _STEMS:
        return _STEMS[stem]
    if "=" in rest:
        # ``anything:after=3``: arguments only a behaviour takes.
        return "ok" + tail
    return None


def describe(behavior: Behavior) -> str:
    """``behavior`` written like a model-name spec: its kind and every non-default field.

    Free text (bodies, messages, answers) is shown by its length and headers
    by their names: a test may script a body that quotes a secret, and this
    line goes to a log.
    """
    parts: list[str] = [behavior.kind]
    for f in fields(Behavior):
        if f.name == "kind":
            continue
        value = getattr(behavior, f.name)
        default = f.default_factory() if callable(f.default_factory) else f.default
        if value == default:
            continue
        if f.name == "headers":
            value = ",".join(sorted(value))
        elif f.name in _FREE_TEXT:
            value = f"<{len(value)} chars>"
        parts.append(f"{f.name}={value}")
    return ":".join(parts)


_FREE_TEXT = frozenset({"text", "message", "body", "tool_arguments", "tool_name"})


def _header_safe(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:1000]


def _parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


# Kinds whose first argument may be a bare number: ``status:429``, ``context:2000``.
_POSITIONAL = {"status": "status", "context": "context"}

_PARSERS: dict[str, Any] = {}
for _f in fields(Behavior):
    if _f.name in ("kind", "headers"):
        continue
    _type = str(_f.type)
    if "bool" in _type:
        # A bare ``prefill`` token means prefill=True.
        _PARSERS[_f.name] = _parse_bool
    elif "int" in _type:
        _PARSERS[_f.name] = int
    elif "float" in _type:
        _PARSERS[_f.name] = float
    else:
        _PARSERS[_f.name] = str
del _f, _type

# The first word of each two-word kind: ``hang_forever`` is meant as a hang.
_STEMS: dict[str, str] = {}
for _kind in get_args(BehaviorKind):
    if "_" in _kind:
        _STEMS.setdefault(_kind.split("_", 1)[0], _kind)
del _kind


@dataclass(frozen=True, slots=True)
class FakeRequest:
    """One request the fake server received.

    Attributes:
        index: Position in ``server.requests``.
        connection: Number of the connection that carried it (0, 1, ... in
            accept order), to check keep-alive.
        method: HTTP method.
        path: Request target (path and query), without a ``/d/<name>`` prefix.
        headers: Request headers, names lower-case (repeated ones joined by ``", "``).
        json: The parsed JSON body, or None when it was not JSON.
        received_at: ``anyio.current_time()`` (the loop's clock) when the
            request was complete.
        model: The body's ``model`` field, if any; else the URL-decoded model
            id of a Bedrock path (``/model/{model}/converse``).
        deployment: The deployment named by a ``/d/<name>`` prefix, which
            ``path`` no longer carries; None without one.
    """

    index: int
    connection: int
    method: str
    path: str
    headers: Mapping[str, str]
    json: Any
    received_at: float
    model: str | None
    deployment: str | None = None

    @property
    def stream(self) -> bool:
        """The request asked for a streamed answer: in its body, or by its URL."""
        if isinstance(self.json, dict) and self.json.get("stream") is True:
            return True
        route = _route_for(self.path.split("?", 1)[0])
        return route is not None and route.streams(self.path.split("?", 1)[0])


class Disconnect(NamedTuple):
    """A client closed its connection (``request_index``, ``at`` loop time)."""

    request_index: int
    at: float


_Action: TypeAlias = Literal["keep", "close", "reset", "hang", "raw_keep"]

# Bedrock's routes: the model id (URL-encoded) in the path, streaming by the action.


class FakeLLMServer(DeploymentControls):
    """A running fake server; get one from :func:`serve_fake_llm`.

    Deployments (``/d/<name>/...``, each with its own latency, rate limits
    and prompt cache) are declared with :meth:`deployment`; see
    :mod:`reliant.testing._fake_deployments`.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.requests: list[FakeRequest] = []
        self.disconnects: list[Disconnect] = []
        self.aborted: list[int] = []
        self._scripts: dict[str | None, list[Behavior]] = {}
        self._raw = RawScripts()
        self._connections = 0
        self._changed = anyio.Event()
        self._deployments = Deployments()

    # -- addresses -----------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """Base URL for OpenAI-compatible clients (``base_url + "/v1"``)."""
        return self.base_url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Base URL for Anthropic clients (the server root)."""
        return self.base_url

    @property
    def bedrock_base_url(self) -> str:
        """Base URL for Bedrock clients (the server root; see :mod:`._fake_bedrock`)."""
        return self.base_url

    @property
    def gemini_base_url(self) -> str:
        """Base URL for Gemini clients, AI Studio or Vertex AI (the server root)."""
        return self.base_url

    @property
    def responses_base_url(self) -> str:
        """Base URL for OpenAI Responses API clients (``base_url + "/v1"``)."""
        return self.base_url + "/v1"

    @property
    def azure_base_url(self) -> str:
        """Base URL for Azure OpenAI clients, the resource endpoint (the server root)."""
        return self.base_url

    def __repr__(self) -> str:
        return f"<FakeLLMServer {self.base_url} requests={len(self.requests)}>"

    # -- scripting -------------------------------------------------------------

    def script(self, model: str | None, behaviors: Iterable[Behavior | str]) -> None:
        """Script the next responses.

        Args:
            model: Requests naming this model use the script; None scripts every
                model that has no script of its own.
            behaviors: Consumed one per request; the last one repeats. Strings
                are parsed as model-name behaviours.
        """
        items = [b if isinstance(b, Behavior) else Behavior.parse(b) for b in behaviors]
        if not items:
            self._scripts.pop(model, None)
        else:
            self._scripts[model] = items

    def script_raw(self, model: str | None, responses: Iterable[RawResponse]) -> None:
        """Answer requests naming ``model`` with raw bytes (see :mod:`._raw`).

        Raw scripts win over behaviours; consumed one per request, the last
        repeats; an empty list removes the script. ``None`` matches requests
        whose model has no raw script of its own.
        """
        self._raw.set(model, responses)

    def clear(self) -> None:
        """Forget scripts, deployments and records."""
        self._deployments.clear()
        self._raw.queues.clear()
        self._scripts.clear()
        self.requests.clear()
        self.disconnects.clear()
        self.aborted.clear()

    def behavior_for(self, model: str | None) -> Behavior:
        """Consume the behaviour for the next request naming ``model``."""
        key: str | None = model if model in self._scripts else None
        queue = self._scripts.get(key)
        if queue:
            return queue.pop(0) if len(queue) > 1 else queue[0]
        return Behavior.for_model(model)

    # -- waiting ----------------------------------------------------------------

    async def wait_for_requests(self, count: int) -> None:
        """Wait until at least ``count`` requests have been received."""
        while len(self.requests) < count:
            await self._wait_for_change()

    async def wait_for_disconnect(self, request_index: int) -> float:
        """Wait until the connection that carried ``request_index`` is closed; its time."""
        while True:
            for d in self.disconnects:
                if d.request_index == request_index:
                    return d.at
            await self._wait_for_change()

    async def _wait_for_change(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _record_disconnect(self, index: int, *, mid_response: bool) -> None:
        self.disconnects.append(Disconnect(index, anyio.current_time()))
        if mid_response:
            self.aborted.append(index)
        self._notify()

    # -- connections ------------------------------------------------------------

    async def _handle(self, stream: SocketStream) -> None:
        try:
            await self._serve_connection(stream)
        except Exception:  # one broken connection must not stop the server
            logger.exception("fake server connection failed")
        finally:
            await anyio.aclose_forcefully(stream)

    async def _serve_connection(self, stream: SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        connection = self._connections
        self._connections += 1
        last_index: int | None = None
        while True:
            request = await self._receive_request(conn, stream, connection)
            if request is None:
                if last_index is not None:
                    self._record_disconnect(last_index, mid_response=False)
                return
            last_index = request.index
            action = await self._respond_watching(conn, stream, request)
            if action == "reset":
                # Closing with a zero linger sends RST (anyio's close, on either
                # loop, closes the socket without a FIN first).
                raw = stream.extra(SocketAttribute.raw_socket)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if action == "raw_keep":
                # The raw bytes bypassed h11: start a fresh machine, keeping
                # whatever of the next request was already read.
                leftover = conn.trailing_data[0]
                conn = h11.Connection(h11.SERVER)
                conn.receive_data(leftover)
                continue
            if action != "keep" or conn.our_state is not h11.DONE:
                return
            if conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _receive_request(
        self, conn: h11.Connection, stream: SocketStream, connection: int
    ) -> FakeRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return None
            if event is h11.NEED_DATA:
                data = await _receive(stream)
                conn.receive_data(data)
                if not data and head is None and conn.their_state is h11.IDLE:
                    return None
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                break
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
        headers: dict[str, str] = {}
        for name, value in head.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        try:
            payload: Any = json.loads(body) if body else None
        except ValueError:
            payload = None
        model = payload.get("model") if isinstance(payload, dict) else None
        deployment, target = split_deployment(head.target.decode("latin-1"))
        if not isinstance(model, str):
            route = _route_for(target.split("?", 1)[0])
            model = route.model(target) if route is not None else None
        request = FakeRequest(
            index=len(self.requests),
            connection=connection,
            method=head.method.decode("ascii"),
            path=target,
            headers=headers,
            json=payload,
            received_at=anyio.current_time(),
            model=model if isinstance(model, str) else None,
            deployment=deployment,
        )
        self.requests.append(request)
        self._notify()
        return request

    async def _respond_watching(
        self, conn: h11.Connection, stream: SocketStream, request: FakeRequest
    ) -> _Action:
        """Respond while a watcher task reads the socket, so a client close is seen at once."""
        gone = False
        action: _Action = "close"

        async def watch(scope: anyio.CancelScope) -> None:
            nonlocal gone
            while True:
                data = await _receive(stream)
                if not data:
                    gone = True
                    self._record_disconnect(request.index, mid_response=True)
                    scope.cancel()
                    return
                # Bytes of a pipelined next request: keep them for the next cycle.
                conn.receive_data(data)

        async with anyio.create_task_group() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            try:
                action = await _respond(conn, stream, request, self)
                if action == "hang":
                    await anyio.sleep_forever()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                if not gone:
                    gone = True
                    self._record_disconnect(request.index, mid_response=True)
            nursery.cancel_scope.cancel()
        return "close" if gone else action

    async def _serve(self, listeners: list[Listener[SocketStream]]) -> None:
        async with anyio.create_task_group() as handlers:
            for listener in listeners:
                # Named like the server's other tasks (by their qualified
                # names): a test can tell them from its own by the prefix.
                handlers.start_soon(
                    listener.serve, self._handle, handlers, name=f"{__name__}.accept"
                )


@asynccontextmanager
async def serve_fake_llm(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    script: Mapping[str | None, Sequence[Behavior | str]] | None = None,
) -> AsyncIterator[FakeLLMServer]:
    """Run a fake LLM server for the duration of the ``async with`` block.

    Args:
        host: Address to listen on.
        port: Port to listen on; 0 picks a free one (see ``server.port``).
        script: Initial scripts, ``{model or None: [Behavior or spec, ...]}``.

    Yields:
        The running :class:`FakeLLMServer`.

    The server runs on the caller's event loop, trio or asyncio, in a task
    group of its own: its records (``received_at``, disconnect times) are
    that loop's clock, virtual when the test's is.
    """
    multi = await anyio.create_tcp_listener(local_host=host, local_port=port)
    listeners = list(multi.listeners)
    if port == 0:
        # Several addresses (IPv4 and IPv6) would each get a different free port.
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    server = FakeLLMServer(host, listeners[0].extra(SocketAttribute.local_port))
    for model, behaviors in (script or {}).items():
        server.script(model, behaviors)
    raised: BaseException | None = None
    try:
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(server._serve, listeners)
            try:
                yield server
            except BaseException as exc:
                # Re-raised outside the task group so the caller's exception
                # is not wrapped in an ExceptionGroup.
                raised = exc
            finally:
                nursery.cancel_scope.cancel()
    finally:
        for listener in listeners:
            await anyio.aclose_forcefully(listener)
    if raised is not None:
        raise raised


async def _receive(stream: SocketStream) -> bytes:
    """The next bytes from the client; ``b""`` once it closed (or broke) the connection."""
    try:
        return await stream.receive(65536)
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        return b""


# -- responses --------------------------------------------------------------------

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# status -> (error.type, error.code) as OpenAI sends them; other statuses get
# "server_error" (5xx) or "invalid_request_error" (4xx) and a null code.
_OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
}


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Overloaded" if status == 529 else b""


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _text_of(content: Any) -> str:
    """The text of a message ``content``: a string, or the ``text`` of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _split3(text: str) -> list[str]:
    if len(text) < 3:
        return [text]
    a, b = len(text) // 3, 2 * len(text) // 3
    return [text[:a], text[a:b], text[b:]]


class _Piece(NamedTuple):
    data: bytes
    counts: bool  # a content piece (subject to ttft/gap/after) or protocol framing


class _Protocol:
    """Rendering of one wire protocol."""

    sse_terminator: bytes

    # The endpoint continues a trailing assistant message without being asked.
    continues_by_default = False
    # ``retry_after=`` goes in a header (Gemini puts it in the error body).
    retry_after_header = True

    # The protocol writes whole responses itself (:meth:`respond`), not through
    # ``_respond``'s SSE loop.
    own_response = False

    # Whose rate-limit headers a deployment with limits sends (None: none);
    # ``anthropic`` also counts cached tokens outside ``input_tokens``.
    ratelimit_style: Style | None = None
    # A prefix-cache deployment's (input, cached) token estimate, replacing
    # the behaviour's numbers in the usage.
    cache_usage: tuple[int, int] | None = None

    def __init__(self, request: FakeRequest, behavior: Behavior) -> None:
        self.request = request
        self.behavior = behavior
        body = request.json if isinstance(request.json, dict) else {}
        self.body: dict[str, Any] = body
        self.model = behavior.served_model or request.model or "fake-model"
        tools = body.get("tools")
        self.tool_names: list[str] = []
        if isinstance(tools, list):
            for tool in tools:
                name = self._tool_name(tool) if isinstance(tool, dict) else None
                if isinstance(name, str):
                    self.tool_names.append(name)
        messages = body.get("messages")
        messages = messages if isinstance(messages, list) else []
        self.prompt_chars = sum(
            len(_text_of(m.get("content"))) for m in messages if isinstance(m, dict)
        ) + len(_text_of(body.get("system")))
        last = messages[-1] if messages else None
        # The trailing assistant message (a prefill), if the request ends with one.
        self.prefill: str | None = (
            _text_of(last.get("content"))
            if isinstance(last, dict) and last.get("role") == "assistant"
            else None
        )
        texts: list[str] | None = None
        if self.prefill is not None and (self.continues_by_default or behavior.prefill):
            texts = behavior.continuation_pieces(self.prefill)
        # The text pieces of this answer: the canonical ones, or their continuation.
        self.texts: list[str] = behavior.text_pieces() if texts is None else texts

    def _tool_name(self, tool: dict[str, Any]) -> Any:
        raise NotImplementedError

    async def respond(
        self, conn: h11.Connection, stream: SocketStream, extra: list[tuple[str, str]]
    ) -> _Action:
        """The whole response, for a protocol with ``own_response``."""
        raise NotImplementedError

    def rejection(self) -> tuple[int, dict[str, Any]] | None:
        """The 400 this request gets before anything else, if any (context, prefill)."""
        b = self.behavior
        if b.context is not None and self.prompt_chars > b.context:
            return 400, self.context_error(b.context, self.prompt_chars)
        if b.kind == "reject_prefill" and self.prefill is not None:
            return 400, self.prefill_error()
        if b.kind == "content_filter" and self.refuses_with_status():
            return 400, self.content_filter_error()
        return None

    def refuses_with_status(self) -> bool:
        """``content_filter`` refuses with a 400 rather than in a 200 answer."""
        return False

    def context_error(self, limit: int, used: int) -> dict[str, Any]:
        raise NotImplementedError

    def prefill_error(self) -> dict[str, Any]:
        raise NotImplementedError

    def content_filter_error(self) -> dict[str, Any]:
        raise NotImplementedError

    def finish_word(self, natural: str) -> str:
        """The provider's finish word: ``finish=`` if given, else ``natural``."""
        return self.behavior.finish or natural

    def answer_texts(self) -> list[str]:
        """The text pieces a complete answer carries (``content_filter`` stops after ``after``)."""
        if self.behavior.kind == "content_filter":
            return self.texts[: self.behavior.after]
        return self.texts

    def tool_calls(self) -> list[tuple[str, str, str]]:
        """(id, name, arguments) of each tool call of a ``tools`` answer."""
        count = self.behavior.calls
        if count is None:
            count = 1 if self.behavior.kind == "tools" else 0
        calls = []
        for i in range(count):
            if self.behavior.tool_name is not None:
                name = self.behavior.tool_name
            elif self.tool_names:
                name = self.tool_names[i % len(self.tool_names)]
            else:
                name = "get_weather"
            calls.append((f"call_{self.request.index}_{i}", name, self.behavior.tool_arguments))
        return calls

    def usage_numbers(self) -> tuple[int, int, int]:
        b = self.behavior
        output = len(self.answer_texts()) + b.reasoning
        if self.cache_usage is not None:
            return self.cache_usage[0], output, self.cache_usage[1]
        return b.input_tokens, output, b.cached_tokens

    def error_payload(self, status: int) -> dict[str, Any]:
        raise NotImplementedError

    def inband_payload(self, status: int) -> dict[str, Any]:
        """The error of ``inband_error``, sent inside a 200."""
        return self.error_payload(status)

    def error_message(self, status: int) -> str:
        return self.behavior.message or f"fake error {status}"

    def json_answer(self) -> dict[str, Any]:
        raise NotImplementedError

    def sse_pieces(self) -> list[_Piece]:
        raise NotImplementedError

    def sse_error(self, status: int) -> bytes:
        raise NotImplementedError

    def sse_malformed(self) -> bytes:
        raise NotImplementedError

    # The stream's framing around the pieces, for ``_send_stream``. The
    # defaults are SSE's; a binary framing (Bedrock's event stream) overrides them.
    stream_headers: tuple[tuple[str, str], ...] = (
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache"),
    )

    def stream_empty(self) -> bytes:
        """The whole body of an ``empty`` stream: the terminator alone."""
        return self.sse_terminator

    def stream_malformed(self, rest: list[bytes]) -> list[bytes]:
        """What a ``malformed`` stream sends after its good pieces (the terminator follows)."""
        return [self.sse_malformed(), *rest]

    def stream_cut(self, rest: list[bytes]) -> bytes:
        """What a ``cut`` stream sends after its good pieces before the connection drops."""
        return b""


class _OpenAI(_Protocol):
    sse_terminator = b"data: [DONE]\n\n"
    ratelimit_style = "openai"

    def _tool_name(self, tool: dict[str, Any]) -> Any:
        function = tool.get("function")
        return function.get("name") if isinstance(function, dict) else None

    def error_payload(self, status: int) -> dict[str, Any]:
        # OpenAI's ``code`` is a string or null, never a number.
        kind, code = _OPENAI_ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        return {
            "error": {
                "message": self.error_message(status),
                "type": kind,
                "param": None,
                "code": code,
            }
        }

    def inband_payload(self, status: int) -> dict[str, Any]:
        # Nothing on the wire carries the status of an in-band error, so it
        # travels as an integer ``status`` member, as Azure OpenAI's errors do.
        payload = self.error_payload(status)
        payload["error"]["status"] = status
        return payload

    def context_error(self, limit: int, used: int) -> dict[str, Any]:
        return {
            "error": {
                "message": (
                    f"This model's maximum context length is {limit} tokens. However, your "
                    f"messages resulted in {used} tokens. Please reduce the length of the "
                    "messages."
                ),
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }

    def prefill_error(self) -> dict[str, Any]:
        return {
            "error": {
                "message": (
                    "Expected last role User or Tool (or Assistant with prefix True) for "
                    "serving but got assistant"
                ),
                "type": "invalid_request_error",
                "param": "messages",
                "code": None,
            }
        }

    def content_filter_error(self) -> dict[str, Any]:
        return {
            "error": {
                "message": (
                    "Your request was rejected as a result of our safety system. Your prompt "
                    "may contain text that is not allowed by our safety system."
                ),
                "type": "invalid_request_error",
                "param": None,
                "code": "content_policy_violation",
            }
        }

    def refuses_with_status(self) -> bool:
        b = self.behavior
        return b.after == 0 and b.status != 200

    def _finish_reason(self, calls: list[tuple[str, str, str]]) -> str:
        if self.behavior.kind == "content_filter":
            return self.finish_word("content_filter")
        return self.finish_word("tool_calls" if calls else "stop")

    def _usage(self) -> dict[str, Any]:
        prompt, completion, cached = self.usage_numbers()
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    def json_answer(self) -> dict[str, Any]:
        b = self.behavior
        text = "".join(self.answer_texts())
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if b.kind == "empty":
            message["content"] = ""
        elif b.kind == "content_filter" and not text:
            message["content"] = None
        if b.reasoning:
            message["reasoning_content"] = "".join(b.reasoning_pieces())
        calls = self.tool_calls()
        if calls:
            message["content"] = text or None
            message["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                for cid, name, args in calls
            ]
        return {
            "id": f"chatcmpl-fake-{self.request.index}",
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": self._finish_reason(calls),
                }
            ],
            "usage": self._usage(),
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        prefix = self._prefix
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return prefix + _dumps([choice]) + b"}\n\n"

    @property
    def _prefix(self) -> bytes:
        return (
            b'data: {"id":"chatcmpl-fake-'
            + str(self.request.index).encode()
            + b'","object":"chat.completion.chunk","created":0,"model":'
            + _dumps(self.model)
            + b',"choices":'
        )

    def sse_pieces(self) -> list[_Piece]:
        b = self.behavior
        pieces = [_Piece(self._chunk({"role": "assistant", "content": ""}), False)]
        pieces += [
            _Piece(self._chunk({"reasoning_content": r}), True) for r in b.reasoning_pieces()
        ]
        pieces += [_Piece(self._chunk({"content": t}), True) for t in self.answer_texts()]
        calls = self.tool_calls()
        for i, (cid, name, args) in enumerate(calls):
            head = {
                "index": i,
                "id": cid,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            pieces.append(_Piece(self._chunk({"tool_calls": [head]}), False))
            for fragment in _split3(args):
                delta = {"tool_calls": [{"index": i, "function": {"arguments": fragment}}]}
                pieces.append(_Piece(self._chunk(delta), True))
        if b.kind == "no_terminator":
            # Nothing that says the answer is complete: no finish_reason, no usage.
            return pieces
        pieces.append(_Piece(self._chunk({}, self._finish_reason(calls)), False))
        stream_options = self.body.get("stream_options")
        if isinstance(stream_options, dict) and stream_options.get("include_usage"):
            usage = (
                b'data: {"id":"chatcmpl-fake-'
                + str(self.request.index).encode()
                + b'","object":"chat.completion.chunk","created":0,"model":'
                + _dumps(self.model)
                + b',"choices":[],"usage":'
                + _dumps(self._usage())
                + b"}\n\n"
            )
            pieces.append(_Piece(usage, False))
        return pieces

    def sse_error(self, status: int) -> bytes:
        return b"data: " + _dumps(self.inband_payload(status)) + b"\n\n"

    def sse_malformed(self) -> bytes:
        return self._prefix + b'[{"index":0,"delta":{"content":"tok\n\n'


class _Anthropic(_Protocol):
    sse_terminator = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    continues_by_default = True
    ratelimit_style = "anthropic"

    def _tool_name(self, tool: dict[str, Any]) -> Any:
        return tool.get("name")

    def _invalid(self, message: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}

    def context_error(self, limit: int, used: int) -> dict[str, Any]:
        return self._invalid(f"prompt is too long: {used} tokens > {limit} maximum")

    def prefill_error(self) -> dict[str, Any]:
        return self._invalid(
            "This model does not support assistant message prefill. "
            "The conversation must end with a user message."
        )

    def content_filter_error(self) -> dict[str, Any]:  # pragma: no cover - 200 refusals only
        raise AssertionError("Anthropic refuses in a 200 answer")

    def _stop_reason(self, calls: list[tuple[str, str, str]]) -> str:
        if self.behavior.kind == "content_filter":
            return self.finish_word("refusal")
        return self.finish_word("tool_use" if calls else "end_turn")

    def error_payload(self, status: int) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {
                "type": _ANTHROPIC_ERROR_TYPES.get(status, "api_error"),
                "message": self.error_message(status),
            },
        }

    def _usage(self) -> dict[str, Any]:
        prompt, completion, cached = self.usage_numbers()
        return {
            "input_tokens": prompt,
            "output_tokens": completion,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached,
        }

    def json_answer(self) -> dict[str, Any]:
        b = self.behavior
        content: list[dict[str, Any]] = []
        if b.reasoning:
            thinking = "".join(b.reasoning_pieces())
            content.append({"type": "thinking", "thinking": thinking, "signature": "sig"})
        text = "" if b.kind == "empty" else "".join(self.answer_texts())
        if text or b.kind not in ("tools", "content_filter"):
            content.append({"type": "text", "text": text})
        calls = self.tool_calls()
        for cid, name, args in calls:
            content.append({"type": "tool_use", "id": cid, "name": name, "input": json.loads(args)})
        return {
            "id": f"msg_fake_{self.request.index}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self._stop_reason(calls),
            "stop_sequence": None,
            "usage": self._usage(),
        }

    @staticmethod
    def _event(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + _dumps(data) + b"\n\n"

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return self._event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def sse_pieces(self) -> list[_Piece]:
        b = self.behavior
        prompt, completion, cached = self.usage_numbers()
        start = {
            "type": "message_start",
            "message": {
                "id": f"msg_fake_{self.request.index}",
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": prompt,
                    "output_tokens": 1,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": cached,
                },
            },
        }
        pieces = [
            _Piece(self._event("message_start", start), False),
            _Piece(self._event("ping", {"type": "ping"}), False),
        ]
        index = 0

        def block(kind: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
            nonlocal index
            begin = {"type": "content_block_start", "index": index, "content_block": kind}
            pieces.append(_Piece(self._event("content_block_start", begin), False))
            pieces.extend(_Piece(self._delta(index, d), True) for d in deltas)
            stop = {"type": "content_block_stop", "index": index}
            pieces.append(_Piece(self._event("content_block_stop", stop), False))
            index += 1

        if b.reasoning:
            block(
                {"type": "thinking", "thinking": ""},
                [{"type": "thinking_delta", "thinking": r} for r in b.reasoning_pieces()],
            )
            pieces.insert(
                len(pieces) - 1,
                _Piece(self._delta(0, {"type": "signature_delta", "signature": "sig"}), False),
            )
        texts = self.answer_texts()
        if texts or b.kind not in ("tools", "content_filter"):
            block({"type": "text", "text": ""}, [{"type": "text_delta", "text": t} for t in texts])
        calls = self.tool_calls()
        for cid, name, args in calls:
            block(
                {"type": "tool_use", "id": cid, "name": name, "input": {}},
                [{"type": "input_json_delta", "partial_json": f} for f in _split3(args)],
            )
        if b.kind == "no_terminator":
            # Nothing that says the answer is complete: no stop_reason.
            return pieces
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop_reason(calls), "stop_sequence": None},
            "usage": {"output_tokens": completion},
        }
        pieces.append(_Piece(self._event("message_delta", delta), False))
        return pieces

    def sse_error(self, status: int) -> bytes:
        return self._event("error", self.error_payload(status))

    def sse_malformed(self) -> bytes:
        return (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":"tok\n\n'
        )


async def _send_json_answer(
    conn: h11.Connection,
    stream: SocketStream,
    b: Behavior,
    payload: bytes,
    extra: list[tuple[str, str]],
) -> _Action:
    """A whole JSON answer, or its first half and then the fault (cut, reset, hang)."""
    if b.kind in ("cut", "reset", "hang_body"):
        headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
        await _send(conn, stream, h11.Response(status_code=200, headers=headers + extra))
        if b.ttft > 0:
            await anyio.sleep(b.ttft)
        await _send(conn, stream, h11.Data(data=payload[: len(payload) // 2]))
        return {"cut": "close", "reset": "reset"}.get(b.kind, "hang")  # type: ignore[return-value]
    if b.ttft > 0:
        await anyio.sleep(b.ttft)
    await _send_json(conn, stream, 200, payload, extra)
    return "keep"


async def _send(conn: h11.Connection, stream: SocketStream, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        await stream.send(data)


async def _send_json(
    conn: h11.Connection,
    stream: SocketStream,
    status: int,
    payload: bytes,
    extra: Iterable[tuple[str, str]] = (),
    content_type: str = "application/json",
) -> None:
    extra = list(extra)
    given = {name.lower() for name, _ in extra}
    headers = [("content-type", content_type), ("content-length", str(len(payload)))]
    if "date" not in given:
        headers.append(("date", email.utils.formatdate(usegmt=True)))
    headers = [h for h in headers if h[0] not in given] + extra
    response = h11.Response(status_code=status, headers=headers, reason=_reason(status))
    data = conn.send(response) or b""
    data += conn.send(h11.Data(data=payload)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send(data)


# Protocols served beside the two built in (Bedrock, Gemini, the Responses API,
# Azure OpenAI), each a module of its own that builds on this one and registers
# its route when it is imported (``reliant.testing`` imports them all), so this
# module imports none of them: no import circle.


class Route(NamedTuple):
    """Where a registered protocol is served, and what its URLs say."""

    matches: Callable[[str], bool]  # path (no query) -> this protocol serves it
    protocol: type[_Protocol]
    model: Callable[[str], str | None]  # request target -> the model it names, if any
    streams: Callable[[str], bool]  # path -> the URL itself asks for a stream


_ROUTES: list[Route] = []


def register_protocol(route: Route) -> None:
    """Serve ``POST`` requests whose path ``route`` matches with its protocol."""
    _ROUTES.append(route)


def _route_for(path: str) -> Route | None:
    for route in _ROUTES:
        if route.matches(path):
            return route
    return None


def _registered_protocol(path: str) -> type[_Protocol] | None:
    route = _route_for(path)
    return None if route is None else route.protocol


async def _respond(
    conn: h11.Connection, stream: SocketStream, request: FakeRequest, server: FakeLLMServer
) -> _Action:
    early = server._deployments.early_answer(
        request.method, request.path, request.deployment, request.json
    )
    if early is not None:
        # A deployment control request (/_fake/deployments), or an undeclared /d/<name>.
        status, answer = early
        spec = []
        if status >= 400:
            spec = [(FAKE_SERVER_SPEC_HEADER, _header_safe(answer["error"]["message"]))]
        await _send_json(conn, stream, status, _dumps(answer), spec)
        return "keep"
    if request.method == "GET" and request.path.split("?")[0] == "/v1/models":
        models = {"object": "list", "data": [{"id": "ok", "object": "model", "owned_by": "fake"}]}
        await _send_json(conn, stream, 200, _dumps(models))
        return "keep"
    path = request.path.split("?")[0]
    protocol_cls: type[_Protocol]
    if request.method == "POST" and path == "/v1/chat/completions":
        protocol_cls = _OpenAI
    elif request.method == "POST" and path == "/v1/messages":
        protocol_cls = _Anthropic
    elif request.method == "POST" and (found := _registered_protocol(path)) is not None:
        protocol_cls = found
    else:
        error: dict[str, Any] = {
            "error": {
                "message": f"no route for {request.method} {path}",
                "type": "invalid_request_error",
                "param": None,
                "code": "unknown_url",
            }
        }
        await _send_json(conn, stream, 404, _dumps(error))
        return "keep"

    # A deployment admits the request, or refuses it with a rate-limit 429
    # that consumes no script (see _fake_deployments).
    visit: Visit | None = None
    if request.deployment is not None:
        visit = server._deployments.admit(request.deployment, request.json)
    refusal = visit.refusal if visit is not None else None
    raw = None
    if refusal is None:
        raw = server._raw.take(request.model if request.model in server._raw.queues else None)
    if raw is not None:
        await send_raw(stream, raw)
        return {"close": "close", "hang": "hang", "keep": "raw_keep"}[raw.then]  # type: ignore[return-value]

    try:
        if refusal is not None:
            retry_after = None if refusal.retry_after is None else str(refusal.retry_after)
            behavior = Behavior(
                "status", status=429, message=refusal.message, retry_after=retry_after
            )
        else:
            behavior = server.behavior_for(request.model)
    except ValueError as exc:
        message = f"reliant fake server: {exc}"
        logger.info("request %d %s model=%r -> 400: %s", request.index, path, request.model, exc)
        error = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": "model",
                "code": "fake_server_spec",
            }
        }
        # The header is what a reliant provider recognises (any protocol's
        # body shape): the 400 becomes a FakeServerSpecError, never a
        # failure to fail over from.
        header = [(FAKE_SERVER_SPEC_HEADER, _header_safe(message))]
        await _send_json(conn, stream, 400, _dumps(error), header)
        return "keep"
    logger.info(
        "request %d %s model=%r -> %s", request.index, path, request.model, describe(behavior)
    )
    if visit is not None and refusal is None and visit.ttft > 0:
        behavior = replace(behavior, delay=behavior.delay + visit.ttft)
    proto = protocol_cls(request, behavior)
    b = behavior
    extra = list(b.headers.items())
    if visit is not None:
        # Output tokens of an answer (not of an error), the limit and cache headers, usage.
        answered = b.kind not in ("status", "hang_headers") and proto.rejection() is None
        output = proto.usage_numbers()[1] if answered else 0
        headers, proto.cache_usage = visit.finish(output, proto.ratelimit_style)
        extra += headers

    if b.kind == "hang_headers":
        return "hang"
    if b.delay > 0:
        await anyio.sleep(b.delay)
    if proto.own_response:
        # Its own framing (Bedrock's event stream, its error headers): it writes it all.
        return await proto.respond(conn, stream, extra)

    rejection = proto.rejection()
    if rejection is not None:
        status, error = rejection
        await _send_json(conn, stream, status, _dumps(error), extra)
        return "keep"

    if b.kind == "status":
        status = b.status if b.status is not None else 500
        if b.retry_after is not None and proto.retry_after_header:
            extra.append(("retry-after", b.retry_after))
        if b.retry_after_ms is not None:
            extra.append(("retry-after-ms", str(b.retry_after_ms)))
        payload = b.body.encode() if b.body is not None else _dumps(proto.error_payload(status))
        await _send_json(conn, stream, status, payload, extra)
        return "keep"

    error_status = b.status if b.status is not None else 500
    if not request.stream or b.kind == "not_sse":
        if b.kind == "inband_error":
            await _send_json(conn, stream, 200, _dumps(proto.inband_payload(error_status)), extra)
            return "keep"
        if b.kind == "malformed":
            await _send_json(conn, stream, 200, b'{"id": "broken", "choices": [', extra)
            return "keep"
        return await _send_json_answer(conn, stream, b, _dumps(proto.json_answer()), extra)

    return await _send_stream(conn, stream, proto, extra)


async def _send_stream(
    conn: h11.Connection, stream: SocketStream, proto: _Protocol, extra: list[tuple[str, str]]
) -> _Action:
    # A streamed answer, paced by ttft/gap, with the behaviour's fault after
    # ``after`` content pieces; the protocol frames it (its stream_* hooks).
    b = proto.behavior
    headers = [*proto.stream_headers, *extra]
    await _send(conn, stream, h11.Response(status_code=200, headers=headers, reason=b"OK"))
    if b.kind == "empty":
        if b.ttft > 0:
            await anyio.sleep(b.ttft)
        data = conn.send(h11.Data(data=proto.stream_empty())) or b""
        await stream.send(data + (conn.send(h11.EndOfMessage()) or b""))
        return "keep"

    faulty = b.kind in ("cut", "reset", "hang_body", "inband_error", "malformed")
    pending: list[bytes] = []
    sent = 0

    async def flush() -> None:
        if pending:
            data = b"".join(pending)
            pending.clear()
            await _send(conn, stream, h11.Data(data=data))

    pieces = proto.sse_pieces()
    position = 0
    for piece in pieces:
        if piece.counts:
            if faulty and sent == b.after:
                break
            wait = b.ttft if sent == 0 else b.gap
            if wait > 0:
                await flush()
                await anyio.sleep(wait)
            sent += 1
        pending.append(piece.data)
        position += 1

    rest = [p.data for p in pieces[position:]]
    if b.kind == "malformed":
        pending.extend(proto.stream_malformed(rest))
        pending.append(proto.sse_terminator)
    elif b.kind == "inband_error":
        pending.append(proto.sse_error(b.status if b.status is not None else 500))
    elif b.kind == "cut":
        tail = proto.stream_cut(rest)
        if tail:
            pending.append(tail)
        await flush()
        return "close"
    elif b.kind not in ("no_terminator", "no_done", "reset", "hang_body"):
        pending.append(proto.sse_terminator)
    if b.kind == "reset":
        await flush()
        return "reset"
    if b.kind == "hang_body":
        await flush()
        return "hang"
    # The last events and the end of the chunked body go out in one write, so
    # a client that stops at the terminator still finds the body complete.
    data = conn.send(h11.Data(data=b"".join(pending))) if pending else b""
    await stream.send(data + (conn.send(h11.EndOfMessage()) or b""))
    return "keep"
