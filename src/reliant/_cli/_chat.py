"""``reliant chat``: one prompt through the configured provider chain.

The answer goes to stdout as it arrives (raw text, nothing else), every
remark goes to stderr, so ``reliant chat "..." > answer.txt`` captures only
the answer. Ctrl-C raises ``KeyboardInterrupt`` inside the ``async with`` of
the stream; leaving it cancels the bridge, which closes the upstream
connection before the command exits with 130.
"""

from __future__ import annotations

import argparse
import logging
import math
from contextlib import AsyncExitStack
from typing import IO

import trio
from rich.console import Console

from reliant import (
    ChatMessage,
    FailoverError,
    NoStreamingProviderError,
    ReliantError,
    fallback_scope,
    take_last_provider_fallback,
)

from . import EXIT_BAD_INPUT, EXIT_FAILED
from ._common import capture_reliant_logs, describe_fallback, say, short_error
from ._config import (
    Config,
    ConfigError,
    build_providers,
    build_reliable,
    enter_health,
    load_config,
)

__all__ = ["chat", "run_chat_command"]


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
) -> None:
    """Answer ``prompt`` through the configured chain, writing the answer to ``out``.

    Raises:
        ConfigError: An API key's environment variable is missing.
        ReliantError: Every candidate failed, or a committed stream broke.
    """
    failures: list[logging.LogRecord] = []

    def remember(record: logging.LogRecord) -> None:
        if record.name == "reliant" and "error" in record.__dict__:
            failures.append(record)

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
        with fallback_scope(), capture_reliant_logs(remember):
            if stream:
                async with reliable.stream_chat_with_history(
                    messages, model, temperature
                ) as chunks:
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
            info = take_last_provider_fallback()
        if not wrote_newline:
            out.write("\n")
        out.flush()
        if info is not None:
            note = f"reliant: {describe_fallback(info)}"
            first = next((r for r in failures if r.__dict__.get("provider")), None)
            if first is not None:
                note += f" (first failure: {first.__dict__['provider']}: "
                note += f"{short_error(str(first.__dict__['error']))})"
            say(err, note, "yellow")


def _fail(err: Console, message: str) -> None:
    say(err, message, "red")


def run_chat_command(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run ``reliant chat``; 0 on success, 2 for bad input or when every provider failed."""
    try:
        config = load_config(args.config)
    except ConfigError as problem:
        _fail(err, f"reliant: {problem}")
        return EXIT_BAD_INPUT
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
