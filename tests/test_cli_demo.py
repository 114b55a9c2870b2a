"""`reliant demo` end to end, in-process and as a real `python -m reliant` subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from reliant._cli import _demo, main

STEPS = len(_demo._STEPS)
STEP_MARKERS = (
    "429 with Retry-After",
    "500 on the primary",
    "dead primary: its breaker opens",
    "model fallback",
    "context window overflow",
    "stream: the primary hangs",
    "stream: a slow primary is hedged",
    "stream cut mid-answer: the backup continues",
    "stream cancelled mid-flight",
    "stream across clouds: Gemini -> Responses API -> Azure OpenAI",
)


def _plain_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env["PYTHONWARNINGS"] = "error"
    return env


def test_demo_subprocess_exits_0_without_ansi_when_piped() -> None:
    """`python -m reliant demo` piped: every step ok, exit 0, no ANSI escape codes, < 30 s."""
    proc = subprocess.run(
        [sys.executable, "-m", "reliant", "demo"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_plain_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "\x1b[" not in proc.stdout and "\x1b[" not in proc.stderr
    titles = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert len(titles) == STEPS
    for marker in STEP_MARKERS:
        assert any(marker in line for line in titles), marker
    assert proc.stdout.count("\n  ok ") == STEPS
    assert f"All {STEPS} steps behaved as expected" in proc.stdout
    # The timeline shows reliant's own structured log records (lines wrap at 80 columns).
    text = " ".join(proc.stdout.split())
    assert "rate_limited (429 Too Many Requests) -> retry in 1.00 s" in text
    assert "context window exceeded -> dropped the 6 oldest messages" in text
    assert "served by backup (model claude-demo-stream)" in text
    assert "circuit open -> skipped without a call" in text
    assert "continued the same answer (continue)" in text
    assert "slow: hedged, started this one too" in text
    assert "after primary (model gpt-demo-slow) was slower (hedged)" in text
    assert "/v1beta/models/gemini-demo:streamGenerateContent, /v1/responses," in text
    assert proc.stderr == ""


def test_demo_in_process_uses_colour_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through `main(["demo"])` with a (forced) colour terminal: styled output, exit 0."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" in out
    assert f"All {STEPS} steps behaved as expected" in out


def test_demo_reports_a_misbehaving_step(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step whose check fails makes the demo exit 1 and say which step and why."""

    async def broken(demo: object) -> None:
        raise _demo.StepFailed("the server saw 3 requests, expected 2")

    async def crashing(demo: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(
        _demo,
        "_STEPS",
        [("broken step", "a step that fails", "it fails", broken), ("crash", "c", "c", crashing)],
    )
    assert main(["demo"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out
    assert (
        "step 1 (broken step) did not behave as expected: the server saw 3 requests" in captured.err
    )
    assert "step 2 (crash) did not behave as expected: RuntimeError: boom" in captured.err


def test_import_reliant_loads_neither_rich_nor_the_cli() -> None:
    """`import reliant` stays free of the CLI and its terminal dependency."""
    code = (
        "import sys, reliant; print(sorted(m for m in sys.modules "
        "if m.split('.')[0] == 'rich' or m.startswith(('reliant._cli', 'reliant._bench'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert out.strip() == "[]"


def test_demo_help_lists_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    """`reliant demo --help` lists all the steps the demo runs, in its order."""
    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    listed = [
        line.split(". ", 1)[1] for line in out.splitlines() if line[:4].strip()[:-1].isdigit()
    ]
    assert len(listed) == STEPS == 10
    assert [item.split(":")[0] for item in listed] == [label for label, *_ in _demo._STEPS]
    assert f"providers, {STEPS} steps:" in out
