"""The code examples of the README and docs/, with their printed output checked.

``test_docs_examples.py`` runs every block; these tests also check what some print.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from reliant import ChatMessage, ProviderError, ReliableProvider
from reliant.testing import Fail, Reply, ScriptedProvider

ROOT = Path(__file__).parent.parent
README = "\n".join(
    p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
)


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.DOTALL)


@pytest.mark.anyio
async def test_testing_kit_example() -> None:
    """The ScriptedProvider example: a Retry-After opens primary's breaker; backup serves at t=0."""
    primary = ScriptedProvider([Fail(ProviderError("busy", status_code=429, retry_after=30))])
    backup = ScriptedProvider([Reply("hi")])
    llm = ReliableProvider([("primary", primary), ("backup", backup)], max_retries=1)
    assert await llm.simple_chat("hello", "m", 0.0) == "hi"
    assert [c.started_at for c in primary.calls] == [0.0]
    assert [c.started_at for c in backup.calls] == [0.0]
    assert llm.health()[("primary", "m")].opened_until == 30.0
    assert any("opened_until == 30.0" in block for block in _python_blocks())


@pytest.mark.anyio
async def test_writing_a_provider_example() -> None:
    """The Echo provider from the providers guide streams its words through ReliableProvider."""
    block = next(b for b in _python_blocks() if "class Echo(Provider)" in b)
    namespace: dict[str, object] = {}
    exec(block, namespace)
    echo = namespace["Echo"]()  # type: ignore[operator]
    llm = ReliableProvider([("echo", echo)])  # type: ignore[list-item]
    async with llm.stream_chat_with_system(None, "a b c", "m", 0.0) as chunks:
        assert [c.delta async for c in chunks] == ["a ", "b ", "c ", ""]
    history = [ChatMessage.user("x y")]
    async with llm.stream_chat_with_history(history, "m", 0.0) as chunks:
        assert [c.delta async for c in chunks] == ["x ", "y ", ""]


def test_library_example_compiles() -> None:
    """The library example is valid Python that names only real reliant APIs."""
    block = next(b for b in _python_blocks() if "fallback_scope" in b)
    compile(block, "README.md", "exec")
    import reliant
    import reliant.providers

    for name in re.findall(r"from reliant(?:\.providers)? import ([\w, ]+)", block):
        for item in name.split(","):
            module = (
                reliant.providers if item.strip() in ("Anthropic", "OpenAICompatible") else reliant
            )
            assert hasattr(module, item.strip()), item


def test_observing_failover_hook_example(capsys: pytest.CaptureFixture[str]) -> None:
    """The on_event example prints the retry, the fallback, the request's end and its record."""
    block = next(b for b in _python_blocks() if "def on_event(event: ReliantEvent)" in b)
    exec(block, {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("retry primary in ")
    assert out[1] == "fallback primary -> backup (retryable)"
    assert out[2].startswith("request ") and ": success in " in out[2]
    assert out[3] == "hello"
    assert out[4].startswith("served by backup (m) in ")
    assert out[4].endswith(" ms after primary (m) failed twice (1 retry)")
    assert [line.split()[:3] for line in out[5:]] == [
        ["primary", "1", "retryable"],
        ["primary", "2", "retryable"],
        ["backup", "1", "success"],
    ]


def test_observing_failover_otel_example(capsys: pytest.CaptureFixture[str]) -> None:
    """The ConsoleSpanExporter example prints two attempt spans and the request span."""
    pytest.importorskip("opentelemetry.sdk")
    block = next(b for b in _python_blocks() if "ConsoleSpanExporter" in b)
    # The exporter's default stream is sys.stdout as it was when the SDK was
    # first imported (maybe by another test): give it the captured one.
    block = block.replace("ConsoleSpanExporter()", "ConsoleSpanExporter(out=sys.stdout)")
    exec(block, {"__name__": "readme", "sys": sys})
    out = capsys.readouterr().out
    assert out.count('"name": "chat gpt-4o"') == 3
    assert '"error.type": "503"' in out
    assert '"reliant.fallback"' in out
    assert '"gen_ai.provider.name": "backup"' in out


def test_routing_examples_print_what_they_say(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's and the routing guide's examples send 19 requests to east, 1 to west."""
    guide = (ROOT / "docs" / "guides" / "routing.md").read_text()
    for block in [
        next(b for b in _python_blocks() if 'routing=Routing(tiers=[["east", "west"]' in b),
        re.findall(r"```python\n(.*?)```", guide, re.DOTALL)[0],
    ]:
        exec(block, {"__name__": "readme"})
        out = capsys.readouterr().out.splitlines()
        assert out[0] == "{'east': 19, 'west': 1, 'backup': 0}"
