"""`reliant bench` and `reliant._bench`: scenarios, figures, JSON, plot, and the script."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from reliant._bench import SCENARIO_NAMES, format_table, percentile, run_builtin
from reliant._cli import main
from reliant.testing.fake_server import FakeLLMServer, serve_fake_llm

ROOT = Path(__file__).parent.parent


def test_percentile_interpolates_linearly() -> None:
    """Percentiles interpolate between ranks; the ends are min and max."""
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert math.isclose(percentile(values, 95), 3.85)
    assert math.isnan(percentile([], 50))


def test_bench_writes_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """n=2 on two scenarios: a table on stdout, valid JSON with raw samples, a PNG chart."""
    report, chart = tmp_path / "out" / "bench.json", tmp_path / "bench.png"
    argv = ["bench", "-n", "2", "--scenario", "healthy", "--scenario", "500-then-fallback"]
    code = main([*argv, "--json", str(report), "--plot", str(chart)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "healthy" in out and "500-then-fallback" in out and "added p95" in out
    assert "\x1b[" not in out
    data = json.loads(report.read_text("utf-8"))
    assert data["repetitions"] == 2 and data["units"] == "milliseconds"
    healthy, failover = data["scenarios"]
    assert healthy["name"] == "healthy" and len(healthy["samples"]) == 2
    assert healthy["served_by"] == "primary/bench-ok"
    assert healthy["fallbacks_total"] == 0 and healthy["retries_total"] == 0
    assert failover["served_by"] == "backup/bench-ok" and failover["fallbacks_total"] == 2
    for scenario in data["scenarios"]:
        assert scenario["errors"] == 0
        for sample in scenario["samples"]:
            assert sample["ttft_ms"] > 0 and sample["direct_ttft_ms"] > 0
        assert scenario["ttft_ms"]["p50"] <= scenario["ttft_ms"]["p99"]
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


# Trio only: `reliant bench` runs its scenarios under trio.run, as the CLI does by design.
async def test_retry_after_and_hang_scenarios_measure_what_they_claim() -> None:
    """429 waits its 100 ms Retry-After (one retry); a hang costs the 250 ms first-chunk timeout."""
    report = await run_builtin(["429-retry-after", "hang-then-fallback"], 1)
    retry, hang = (r.summary() for r in report.results)
    assert retry["retries_total"] == 1 and retry["fallbacks_total"] == 0
    assert 100 <= retry["ttft_ms"]["p50"] < 400
    assert hang["served_by"] == "backup/bench-ok" and hang["fallbacks_total"] == 1
    assert 250 <= hang["ttft_ms"]["p50"] < 600
    assert hang["added_ms"]["p50"] >= 240


# Trio only: `reliant bench` runs its scenarios under trio.run, as the CLI does by design.
async def test_hedge_scenario_hedges_the_slow_tail() -> None:
    """The hedge scenario: every request's first token within the hedge floor or the fast path."""
    report = await run_builtin(["hedge"], 12)
    (result,) = report.results
    summary = result.summary()
    assert summary["ttft_ms"]["p99"] < 1000  # the 2 s tail never reaches the caller
    assert result.errors == 0


def test_plot_svg_and_bad_extension(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--plot writes SVG by extension; any other extension is refused up front (exit 2)."""
    assert (
        main(["bench", "-n", "1", "--scenario", "healthy", "--plot", str(tmp_path / "x.gif")]) == 2
    )
    assert "must end in .png or .svg" in capsys.readouterr().err
    svg = tmp_path / "x.svg"
    assert main(["bench", "-n", "1", "--scenario", "healthy", "--plot", str(svg)]) == 0
    assert b"<svg" in svg.read_bytes()[:500]


def test_missing_matplotlib_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without matplotlib, --plot says which extra to install and exits 2 before measuring."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["bench", "--plot", str(tmp_path / "x.png")]) == 2
    assert "pip install 'reliant[plot]'" in capsys.readouterr().err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown scenarios, n < 1 and --scenario with --config are usage errors."""
    assert main(["bench", "--scenario", "nope"]) == 2
    assert main(["bench", "-n", "0"]) == 2
    assert main(["bench", "--config", "x.toml", "--scenario", "healthy"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "-n must be at least 1" in err


@pytest.fixture
def threaded_server() -> Iterator[FakeLLMServer]:
    """A fake server in its own thread and trio loop, so `main()` can run `trio.run` here."""
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with serve_fake_llm() as fake:
            box["server"], box["token"] = fake, trio.lowlevel.current_trio_token()
            box["stop"] = trio.Event()
            started.set()
            await box["stop"].wait()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert started.wait(10)
    yield box["server"]
    trio.from_thread.run_sync(box["stop"].set, trio_token=box["token"])
    thread.join(10)


def test_bench_own_config(
    threaded_server: FakeLLMServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--config measures the user's chain against the provider that served, directly."""
    monkeypatch.setenv("RELIANT_BENCH_KEY", "sk-bench-0123456789abcdef")
    config = tmp_path / "reliant.toml"
    config.write_text(
        f"""
default_model = "m"
max_retries = 0
[[providers]]
name = "first"
kind = "openai"
base_url = "{threaded_server.openai_base_url}"
api_key_env = "RELIANT_BENCH_KEY"
models = {{ m = "status:503" }}
[[providers]]
name = "second"
kind = "anthropic"
base_url = "{threaded_server.anthropic_base_url}"
api_key_env = "RELIANT_BENCH_KEY"
models = {{ m = "ok:chunks=4" }}
""",
        encoding="utf-8",
    )
    report = tmp_path / "own.json"
    code = main(["bench", "--config", str(config), "-n", "2", "--json", str(report)])
    assert code == 0, capsys.readouterr().err
    (scenario,) = json.loads(report.read_text("utf-8"))["scenarios"]
    assert scenario["name"] == "config:m"
    assert scenario["served_by"] == "second/ok:chunks=4"
    assert scenario["fallbacks_total"] == 2
    # 3 measured requests + 1 warm-up, each: one 503 on first, then second; plus one direct.
    assert len(threaded_server.requests) == 3 * 3


def test_script_reports_the_same_figures(tmp_path: Path) -> None:
    """benchmarks/bench_failover.py prints the `reliant bench` table and writes the JSON."""
    target = tmp_path / "failover.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_failover.py"),
            "-n",
            "1",
            "--scenario",
            "model-fallback",
            "--json",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(target.read_text("utf-8"))
    assert [s["name"] for s in data["scenarios"]] == ["model-fallback"]
    scenario = data["scenarios"][0]
    assert scenario["served_by"] == "primary/bench-small"
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("model-fallback")]
    cells = row.split()
    assert cells[1] == "primary/bench-small"
    assert [float(c) for c in cells[2:5]] == pytest.approx(
        [scenario["ttft_ms"][p] for p in ("p50", "p95", "p99")], rel=0.01, abs=0.01
    )
    assert float(cells[9]) == scenario["fallbacks_per_request"] == 2.0


def test_plain_table_lists_every_scenario() -> None:
    """format_table has a header and one aligned row per scenario."""
    report = trio.run(run_builtin, ["healthy"], 1)
    lines = format_table(report).splitlines()
    assert lines[1].split()[:3] == ["scenario", "served", "by"]
    assert lines[3].startswith("healthy ")
    assert "healthy" in SCENARIO_NAMES


def _hung_primary_config(server: FakeLLMServer, path: Path) -> Path:
    path.write_text(
        f"""
default_model = "m"
max_retries = 0
first_chunk_timeout = 0.2
[[providers]]
name = "first"
kind = "openai"
base_url = "{server.openai_base_url}"
api_key_env = ""
models = {{ m = "hang_headers" }}
[[providers]]
name = "second"
kind = "anthropic"
base_url = "{server.anthropic_base_url}"
api_key_env = ""
models = {{ m = "ok:chunks=4" }}
""",
        encoding="utf-8",
    )
    return path


def test_bench_config_measures_failover_with_fresh_health(
    threaded_server: FakeLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Default --health fresh: a hung primary costs its 0.2 s first-chunk timeout every sample."""
    config = _hung_primary_config(threaded_server, tmp_path / "reliant.toml")
    report = tmp_path / "fresh.json"
    code = main(["bench", "--config", str(config), "-n", "3", "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 0, err
    (scenario,) = json.loads(report.read_text("utf-8"))["scenarios"]
    assert scenario["skipped_samples"] == 0 and scenario["paths"] == {"fallback": 3}
    assert [s["path"] for s in scenario["samples"]] == ["fallback"] * 3
    assert scenario["ttft_ms"]["min"] >= 200
    assert scenario["description"].endswith("(health fresh)")
    (row,) = [line for line in out.splitlines() if line.startswith("config:m")]
    assert row.split()[-1] == "0/3"
    assert "skipped: samples that skipped an open circuit breaker" in " ".join(out.split())


def test_bench_config_shared_health_shows_the_breaker_skip(
    threaded_server: FakeLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--health shared: the warm-up opens the breaker, so every sample skips it and says so."""
    config = _hung_primary_config(threaded_server, tmp_path / "reliant.toml")
    report = tmp_path / "shared.json"
    argv = ["bench", "--config", str(config), "-n", "3", "--health", "shared"]
    code = main([*argv, "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 0, err
    (scenario,) = json.loads(report.read_text("utf-8"))["scenarios"]
    assert scenario["skipped_samples"] == 3 and scenario["paths"] == {"skipped_open_breaker": 3}
    assert scenario["ttft_ms"]["max"] < 200
    (row,) = [line for line in out.splitlines() if line.startswith("config:m")]
    assert row.split()[-1] == "3/3"


def test_bench_health_off_and_help(
    threaded_server: FakeLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--health off pays the timeout every time; --help documents --health; built-ins refuse it."""
    config = _hung_primary_config(threaded_server, tmp_path / "reliant.toml")
    report = tmp_path / "off.json"
    argv = ["bench", "--config", str(config), "-n", "2", "--health", "off"]
    assert main([*argv, "--json", str(report)]) == 0
    (scenario,) = json.loads(report.read_text("utf-8"))["scenarios"]
    assert scenario["paths"] == {"fallback": 2} and scenario["ttft_ms"]["min"] >= 200
    capsys.readouterr()
    assert main(["bench", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--health {fresh,shared,off}" in help_text
    assert "fresh (default): every repetition starts with new" in help_text
    assert main(["bench", "--health", "shared"]) == 2
    assert "--health applies to --config only" in capsys.readouterr().err


def test_balance_scenario_writes_its_table_json_and_chart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--scenario balance prints the per-phase shares and writes JSON and a PNG time series."""
    import functools

    import reliant._bench_balance as balance

    # The same run, smaller: 150 streams, and a decay short enough to come back in its last third.
    monkeypatch.setattr(
        balance, "run_balance", functools.partial(balance.run_balance, requests=150, decay=0.3)
    )
    report, chart = tmp_path / "balance.json", tmp_path / "balance.png"
    code = main(["bench", "--scenario", "balance", "--json", str(report), "--plot", str(chart)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "degraded" in out and "west served" in out
    data = json.loads(report.read_text("utf-8"))
    assert data["strategy"] == "latency" and len(data["samples"]) == 150
    phases = data["phases"]
    assert phases["degraded"]["share"]["west"] < phases["before"]["share"]["west"]
    assert data["slow_deployment_requests_while_degraded"] <= 20
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_balance_runs_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """balance cannot be mixed with the failover scenarios."""
    code = main(["bench", "--scenario", "balance", "--scenario", "healthy"])
    assert code == 2
    assert "runs alone" in capsys.readouterr().err
