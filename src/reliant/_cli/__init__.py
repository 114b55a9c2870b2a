"""The ``reliant`` command: ``demo``, ``chat`` and ``bench``.

Only this package imports rich, and ``import reliant`` never imports this
package, so the library stays free of terminal dependencies. Subcommand
modules are imported when their command runs.

Exit codes: 0 success; 1 the demo or a benchmark did not behave as expected;
2 bad input (arguments, configuration, environment, unreachable providers);
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "main"]

from ._exit import EXIT_BAD_INPUT as EXIT_BAD_INPUT
from ._exit import EXIT_FAILED as EXIT_FAILED
from ._exit import EXIT_INTERRUPTED as EXIT_INTERRUPTED

NEEDS_CLI_EXTRA = "reliant's command line needs the cli extra: pip install 'reliant[cli]'"

_DESCRIPTION = """\
Reliable calls to LLM providers: retries, Retry-After, provider and model
fallback chains, context-window recovery and streaming failover.

  reliant demo                      see every failover behaviour live (no keys, no network)
  reliant chat "prompt"             ask through the providers declared in reliant.toml
  reliant bench                     measure failover latency (fake server or --config)
"""


# The steps `reliant demo` runs, in order, as its --help lists them (the demo's
# own step table is checked against this list by the tests): kept here so
# `--help` does not import the demo's server and providers.
DEMO_STEPS: tuple[str, ...] = (
    "429, Retry-After: waited out, then served",
    "500, provider failover: retried once, then the backup serves",
    "dead primary, breaker: it opens, the next requests skip the primary",
    "model fallback: demo-large fails everywhere, demo-small serves",
    "context window recovery: history truncated, then served",
    "stream, hung primary: failover at the first-chunk timeout",
    "stream, hedged: a slow primary is hedged, the first answer wins",
    "stream, cut and continued: the backup continues the same answer",
    "stream, cancelled: the upstream connection closes at once",
    "stream, across clouds: Gemini's 429, the Responses API's response.failed, Azure serves",
)


def _build_parser() -> argparse.ArgumentParser:
    from reliant import __version__

    parser = argparse.ArgumentParser(
        prog="reliant",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"reliant {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    steps = "\n".join(f"  {i}. {step}" for i, step in enumerate(DEMO_STEPS, 1))
    sub.add_parser(
        "demo",
        help="watch retries and failover happen on an embedded fake LLM server",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Start a fake LLM server on loopback and show, on real sockets with the real\n"
            f"providers, {len(DEMO_STEPS)} steps:\n\n"
            f"{steps}\n\nNo API keys, no network."
        ),
    )

    chat = sub.add_parser(
        "chat",
        help="send one prompt through the providers of a reliant.toml",
        description=(
            "Send PROMPT through the provider chain declared in the config file and stream "
            "the answer to stdout. Fallbacks are noted on stderr. Config: --config, else "
            "$RELIANT_CONFIG, else ./reliant.toml (format: docs/configuration.md)."
        ),
    )
    chat.add_argument("prompt", help="the message to send")
    chat.add_argument("--config", metavar="FILE", help="configuration file (TOML)")
    chat.add_argument("--model", metavar="M", help="model to request (default: default_model)")
    chat.add_argument("--system", metavar="S", help="system prompt")
    chat.add_argument(
        "--no-stream", action="store_true", help="wait for the whole answer instead of streaming"
    )
    chat.add_argument(
        "--temperature",
        type=float,
        metavar="T",
        help="sampling temperature (default: the config's temperature, else 0.7)",
    )
    chat.add_argument(
        "--trace",
        action="store_true",
        help="print the request's attempt tree to stderr (provider, outcome, start/end ms)",
    )

    from reliant._bench import SCENARIO_NAMES

    bench = sub.add_parser(
        "bench",
        help="measure failover latency (time to first token)",
        description=(
            "Measure time to first token through ReliableProvider for failover scenarios on "
            "the embedded fake server (default), or for your own providers (--config), and "
            "compare it with calling the provider that served directly, in the same run. "
            "Each sample records its path: retries, fallbacks, and whether it skipped an "
            "open circuit breaker (the 'skipped' column). With --config, provider health "
            "is fresh for every repetition unless --health says otherwise, so a hung "
            "primary measures its first-chunk timeout and failover, not the breaker skip."
        ),
    )
    bench.add_argument(
        "-n",
        "--repetitions",
        type=int,
        default=20,
        metavar="N",
        help="repetitions per scenario (default: 20)",
    )
    bench.add_argument(
        "--scenario",
        action="append",
        choices=(*SCENARIO_NAMES, "balance"),
        metavar="NAME",
        help="run only this scenario (repeatable); one of: "
        + ", ".join(SCENARIO_NAMES)
        + "; or balance (alone): how routing shares 900 streams over three deployments "
        "while one slows from 50 to 500 ms and recovers (-n does not apply)",
    )
    bench.add_argument(
        "--config", metavar="FILE", help="benchmark the providers of this config instead"
    )
    bench.add_argument("--model", metavar="M", help="with --config: model to request")
    bench.add_argument(
        "--prompt",
        default="Reply with one short sentence.",
        help="with --config: the prompt to send",
    )
    bench.add_argument(
        "--health",
        choices=("fresh", "shared", "off"),
        default=None,
        help=(
            "with --config: provider health during the runs. fresh (default): every "
            "repetition starts with new, in-process breakers, so each one measures the "
            "failover itself; shared: health as configured (Redis included) carries over "
            "between repetitions, so once a breaker opens the samples measure skipping it; "
            "off: no provider health (every repetition pays every retry). The 'skipped' "
            "column counts the samples that skipped an open breaker"
        ),
    )
    bench.add_argument("--json", metavar="FILE", help="write every figure and raw sample as JSON")
    bench.add_argument(
        "--plot", metavar="FILE", help="write a chart of the distributions (.png or .svg)"
    )
    return parser


def _consoles() -> tuple[Console, Console]:
    from rich.console import Console

    # Created per call so that redirected streams (pytest's capsys, pipes)
    # are honoured; rich drops colour and control codes when not a terminal.
    return Console(file=sys.stdout, highlight=False), Console(
        file=sys.stderr, stderr=True, highlight=False
    )


def _is_interrupt(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``reliant`` command line; returns the exit status.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).
    """
    try:
        import rich  # noqa: F401
    except ImportError:
        print(NEEDS_CLI_EXTRA, file=sys.stderr)
        return EXIT_BAD_INPUT

    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error (argparse says 2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_BAD_INPUT
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT

    out, err = _consoles()
    try:
        if args.command == "demo":
            from ._demo import run_demo

            return run_demo(out, err)
        if args.command == "chat":
            from ._chat import run_chat_command

            return run_chat_command(args, out, err)
        from ._bench_cmd import run_bench_command

        return run_bench_command(args, out, err)
    except BaseException as exc:
        if _is_interrupt(exc):
            sys.stdout.flush()
            from ._common import say

            say(err, "\nreliant: interrupted", "yellow")
            return EXIT_INTERRUPTED
        raise
