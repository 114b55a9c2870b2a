"""``reliant chat``: one prompt through the configured provider chain.

The answer goes to stdout as it arrives (raw text, nothing else), every
remark goes to stderr, so ``reliant chat "..." > answer.txt`` captures only
the answer. Ctrl-C raises ``KeyboardInterrupt`` inside the ``async with`` of
the stream; leaving it cancels the bridge, which closes the upstream
connection before the command exits with 130. ``--trace`` prints the
request's attempt tree (from its ``RequestRecord``) to stderr, whatever the
outcome.
"""

from __future__ import annotations

import argparse
import math
from contextlib import AsyncExitStack
from typing import IO, TYPE_CHECKING

import trio
from rich.console import Console

from reliant import (
    ChatMessage,
    FailoverError,
    NoStreamingProviderError,
    ReliantError,
    RequestRecord,
    fallback_scope,
    take_last_provider_fallback,
    take_last_request_record,
)

from ._common import describe_fallback, say, short_error
from ._config import (
    Config,
    ConfigError,
    build_providers,
    build_reliable,
    enter_health,
    load_config,
)
from ._exit import EXIT_BAD_INPUT, EXIT_FAILED

if TYPE_CHECKING:
    from reliant import ReliableProvider

__all__ = ["chat", "format_trace", "run_chat_command"]


def format_trace(record: RequestRecord) -> str:
    """The attempt tree of one request: each attempt's route, outcome and times (ms from start).

    Example::

        reliant trace: request 3 (model chat) success in 412 ms, served by backup (claude-x)
          |- primary (gpt-x) #1  retryable  0 -> 208 ms  primary API error (500 ...)
          `- backup (claude-x) #1  success  208 -> 412 ms
    """

    def ms(at: float | None) -> str:
        return "?" if at is None else f"{(at - record.started_at) * 1000:.0f}"

    head = (
        f"reliant trace: request {record.request_id} (model {record.requested_model}) "
        f"{record.outcome} in {record.duration * 1000:.0f} ms"
    )
    if record.actual_provider is not None:
        head += f", served by {record.actual_provider} ({record.actual_model})"
    if record.time_to_first_chunk is not None:
        head += f", first chunk at {record.time_to_first_chunk * 1000:.0f} ms"
    lines = [head]
    for i, a in enumerate(record.attempts):
        branch = "`-" if i == len(record.attempts) - 1 else "|-"
        when = (
            f"skipped at {ms(a.ended_at)} ms"
            if a.started_at is None
            else f"{ms(a.started_at)} -> {ms(a.ended_at)} ms"
        )
        line = f"  {branch} {a.provider} ({a.model}) #{a.attempt}  {a.reason}  {when}"
        if a.error:
            line += f"  {short_error(a.error)}"
        lines.append(line)
    for r in record.recoveries:
        lines.append(
            f"  recovered: {r.provider} ({r.model}) broke after {r.after_chars} characters, "
            f"{r.mode} on {r.to_provider or '?'} ({r.to_model or '?'})"
        )
    return "\n".join(lines)


async def chat(
    config: Config,
    *,
    prompt: str,
    model: str,
    system: str | None,
    temperature: float,
    stream: bool,
    out: IO[str],
    err: Console,
    trace: bool = False,
) -> None:
    """Answer ``prompt`` through the configured chain, writing the answer to ``out``.

    Raises:
        ConfigError: An API key's environment variable is missing.
        ReliantError: Every candidate failed, or a committed stream broke.
    """
    messages = [ChatMessage.user(prompt)]
    if system:
        messages.insert(0, ChatMessage.system(system))
    async with AsyncExitStack() as stack:
        providers = build_providers(config)
        for _, provider in providers:
            aclose = getattr(provider, "aclose", None)
            if aclose is not None:
                stack.push_async_callback(aclose)
        reliable = build_reliable(config, providers)
        await enter_health(reliable, stack)
        wrote_newline = True
        with fallback_scope():
            try:
                wrote_newline = await _ask(
                    reliable, messages, model, temperature, stream=stream, out=out, err=err
                )
            finally:
                record = take_last_request_record()
                if trace and record is not None:
                    if not wrote_newline:
                        out.write("\n")
                        wrote_newline = True
                    out.flush()
                    say(err, format_trace(record), "dim")
            info = take_last_provider_fallback()
        if not wrote_newline:
            out.write("\n")
        out.flush()
        if info is not None:
            note = f"reliant: {describe_fallback(info)}"
            first = next((a for a in info.attempts if a.started_at is not None), None)
            if first is not None:
                note += f" (first failure: {first.provider}: "
                note += f"{short_error(first.error, provider=first.provider)})"
            say(err, note, "yellow")


async def _ask(
    reliable: ReliableProvider,
    messages: list[ChatMessage],
    model: str,
    temperature: float,
    *,
    stream: bool,
    out: IO[str],
    err: Console,
) -> bool:
    """Send the request, writing the answer to ``out``; True if the output ends with a newline."""
    wrote_newline = True
    if stream:
        async with reliable.stream_chat_with_history(messages, model, temperature) as chunks:
            async for chunk in chunks:
                if chunk.restarted:
                    # mid_stream = "restart": what was printed is void.
                    if not wrote_newline:
                        out.write("\n")
                    out.flush()
                    say(err, "reliant: the stream broke; the answer starts again", "yellow")
                if chunk.delta:
                    out.write(chunk.delta)
                    out.flush()
                    wrote_newline = chunk.delta.endswith("\n")
    else:
        text = await reliable.chat_with_history(messages, model, temperature)
        out.write(text)
        wrote_newline = text.endswith("\n")
    return wrote_newline


def _fail(err: Console, message: str) -> None:
    say(err, message, "red")


def run_chat_command(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run ``reliant chat``; 0 on success, 2 for bad input or when every provider failed."""
    try:
        config = load_config(args.config)
    except ConfigError as problem:
        _fail(err, f"reliant: {problem}")
        return EXIT_BAD_INPUT
    for note in config.deprecations:
        say(err, f"reliant: {config.source}: {note}", "yellow")
    model = args.model or config.default_model
    if not model:
        _fail(err, f"reliant: no model: pass --model or set default_model in {config.source}")
        return EXIT_BAD_INPUT
    temperature = config.temperature if args.temperature is None else args.temperature
    if not (math.isfinite(temperature) and 0.0 <= temperature <= 2.0):
        _fail(err, "reliant: --temperature must be between 0 and 2")
        return EXIT_BAD_INPUT
    try:
        trio.run(
            lambda: chat(
                config,
                prompt=args.prompt,
                model=model,
                system=args.system,
                temperature=temperature,
                stream=not args.no_stream,
                out=out.file,
                err=err,
                trace=bool(getattr(args, "trace", False)),
            )
        )
    except ConfigError as problem:
        _fail(err, f"reliant: {problem}")
        return EXIT_BAD_INPUT
    except FailoverError as failure:
        lines = "\n".join(f"  {attempt}" for attempt in failure.attempts)
        header = str(failure).split("\n", 1)[0]
        _fail(err, f"reliant: {header}\n{lines}" if lines else f"reliant: {header}")
        return EXIT_BAD_INPUT
    except NoStreamingProviderError as problem:
        _fail(err, f"reliant: {problem}; try --no-stream")
        return EXIT_BAD_INPUT
    except ReliantError as problem:
        _fail(err, f"reliant: {problem}")
        return EXIT_FAILED
    return 0
