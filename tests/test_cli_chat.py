"""`reliant chat` against the fake LLM server: streaming, non-streaming, fallback notes, Ctrl-C."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from reliant._cli import main
from reliant._cli._chat import chat
from reliant._cli._config import Config, parse_config
from reliant.testing.fake_server import Behavior, FakeLLMServer, serve_fake_llm

KEY = "sk-chat-test-0123456789abcdefghij"


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    """A fake server in its own thread and trio loop, so `main()` can run `trio.run` here."""
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with serve_fake_llm() as fake:
            box["server"], box["token"], box["stop"] = (
                fake,
                trio.lowlevel.current_trio_token(),
                trio.Event(),
            )
            started.set()
            await box["stop"].wait()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert started.wait(10)
    yield box["server"]
    trio.from_thread.run_sync(box["stop"].set, trio_token=box["token"])
    thread.join(10)


def _config_text(fake: FakeLLMServer, primary_model: str, backup_model: str) -> str:
    return f"""
default_model = "chat"
max_retries = 0
base_backoff = 0.05
first_chunk_timeout = 5

[[providers]]
name = "primary"
kind = "openai"
base_url = "{fake.openai_base_url}"
api_key_env = "RELIANT_CHAT_KEY"
models = {{ chat = "{primary_model}" }}

[[providers]]
name = "backup"
kind = "anthropic"
base_url = "{fake.anthropic_base_url}"
api_key_env = "RELIANT_CHAT_KEY"
models = {{ chat = "{backup_model}" }}
"""


@pytest.fixture
def config_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer) -> Any:
    monkeypatch.setenv("RELIANT_CHAT_KEY", KEY)

    def write(primary_model: str = "ok:chunks=6", backup_model: str = "ok:chunks=3") -> Path:
        path = tmp_path / "reliant.toml"
        path.write_text(_config_text(server, primary_model, backup_model), encoding="utf-8")
        return path

    return write


def test_streams_answer_to_stdout(
    server: FakeLLMServer, config_for: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The streamed answer goes to stdout, nothing to stderr when the primary serves."""
    code = main(["chat", "hello", "--config", str(config_for())])
    out, err = capsys.readouterr()
    assert code == 0
    assert out == "tok0 tok1 tok2 tok3 tok4 tok5 \n"
    assert err == ""
    (request,) = server.requests
    assert request.stream and request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_no_stream_system_and_temperature(
    server: FakeLLMServer, config_for: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """--no-stream makes one JSON call carrying --system and --temperature."""
    argv = ["chat", "hi", "--config", str(config_for()), "--no-stream"]
    code = main([*argv, "--system", "be brief", "--temperature", "0.2"])
    out, _ = capsys.readouterr()
    assert code == 0 and out == "tok0 tok1 tok2 tok3 tok4 tok5 \n"
    (request,) = server.requests
    assert not request.stream
    assert request.json["temperature"] == 0.2
    assert request.json["messages"][0] == {"role": "system", "content": "be brief"}


def test_fallback_is_noted_on_stderr(
    server: FakeLLMServer, config_for: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """When the backup serves, stdout has only the answer and stderr says who failed and why."""
    config = config_for(primary_model="status:500")
    for extra in ([], ["--no-stream"]):
        code = main(["chat", "hello", "--config", str(config), *extra])
        out, err = capsys.readouterr()
        assert code == 0
        assert out == "tok0 tok1 tok2 \n"
        assert err == (
            "reliant: served by backup (model ok:chunks=3) after primary (model status:500) "
            "failed (first failure: primary: 500 Internal Server Error)\n"
        )
        assert KEY not in err


def test_fallback_note_after_a_hang_reads_whole(
    server: FakeLLMServer, config_for: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hung primary's note: one provider prefix, the ids both were sent, no word cut off."""
    path = config_for(primary_model="hang_headers")
    text = path.read_text("utf-8").replace("first_chunk_timeout = 5", "first_chunk_timeout = 0.2")
    path.write_text(text, encoding="utf-8")
    code = main(["chat", "hello", "--config", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == "tok0 tok1 tok2 \n"
    assert err == (
        "reliant: served by backup (model ok:chunks=3) after primary (model hang_headers) "
        "failed (first failure: primary: no first chunk within 0.2 s (model hang_headers); "
        "timed out)\n"
    )


@pytest.mark.parametrize("mode", ["restart", "continue"])
def test_mid_stream_recovery_in_chat(
    server: FakeLLMServer,
    config_for: Any,
    capsys: pytest.CaptureFixture[str],
    mode: str,
) -> None:
    """mid_stream in reliant.toml: continue completes the answer; restart says so on stderr."""
    path = config_for(primary_model="cut:after=2:chunks=6", backup_model="ok:chunks=6")
    path.write_text(f'mid_stream = "{mode}"\n' + path.read_text("utf-8"), encoding="utf-8")
    code = main(["chat", "hello", "--config", str(path)])
    out, err = capsys.readouterr()
    assert code == 0
    answer = "tok0 tok1 tok2 tok3 tok4 tok5 "
    if mode == "continue":
        assert out == answer + "\n"
        assert "the answer starts again" not in err
    else:
        assert out == "tok0 tok1 \n" + answer + "\n"
        assert "reliant: the stream broke; the answer starts again" in err


def test_model_flag_overrides_default(
    server: FakeLLMServer, config_for: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """--model replaces default_model (unaliased models go through as named)."""
    code = main(["chat", "x", "--config", str(config_for()), "--model", "ok:chunks=2"])
    assert code == 0 and capsys.readouterr().out == "tok0 tok1 \n"
    assert server.requests[0].model == "ok:chunks=2"


def test_every_provider_failing_prints_trail(
    server: FakeLLMServer, config_for: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """When every provider fails, the sanitized trail is printed and the exit code is 2."""
    config = config_for(primary_model="status:503", backup_model="status:401")
    code = main(["chat", "x", "--config", str(config)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "provider=primary model=status:503 attempt 1/1: retryable" in err
    assert "provider=backup model=status:401 attempt 1/1: non_retryable" in err
    assert "Traceback" not in err and KEY not in err


class _InterruptingStdout(io.StringIO):
    """A stdout on which the user presses Ctrl-C as soon as the first text arrives."""

    def write(self, text: str) -> int:
        written = super().write(text)
        if text:
            raise KeyboardInterrupt
        return written


def test_ctrl_c_closes_upstream_and_exits_130(
    server: FakeLLMServer,
    config_for: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """KeyboardInterrupt mid-stream exits 130 and the server sees the connection close."""
    fake_stdout = _InterruptingStdout()
    monkeypatch.setattr("sys.stdout", fake_stdout)
    config = config_for(primary_model="ok:chunks=500:gap=0.01")
    code = main(["chat", "hello", "--config", str(config)])
    assert code == 130
    assert fake_stdout.getvalue() == "tok0 "
    assert "interrupted" in capsys.readouterr().err
    deadline = time.monotonic() + 5
    while not server.disconnects and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [d.request_index for d in server.disconnects] == [0]
    assert server.aborted == [0]


# Trio only: `reliant chat` runs under trio.run (the CLI is trio by design).
async def test_cancellation_closes_upstream_at_once(tmp_path: Path) -> None:
    """Cancelling a streaming chat (what Ctrl-C does) closes the upstream connection at once."""
    from rich.console import Console

    async with serve_fake_llm() as fake:
        fake.script("slow", [Behavior(chunks=500, gap=0.01)])
        config: Config = parse_config(
            {
                "providers": [
                    {
                        "name": "primary",
                        "kind": "openai",
                        "base_url": fake.openai_base_url,
                        "api_key_env": "",
                    }
                ]
            }
        )
        got_text = trio.Event()

        class Out(io.StringIO):
            def write(self, text: str) -> int:
                got_text.set()
                return super().write(text)

        out = Out()
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: chat(
                        config,
                        prompt="hi",
                        model="slow",
                        system=None,
                        temperature=0.0,
                        stream=True,
                        out=out,
                        err=Console(file=io.StringIO()),
                    )
                )
                await got_text.wait()
                cancelled_at = trio.current_time()
                scope.cancel()
        with trio.fail_after(2):
            closed_at = await fake.wait_for_disconnect(0)
        assert closed_at - cancelled_at < 0.1
        assert fake.aborted == [0]
        assert out.getvalue().startswith("tok0 ")


def test_trace_prints_the_attempt_tree(
    server: FakeLLMServer, config_for: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """--trace prints each attempt (route, outcome, start/end ms) to stderr, also on failure."""
    config = config_for(primary_model="status:500")
    for extra in ([], ["--no-stream"]):
        code = main(["chat", "hello", "--config", str(config), "--trace", *extra])
        out, err = capsys.readouterr()
        assert code == 0 and out == "tok0 tok1 tok2 \n"
        lines = [line for line in err.splitlines() if line.startswith(("reliant trace", "  "))]
        assert lines[0].startswith("reliant trace: request ")
        assert "(model chat) success in " in lines[0]
        assert "served by backup (ok:chunks=3)" in lines[0]
        assert lines[1].startswith("  |- primary (status:500) #1  retryable  0 -> ")
        assert "500 Internal Server Error" in lines[1]
        assert lines[2].startswith("  `- backup (ok:chunks=3) #1  success  ")
        assert KEY not in err
    config = config_for(primary_model="status:503", backup_model="status:401")
    assert main(["chat", "x", "--config", str(config), "--trace"]) == 2
    err = capsys.readouterr().err
    assert "(model chat) failure in " in err
    assert "`- backup (status:401) #1  non_retryable" in err
