"""``reliant demo``: every failover behaviour, live, on real sockets, without keys.

The embedded fake LLM server runs in-process on loopback. Two real leaf
providers talk to it over HTTP: ``primary`` (OpenAI-compatible wire protocol)
and ``backup`` (Anthropic wire protocol). Each step scripts the server by
model name, puts a ``ReliableProvider`` in front, and checks that what
happened on the wire is what reliant promises: every step prints a timeline
from reliant's own log records plus what the server saw, and the command
exits non-zero if any step misbehaved.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from rich.console import Console
from rich.table import Table
from rich.text import Text

from reliant import (
    ChatMessage,
    HealthPolicy,
    Hedge,
    Provider,
    ProviderFallbackInfo,
    ReliableProvider,
    fallback_scope,
    take_last_provider_fallback,
)
from reliant.testing.fake_server import Behavior, FakeLLMServer, serve_fake_llm

from ._common import capture_reliant_logs, describe_fallback, say, short_error

__all__ = ["run_demo"]

STEP_TIMEOUT = 15.0
"""No step may take longer than this; a hang is reported as a failure, never waited out."""

DEMO_KEY = "demo-key-for-the-fake-server"

STREAM_TEXT = (
    "Tokens flow from the backup provider as they arrive, while the hung primary "
    "was abandoned after its first-chunk timeout. "
)


class StepFailed(Exception):
    """A step did not behave as expected; the message says how."""


@dataclass(slots=True)
class _StepResult:
    number: int
    label: str
    title: str
    elapsed: float
    problem: str | None


class Timeline:
    """Prints one step at a time: header, timestamped events, streamed tokens, verdict."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._start = 0.0
        self._inline = False

    def begin(self, number: int, total: int, title: str, explain: str) -> None:
        self._start = trio.current_time()
        self.console.print()
        self.console.print(
            Text.assemble((f"[{number}/{total}] ", "bold cyan"), (title, "bold")),
        )
        self.console.print(Text("      " + explain, style="dim"), overflow="fold")

    def offset_ms(self) -> float:
        return (trio.current_time() - self._start) * 1000

    def _end_inline(self) -> None:
        if self._inline:
            self.console.print()
            self._inline = False

    def _stamp(self) -> Text:
        return Text(f"  +{self.offset_ms():5.0f} ms  ", style="dim")

    def event(self, text: str | Text, style: str = "") -> None:
        self._end_inline()
        body = text if isinstance(text, Text) else Text(text, style=style)
        stamp = self._stamp()
        # Wrapped lines get a hanging indent under the text, without padding.
        width = max(20, self.console.width - len(stamp))
        for i, line in enumerate(body.wrap(self.console, width)):
            line.rstrip()
            prefix = stamp if i == 0 else Text(" " * len(stamp))
            self.console.print(prefix + line, soft_wrap=True)

    def tokens(self, delta: str) -> None:
        if not self._inline:
            self.console.print(self._stamp(), end="")
            self.console.print(Text("stream: ", style="magenta"), end="")
            self._inline = True
        self.console.print(Text(delta, style="green"), end="", soft_wrap=True)

    def end(self, problem: str | None) -> float:
        self._end_inline()
        elapsed = self.offset_ms()
        if problem is None:
            verdict = Text.assemble(("  ok ", "bold green"), (f"  {elapsed:.0f} ms", "green"))
        else:
            verdict = Text.assemble(
                ("  FAILED ", "bold red"), (f" {elapsed:.0f} ms: ", "red"), (problem, "red")
            )
        self.console.print(verdict, overflow="fold")
        return elapsed

    def on_record(self, record: logging.LogRecord) -> None:
        """Render one of reliant's structured log records as a timeline event."""
        if record.name != "reliant":
            return  # providers' and the fake server's own chatter
        fields = record.__dict__
        provider = str(fields.get("provider", "?"))
        where = Text.assemble((provider, "bold"), "/", (str(fields.get("model", "?")), "cyan"))
        if fields.get("attempt") is not None:
            where.append(f" #{fields['attempt']}")
        where.append(": ")
        error = fields.get("error")
        short = short_error(str(error).removeprefix(f"{provider}: ")) if error else ""
        if "backoff" in fields:
            reason = fields.get("reason", "retryable")
            body = f"{reason} ({short}) -> retry in {float(fields['backoff']):.2f} s"
            self.event(Text.assemble(where, (body, "yellow")))
        elif "dropped" in fields:
            body = (
                f"context window exceeded -> dropped the {fields['dropped']} oldest "
                f"messages, retrying with {fields['remaining']}"
            )
            self.event(Text.assemble(where, (body, "yellow")))
        elif record.levelno >= logging.WARNING:
            message = record.getMessage()
            moving_on = message.endswith(", moving on")
            message = message.removesuffix(", moving on")
            body = f"{short}; {message}" if short else message
            if moving_on:
                body += " -> next candidate"
            self.event(Text.assemble(where, (body, "yellow")))
        elif record.getMessage().startswith("hedging"):
            self.event(Text.assemble(where, ("slow: hedged, started this one too", "yellow")))
        elif fields.get("reason") == "circuit_open":
            self.event(Text.assemble(where, ("circuit open -> skipped without a call", "yellow")))
        else:
            message = record.getMessage()
            if message.startswith("provider recovered"):
                message = "served"
            self.event(Text.assemble(where, (message, "green")))


@dataclass(slots=True)
class _Demo:
    server: FakeLLMServer
    primary: Provider
    backup: Provider
    timeline: Timeline

    def reliable(self, *names: str, **options: object) -> ReliableProvider:
        chain = {"primary": self.primary, "backup": self.backup}
        return ReliableProvider([(n, chain[n]) for n in names], **options)  # type: ignore[arg-type]

    def requests_for(self, model: str, since: int) -> list[int]:
        return [r.index for r in self.server.requests[since:] if r.model == model]

    async def stream(
        self, rp: ReliableProvider, prompt: str
    ) -> tuple[float, str, ProviderFallbackInfo | None]:
        """Stream ``prompt`` to model demo-stream, printing tokens as they come.

        Returns the time to the first token (from the call), the whole text
        and the fallback information; raises StepFailed if no token came.
        """
        start = trio.current_time()
        first: float | None = None
        received: list[str] = []
        with fallback_scope():
            async with rp.stream_chat_with_history(
                [ChatMessage.user(prompt)], "demo-stream", 0.0
            ) as chunks:
                async for chunk in chunks:
                    _expect(not chunk.restarted, "the answer was restarted, not continued")
                    if chunk.delta:
                        if first is None:
                            first = trio.current_time() - start
                        received.append(chunk.delta)
                        self.timeline.tokens(chunk.delta)
            info = take_last_provider_fallback()
        self.fallback(info)
        if first is None:
            raise StepFailed("no token arrived")
        return first, "".join(received), info

    def closed_at(self, model: str, since: int) -> float | None:
        """When the client closed the first connection asking for ``model``, if it did."""
        asked = self.requests_for(model, since)
        closed = [d.at for d in self.server.disconnects if asked and d.request_index == asked[0]]
        return closed[0] if closed else None

    def fallback(self, info: ProviderFallbackInfo | None) -> None:
        if info is None:
            self.timeline.event("no fallback recorded: served as requested", style="dim")
        else:
            self.timeline.event(
                Text.assemble(("fallback info: ", "magenta"), describe_fallback(info))
            )


def _expect(condition: bool, problem: str) -> None:
    if not condition:
        raise StepFailed(problem)


# -- the steps -------------------------------------------------------------------------------


async def _retry_after(demo: _Demo) -> None:
    server, tl = demo.server, demo.timeline
    model = "gpt-demo-busy"
    server.script(
        model,
        [
            Behavior(
                kind="status",
                status=429,
                retry_after="1",
                message="Rate limit reached for requests. Please try again in 1s.",
            ),
            Behavior(text="Served after waiting out the rate limit."),
        ],
    )
    since = len(server.requests)
    rp = demo.reliable("primary", max_retries=2, base_backoff=0.2)
    with fallback_scope():
        text = await rp.chat_with_system(None, "Hello!", model, 0.0)
        info = take_last_provider_fallback()
    tl.event(Text.assemble(("answer: ", "bold"), (repr(text), "green")))
    demo.fallback(info)
    seen = demo.requests_for(model, since)
    _expect(len(seen) == 2, f"expected 2 requests (429, then ok), the server saw {len(seen)}")
    gap = server.requests[seen[1]].received_at - server.requests[seen[0]].received_at
    tl.event(f"the server saw the retry {gap * 1000:.0f} ms after its 429 (Retry-After: 1)")
    _expect(0.95 <= gap < 2.0, f"the retry came {gap:.2f} s after the 429, expected ~1 s")
    _expect(text == "Served after waiting out the rate limit.", f"unexpected answer {text!r}")


async def _provider_failover(demo: _Demo) -> None:
    server, tl = demo.server, demo.timeline
    server.script(
        "gpt-demo-broken",
        [
            Behavior(
                kind="status",
                status=500,
                message="The server had an error while processing your request.",
            )
        ],
    )
    server.script("claude-demo", [Behavior(text="Hello from the backup provider.")])
    since = len(server.requests)
    rp = demo.reliable(
        "primary",
        "backup",
        max_retries=1,
        base_backoff=0.1,
        model_aliases={
            "primary": {"demo-chat": "gpt-demo-broken"},
            "backup": {"demo-chat": "claude-demo"},
        },
    )
    with fallback_scope():
        text = await rp.chat_with_system(None, "Hello!", "demo-chat", 0.0)
        info = take_last_provider_fallback()
    tl.event(Text.assemble(("answer: ", "bold"), (repr(text), "green")))
    demo.fallback(info)
    failed = demo.requests_for("gpt-demo-broken", since)
    served = demo.requests_for("claude-demo", since)
    tl.event(
        f"the server saw {len(failed)} requests to primary (500) and {len(served)} "
        "to backup (/v1/messages, Anthropic protocol)"
    )
    _expect(info is not None and info.actual_provider == "backup", "backup did not serve")
    _expect(len(failed) == 2, f"expected 2 attempts on primary, saw {len(failed)}")
    _expect(len(served) == 1, f"expected 1 request to backup, saw {len(served)}")


async def _dead_primary(demo: _Demo) -> None:
    server, tl = demo.server, demo.timeline
    server.script(
        "gpt-demo-dead",
        [Behavior(kind="status", status=503, message="The engine is currently overloaded.")],
    )
    server.script("claude-demo-steady", [Behavior(text="The backup keeps serving.")])
    since = len(server.requests)
    rp = demo.reliable(
        "primary",
        "backup",
        max_retries=2,
        base_backoff=0.1,
        health=HealthPolicy(open_after=3, open_for=5.0),
        model_aliases={
            "primary": {"demo-chat": "gpt-demo-dead"},
            "backup": {"demo-chat": "claude-demo-steady"},
        },
    )
    for request in (1, 2, 3):
        tl.event(Text(f"request {request}", style="bold"))
        await rp.chat_with_system(None, "Hello!", "demo-chat", 0.0)
    route = rp.health()[("primary", "gpt-demo-dead")]
    dead = demo.requests_for("gpt-demo-dead", since)
    served = demo.requests_for("claude-demo-steady", since)
    left = (route.opened_until or 0.0) - trio.current_time()
    tl.event(
        f"primary's breaker is {route.state} for another {left:.1f} s; the server saw "
        f"{len(dead)} requests to primary and {len(served)} to backup"
    )
    _expect(route.state == "open", f"primary's breaker is {route.state}, expected open")
    _expect(len(dead) == 3, f"expected 3 attempts on primary (then skipped), saw {len(dead)}")
    _expect(len(served) == 3, f"expected backup to serve all 3 requests, saw {len(served)}")


async def _model_fallback(demo: _Demo) -> None:
    server, tl = demo.server, demo.timeline
    server.script(
        "demo-large",
        [
            Behavior(
                kind="status",
                status=404,
                message="The model `demo-large` does not exist or you do not have access to it.",
            )
        ],
    )
    server.script("demo-small", [Behavior(text="The smaller model answers instead.")])
    since = len(server.requests)
    rp = demo.reliable(
        "primary",
        "backup",
        max_retries=1,
        base_backoff=0.1,
        model_fallbacks={"demo-large": ["demo-small"]},
    )
    with fallback_scope():
        text = await rp.chat_with_system(None, "Hello!", "demo-large", 0.0)
        info = take_last_provider_fallback()
    tl.event(Text.assemble(("answer: ", "bold"), (repr(text), "green")))
    demo.fallback(info)
    large = demo.requests_for("demo-large", since)
    _expect(
        info is not None
        and info.actual_model == "demo-small"
        and info.actual_provider == "primary",
        "demo-small on primary did not serve",
    )
    _expect(
        len(large) == 2,
        f"expected demo-large to be tried once per provider (404 is not retried), saw {len(large)}",
    )


async def _context_window(demo: _Demo) -> None:
    server, tl = demo.server, demo.timeline
    model = "gpt-demo-small-window"
    server.script(
        model,
        [
            Behavior(
                kind="status",
                status=400,
                message=(
                    "This model's maximum context length is 8192 tokens. However, your "
                    "messages resulted in 12408 tokens. Please reduce the length of the messages."
                ),
            ),
            Behavior(text="Answered from the most recent half of the conversation."),
        ],
    )
    history = [ChatMessage.system("You are a concise assistant.")]
    for turn in range(6):
        history.append(ChatMessage.user(f"Question {turn + 1}: " + "lorem ipsum " * 40))
        history.append(ChatMessage.assistant(f"Answer {turn + 1}: " + "dolor sit amet " * 40))
    history.append(ChatMessage.user("And to sum it all up?"))
    since = len(server.requests)
    rp = demo.reliable("primary", max_retries=1, base_backoff=0.1)
    with fallback_scope():
        text = await rp.chat_with_history(history, model, 0.0)
        info = take_last_provider_fallback()
    tl.event(Text.assemble(("answer: ", "bold"), (repr(text), "green")))
    demo.fallback(info)
    seen = demo.requests_for(model, since)
    _expect(len(seen) == 2, f"expected 2 requests (overflow, then truncated), saw {len(seen)}")
    sizes = [_message_count(server.requests[i].json) for i in seen]
    tl.event(
        f"the server received {sizes[0]} messages (context error), "
        f"then {sizes[1]} (answered); the system prompt and the last question were kept"
    )
    _expect(sizes[1] < sizes[0], "the retry did not send a shorter history")
    last = server.requests[seen[1]].json["messages"][-1]["content"]
    _expect(last == "And to sum it all up?", "the last question was not kept")


def _message_count(body: object) -> int:
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        return len(body["messages"])
    return -1


async def _stream_failover(demo: _Demo) -> None:
    server, tl = demo.server, demo.timeline
    server.script("gpt-demo-hangs", [Behavior(kind="hang_headers")])
    server.script("claude-demo-stream", [Behavior(text=STREAM_TEXT, ttft=0.05, gap=0.04)])
    since = len(server.requests)
    timeout = 1.0
    rp = demo.reliable(
        "primary",
        "backup",
        max_retries=0,
        first_chunk_timeout=timeout,
        idle_timeout=5.0,
        model_aliases={
            "primary": {"demo-stream": "gpt-demo-hangs"},
            "backup": {"demo-stream": "claude-demo-stream"},
        },
    )
    tl.event(f"primary accepts the connection and never answers; first_chunk_timeout={timeout} s")
    start = trio.current_time()
    first, text, info = await demo.stream(rp, "Tell me something.")
    closed = demo.closed_at("gpt-demo-hangs", since)
    if closed is not None:
        tl.event(
            f"the hung connection to primary was closed by the client "
            f"{(closed - start) * 1000:.0f} ms after the stream was opened"
        )
    tl.event(f"time to first token: {first * 1000:.0f} ms (timeout {timeout * 1000:.0f} ms)")
    _expect(timeout <= first < timeout + 1.0, f"first token after {first:.2f} s, expected ~1 s")
    _expect(text == STREAM_TEXT, "the streamed text is not what backup sent")
    _expect(info is not None and info.actual_provider == "backup", "no fallback to backup noted")
    _expect(closed is not None, "the hung upstream connection was not closed")


async def _hedged(demo: _Demo) -> None:
    server, tl = demo.server, demo.timeline
    server.script("gpt-demo-slow", [Behavior(text="The slow primary answered.", ttft=1.5)])
    server.script("claude-demo-quick", [Behavior(text="The hedge answered first.", ttft=0.05)])
    since = len(server.requests)
    rp = demo.reliable(
        "primary",
        "backup",
        max_retries=0,
        hedge=Hedge(after=0.3, budget=1.0),
        model_aliases={
            "primary": {"demo-stream": "gpt-demo-slow"},
            "backup": {"demo-stream": "claude-demo-quick"},
        },
    )
    tl.event("primary takes 1.5 s to its first token today; Hedge(after=0.3)")
    start = trio.current_time()
    first, text, info = await demo.stream(rp, "Anyone there?")
    closed = demo.closed_at("gpt-demo-slow", since)
    tl.event(f"time to first token: {first * 1000:.0f} ms, instead of 1500 ms")
    if closed is not None:
        tl.event(
            f"the slow primary's connection was closed {(closed - start) * 1000:.0f} ms "
            "after the stream was opened, when the hedge answered"
        )
    _expect(0.3 <= first < 1.0, f"first token after {first:.2f} s, expected ~0.35 s")
    _expect(text == "The hedge answered first.", "the hedge's answer is not intact")
    _expect(closed is not None, "the losing upstream connection was not closed")
    lost = [a for a in (info.attempts if info else ()) if a.reason == "hedge_lost"]
    _expect(len(lost) == 1, "the loser is not recorded as hedge_lost")


CUT_TEXT = (
    "The sky looks blue because air molecules scatter short blue wavelengths "
    "of sunlight far more than the long red ones, so blue reaches us from every direction. "
)


async def _stream_continue(demo: _Demo) -> None:
    server, tl = demo.server, demo.timeline
    server.script("gpt-demo-cut", [Behavior(kind="cut", after=8, text=CUT_TEXT, gap=0.02)])
    server.script("claude-demo-continue", [Behavior(text=CUT_TEXT, ttft=0.05, gap=0.02)])
    since = len(server.requests)
    rp = demo.reliable(
        "primary",
        "backup",
        max_retries=0,
        mid_stream="continue",
        model_aliases={
            "primary": {"demo-stream": "gpt-demo-cut"},
            "backup": {"demo-stream": "claude-demo-continue"},
        },
    )
    tl.event('primary\'s connection is cut after 8 words; mid_stream="continue"')
    _, text, info = await demo.stream(rp, "Why is the sky blue?")
    _expect(info is not None and len(info.recoveries) == 1, "no recovery was recorded")
    assert info is not None
    rec = info.recoveries[0]
    tl.event(
        f"recovered: {rec.provider} broke after {rec.after_chars} characters; "
        f"{rec.to_provider} continued the same answer ({rec.mode})"
    )
    (request,) = [server.requests[i] for i in demo.requests_for("claude-demo-continue", since)]
    prefill = request.json["messages"][-1]
    tl.event("backup was sent the delivered text as a trailing assistant message (prefill)")
    _expect(prefill["role"] == "assistant", "the continuation request had no prefill")
    _expect(rec.mode == "continue", f"recovery mode was {rec.mode}")
    _expect(text == CUT_TEXT, "the caller did not get exactly one whole answer")


async def _stream_cancel(demo: _Demo) -> None:
    server, tl = demo.server, demo.timeline
    model = "gpt-demo-long-answer"
    server.script(model, [Behavior(chunks=300, ttft=0.02, gap=0.02)])
    since = len(server.requests)
    rp = demo.reliable("primary", max_retries=0, first_chunk_timeout=5.0)
    tl.event("a 300-piece answer starts; the caller leaves after 10 pieces")
    pieces = 0
    async with rp.stream_chat_with_history([ChatMessage.user("Go on.")], model, 0.0) as chunks:
        async for chunk in chunks:
            if chunk.delta:
                tl.tokens(chunk.delta)
                pieces += 1
                if pieces == 10:
                    break
        left = trio.current_time()
    closed_at = trio.current_time()
    seen = demo.requests_for(model, since)
    _expect(len(seen) == 1, f"expected 1 request, saw {len(seen)}")
    with trio.move_on_after(2.0):
        at = await server.wait_for_disconnect(seen[0])
    _expect(
        any(d.request_index == seen[0] for d in server.disconnects),
        "the server never saw the connection close",
    )
    latency = (at - left) * 1000
    tl.event(
        f"left the stream; `async with` returned after {(closed_at - left) * 1000:.1f} ms; "
        f"the server recorded the disconnect {latency:.1f} ms after leaving"
    )
    _expect(seen[0] in server.aborted, "the server did not see the response abandoned")
    _expect(latency < 250, f"the upstream connection closed {latency:.0f} ms after leaving")


CLOUD_TEXT = "Served by Azure OpenAI after Gemini and the Responses API both failed. "


async def _native_clouds(demo: _Demo) -> None:
    from reliant.providers import AzureOpenAI, Gemini, OpenAIResponses

    server, tl = demo.server, demo.timeline
    server.script("gemini-demo", [Behavior(kind="status", status=429, retry_after="30")])
    server.script("gpt-demo-responses", [Behavior(kind="inband_error", status=500)])
    server.script("azure-demo-deployment", [Behavior(text=CLOUD_TEXT, ttft=0.01, gap=0.005)])
    since = len(server.requests)
    async with (
        Gemini(name="gemini", base_url=server.gemini_base_url, api_key=DEMO_KEY) as gemini,
        OpenAIResponses(
            name="responses", base_url=server.responses_base_url, api_key=DEMO_KEY
        ) as responses,
        AzureOpenAI(name="azure", base_url=server.azure_base_url, api_key=DEMO_KEY) as azure,
    ):
        rp = ReliableProvider(
            [("gemini", gemini), ("responses", responses), ("azure", azure)],
            max_retries=0,
            model_aliases={
                "gemini": {"demo-stream": "gemini-demo"},
                "responses": {"demo-stream": "gpt-demo-responses"},
                "azure": {"demo-stream": "azure-demo-deployment"},
            },
        )
        tl.event(
            "gemini answers 429 RESOURCE_EXHAUSTED (retryDelay 30s in the body); the "
            "Responses API answers HTTP 200, then response.failed"
        )
        _, text, info = await demo.stream(rp, "Which cloud is up?")
    paths = [r.path.split("?")[0] for r in server.requests[since:]]
    tl.event("the server saw: " + ", ".join(paths))
    _expect(text == CLOUD_TEXT, "the streamed text is not what Azure sent")
    _expect(info is not None and info.actual_provider == "azure", "Azure did not serve")
    _expect(
        paths
        == [
            "/v1beta/models/gemini-demo:streamGenerateContent",
            "/v1/responses",
            "/openai/v1/chat/completions",
        ],
        f"unexpected requests {paths}",
    )
    failed = [a for a in (info.attempts if info else ()) if a.provider == "responses"]
    _expect(
        len(failed) == 1 and "500" in failed[0].error,
        "response.failed was not recorded as a failed attempt",
    )


_STEPS: list[tuple[str, str, str, Callable[[_Demo], Awaitable[None]]]] = [
    (
        "429, Retry-After",
        "429 with Retry-After: waited out, then served",
        "primary answers 429 with `retry-after: 1`; reliant waits that long.",
        _retry_after,
    ),
    (
        "500, provider failover",
        "500 on the primary: retried once, then the backup serves",
        "backup is a different provider speaking the Anthropic protocol.",
        _provider_failover,
    ),
    (
        "dead primary, breaker",
        "dead primary: its breaker opens, the next requests skip it",
        "503 three times opens primary's circuit breaker for 5 s; requests 2 and 3 "
        "go to backup without calling primary or sleeping.",
        _dead_primary,
    ),
    (
        "model fallback",
        "model fallback: demo-large fails everywhere, demo-small serves",
        "404 for demo-large on both providers (never retried).",
        _model_fallback,
    ),
    (
        "context window recovery",
        "context window overflow: history truncated, then served",
        "a 14-message conversation is too long; the oldest half is dropped.",
        _context_window,
    ),
    (
        "stream, hung primary",
        "stream: the primary hangs; failover at the first-chunk timeout",
        "primary never sends headers; after 1 s the stream moves to backup.",
        _stream_failover,
    ),
    (
        "stream, hedged",
        "stream: a slow primary is hedged; the first answer wins",
        "primary is slow today (1.5 s to its first token); after 0.3 s the backup is asked "
        "too, its first token wins and the primary's connection is closed.",
        _hedged,
    ),
    (
        "stream, cut and continued",
        "stream cut mid-answer: the backup continues the same answer",
        "primary's connection drops after 8 words; backup (Anthropic) is sent the text so "
        "far as a prefill and finishes it: one answer, nothing repeated or lost.",
        _stream_continue,
    ),
    (
        "stream, cancelled",
        "stream cancelled mid-flight: the upstream connection closes at once",
        "the caller breaks out of `async with` while the server is sending.",
        _stream_cancel,
    ),
    (
        "stream, across clouds",
        "stream across clouds: Gemini -> Responses API -> Azure OpenAI",
        "Gemini's quota is exhausted (429), the Responses API fails after HTTP 200 "
        "(response.failed, never an empty success); Azure OpenAI streams the answer.",
        _native_clouds,
    ),
]


async def _run(out: Console) -> list[_StepResult]:
    timeline = Timeline(out)
    results: list[_StepResult] = []
    from reliant.providers import Anthropic, OpenAICompatible

    async with serve_fake_llm() as server:
        out.print(
            Text.assemble(
                ("reliant demo", "bold"),
                f": fake LLM server at {server.base_url}, in-process; no keys.",
            )
        )
        out.print(
            Text(
                "primary = OpenAICompatible, backup = Anthropic: real HTTP on loopback.",
                style="dim",
            ),
            overflow="fold",
        )
        async with (
            OpenAICompatible(
                name="primary", base_url=server.openai_base_url, api_key=DEMO_KEY
            ) as primary,
            Anthropic(
                name="backup", base_url=server.anthropic_base_url, api_key=DEMO_KEY
            ) as backup,
        ):
            demo = _Demo(server, primary, backup, timeline)
            with capture_reliant_logs(timeline.on_record):
                for number, (label, title, explain, step) in enumerate(_STEPS, 1):
                    timeline.begin(number, len(_STEPS), title, explain)
                    problem: str | None = None
                    with trio.move_on_after(STEP_TIMEOUT) as deadline:
                        try:
                            await step(demo)
                        except StepFailed as failed:
                            problem = str(failed)
                        except Exception as err:
                            lines = str(err).splitlines() or [""]
                            problem = f"{type(err).__name__}: {' | '.join(lines[:4])}"
                    if deadline.cancelled_caught:
                        problem = f"did not finish within {STEP_TIMEOUT:g} s"
                    elapsed = timeline.end(problem)
                    results.append(_StepResult(number, label, title, elapsed, problem))
    return results


def _summary(out: Console, results: list[_StepResult]) -> None:
    table = Table(title="summary", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("step")
    table.add_column("result")
    table.add_column("time", justify="right")
    for r in results:
        verdict = Text("ok", style="green") if r.problem is None else Text("FAILED", style="red")
        table.add_row(str(r.number), r.label, verdict, f"{r.elapsed:.0f} ms")
    out.print()
    out.print(table)


def run_demo(out: Console, err: Console) -> int:
    """Run the demo; 0 when every step behaved as expected, else 1."""
    t0 = time.perf_counter()
    results = trio.run(_run, out)
    total = time.perf_counter() - t0
    _summary(out, results)
    failed = [r for r in results if r.problem is not None]
    if failed:
        for r in failed:
            say(
                err,
                f"reliant demo: step {r.number} ({r.label}) did not behave as expected: "
                f"{r.problem}",
                "red",
            )
        return 1
    out.print(
        Text(
            f"All {len(results)} steps behaved as expected in {total:.1f} s.",
            style="bold green",
        )
    )
    return 0
