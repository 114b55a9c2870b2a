"""The fault-injecting fake LLM server, importable and runnable on its own.

In tests::

    from reliant.testing.fake_server import Behavior, serve_fake_llm

    async with serve_fake_llm() as server:
        server.script(None, [Behavior(kind="status", status=503), "ok"])
        ...  # point a provider at server.openai_base_url or server.anthropic_base_url

As its own process (prints the base URLs, serves until Ctrl-C or SIGTERM;
``--verbose`` logs one line per request on stderr, naming the behaviour chosen)::

    python -m reliant.testing.fake_server --port 8080 [--host 127.0.0.1] [--verbose]

which prints::

    openai:    http://127.0.0.1:8080/v1
    anthropic: http://127.0.0.1:8080
    bedrock:   http://127.0.0.1:8080

The behaviour of each request is chosen by its model name (``ok``,
``status:429:retry_after=3``, ``cut:after=3``, ...); the full convention is
in :mod:`reliant.testing._fake_server`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from ._fake_deployments import Deployment as Deployment
from ._fake_deployments import DeploymentStats as DeploymentStats
from ._fake_server import Behavior as Behavior
from ._fake_server import BehaviorKind as BehaviorKind
from ._fake_server import Disconnect as Disconnect
from ._fake_server import FakeLLMServer as FakeLLMServer
from ._fake_server import FakeRequest as FakeRequest
from ._fake_server import serve_fake_llm as serve_fake_llm
from ._raw import RawResponse as RawResponse
from ._raw import gzip_bomb as gzip_bomb
from ._raw import http_response as http_response
from ._raw import trickle as trickle

__all__ = [
    "Behavior",
    "BehaviorKind",
    "Deployment",
    "DeploymentStats",
    "Disconnect",
    "FakeLLMServer",
    "FakeRequest",
    "RawResponse",
    "gzip_bomb",
    "http_response",
    "main",
    "serve_fake_llm",
    "trickle",
]


async def _serve_forever(host: str, port: int) -> None:
    # SIGTERM ends the server cleanly too (background jobs, CI); Ctrl-C is
    # KeyboardInterrupt as usual.
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with serve_fake_llm(host=host, port=port) as server:
            # The base URLs, each as a client wants it: the OpenAI one ends
            # in /v1, the Anthropic (and Bedrock) one is the root (one printed URL used to
            # be pasted into both, and one of them then got 404s).
            print(f"openai:    {server.openai_base_url}", flush=True)
            print(f"anthropic: {server.anthropic_base_url}", flush=True)
            print(f"bedrock:   {server.bedrock_base_url}", flush=True)
            async for _ in signals:
                return


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake server until interrupted; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m reliant.testing.fake_server",
        description="Fault-injecting fake LLM server (OpenAI, Anthropic, Bedrock wire protocols).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (0: any)")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="log one line per request on stderr: its path, model and the behaviour chosen",
    )
    args = parser.parse_args(argv)
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log = logging.getLogger("reliant.testing.fake_server")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        trio.run(_serve_forever, args.host, args.port)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
