"""``reliant bench``: failover latency with a progress bar, a table, JSON and a chart."""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Literal

import trio
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from reliant import FailoverError, Provider
from reliant._bench import (
    SCENARIO_NAMES,
    TABLE_COLUMNS,
    TABLE_NOTE,
    BenchReport,
    Sample,
    Target,
    format_table,
    plot,
    run_builtin,
    run_targets,
    table_rows,
    table_title,
)

from ._common import say
from ._config import (
    Config,
    ConfigError,
    build_providers,
    build_reliable,
    enter_health,
    load_config,
)
from ._exit import EXIT_BAD_INPUT, EXIT_FAILED

__all__ = ["run_bench_command"]

NEEDS_PLOT_EXTRA = "reliant bench --plot needs matplotlib: pip install 'reliant[plot]'"


HealthMode = Literal["fresh", "shared", "off"]


def _health_for(config: Config, mode: HealthMode) -> Config:
    # fresh: an in-process store, cleared before every repetition; never the
    # configured Redis, whose shared breakers a benchmark must not wipe.
    if mode == "off":
        return replace(config, health=None, health_redis=None)
    if mode == "fresh":
        return replace(config, health_redis=None)
    return config


async def _bench_config(
    config: Config,
    model: str,
    prompt: str,
    repetitions: int,
    progress: Progress,
    task: object,
    health: HealthMode = "fresh",
) -> BenchReport:
    from reliant import ChatMessage, LocalHealth

    async with AsyncExitStack() as stack:
        providers = build_providers(config)
        for _, provider in providers:
            if hasattr(provider, "aclose"):
                stack.push_async_callback(provider.aclose)
        leaves: dict[str, Provider] = dict(providers)
        reliable = build_reliable(_health_for(config, health), providers)
        await enter_health(reliable, stack)
        store = reliable.health_store
        before_each = store.clear if health == "fresh" and isinstance(store, LocalHealth) else None
        target = Target(
            name=f"config:{model}",
            description=(
                f"{config.source}: {' -> '.join(n for n, _ in providers)} (health {health})"
            ),
            before_each=before_each,
            reliable=reliable,
            providers=leaves,
            primary=providers[0][0],
            model=model,
            model_aliases=config.model_aliases,
            messages=[ChatMessage.user(prompt)],
            temperature=config.temperature,
        )

        def advance(_name: str, _sample: Sample) -> None:
            progress.advance(task)  # type: ignore[arg-type]

        return await run_targets(
            [target], repetitions, on_sample=advance, source=f"config:{config.source}"
        )


def _render(out: Console, report: BenchReport) -> None:
    if not out.is_terminal:
        # Piped or redirected: the plain table (the same figures as
        # benchmarks/bench_failover.py), unsqueezed and without padding.
        out.file.write(format_table(report) + "\n\n")
    else:
        _render_rich(out, report)
    _render_notes(out, report)


# Dropped, in this order, when the whole table is wider than the terminal.
_OPTIONAL_COLUMNS = ("added p95", "served by")


def _table(report: BenchReport, columns: list[str]) -> Table:
    table = Table(
        title=table_title(report),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    keep = [TABLE_COLUMNS.index(c) for c in columns]
    for i in keep:
        table.add_column(TABLE_COLUMNS[i], justify="left" if i < 2 else "right", no_wrap=True)
    for row in table_rows(report):
        table.add_row(*(row[i] for i in keep))
    return table


def _render_rich(out: Console, report: BenchReport) -> None:
    columns = list(TABLE_COLUMNS)
    table = _table(report, columns)
    unbounded = out.options.update_width(10_000)  # measure the natural width
    for optional in _OPTIONAL_COLUMNS:
        if Measurement.get(out, unbounded, table).maximum <= out.width:
            break
        columns.remove(optional)
        table = _table(report, columns)
    out.print(table)
    if "served by" not in columns:
        for result in report.results:
            say(out, f"{result.name}: served by {result.served_by}", "dim")


def _render_notes(out: Console, report: BenchReport) -> None:
    out.print(Text(TABLE_NOTE, style="dim"), overflow="fold")
    for r in report.results:
        errors = [s.error for s in r.samples if s.error]
        if errors:
            out.print(
                Text(f"{r.name}: {len(errors)} error(s); first: {errors[0]}", style="red"),
                overflow="fold",
            )


def _run_balance(args: argparse.Namespace, out: Console, err: Console) -> int:
    # The routing scenario: a time series, not a table of failover latencies.
    from reliant._bench_balance import format_balance, plot_balance, run_balance

    say(err, "balance: 900 streams over three deployments, about 10 s", "dim")
    report = trio.run(run_balance)
    out.print(Text(format_balance(report)), overflow="fold")
    if not _write(args, err, report.write_json, lambda path: plot_balance(report, path)):
        return EXIT_BAD_INPUT
    failed = sum(1 for s in report.samples if s.served_by is None)
    return EXIT_FAILED if failed else 0


def _write(
    args: argparse.Namespace,
    err: Console,
    write_json: Callable[[str], None],
    draw: Callable[[str], None],
) -> bool:
    # --json and --plot, each said on stderr; False (after saying why) when one failed.
    try:
        if args.json is not None:
            write_json(args.json)
            say(err, f"wrote {args.json}", "dim")
        if args.plot is not None:
            draw(args.plot)
            say(err, f"wrote {args.plot}", "dim")
    except ImportError:
        say(err, NEEDS_PLOT_EXTRA, "red")
        return False
    except OSError as problem:
        say(err, f"reliant bench: cannot write {problem.filename}: {problem.strerror}", "red")
        return False
    return True


def run_bench_command(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run ``reliant bench``; 0 on success, 1 if a repetition failed, 2 for bad input."""
    repetitions: int = args.repetitions
    if repetitions < 1:
        say(err, "reliant bench: -n must be at least 1", "red")
        return EXIT_BAD_INPUT
    if args.plot is not None:
        suffix = Path(args.plot).suffix.lower()
        if suffix not in (".png", ".svg"):
            say(
                err,
                f"reliant bench: --plot file must end in .png or .svg, not {suffix or '(none)'}",
                "red",
            )
            return EXIT_BAD_INPUT
        if importlib.util.find_spec("matplotlib") is None:
            say(err, NEEDS_PLOT_EXTRA, "red")
            return EXIT_BAD_INPUT

    config: Config | None = None
    model: str | None = None
    if args.config is not None:
        if args.scenario:
            say(
                err,
                "reliant bench: --scenario selects built-in scenarios; "
                "it cannot be combined with --config",
                "red",
            )
            return EXIT_BAD_INPUT
        try:
            config = load_config(args.config)
        except ConfigError as problem:
            say(err, f"reliant: {problem}", "red")
            return EXIT_BAD_INPUT
        for note in config.deprecations:
            say(err, f"reliant: {config.source}: {note}", "yellow")
        model = args.model or config.default_model
        if model is None:
            say(err, "reliant bench: no model: pass --model or set default_model", "red")
            return EXIT_BAD_INPUT
    elif args.model is not None or args.health is not None:
        option = "--model" if args.model is not None else "--health"
        say(
            err,
            f"reliant bench: {option} applies to --config only "
            "(each built-in scenario sets its own health)",
            "red",
        )
        return EXIT_BAD_INPUT

    names: list[str] = list(dict.fromkeys(args.scenario or SCENARIO_NAMES))
    if "balance" in names:
        if names != ["balance"]:
            say(err, "reliant bench: --scenario balance runs alone", "red")
            return EXIT_BAD_INPUT
        return _run_balance(args, out, err)
    count = repetitions * (1 if config is not None else len(names))
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    try:
        with progress:
            task = progress.add_task("bench", total=count)
            if config is not None:
                assert model is not None
                report = trio.run(
                    _bench_config,
                    config,
                    model,
                    args.prompt,
                    repetitions,
                    progress,
                    task,
                    args.health or "fresh",
                )
            else:

                def advance(name: str, _sample: Sample) -> None:
                    progress.update(task, advance=1, description=name)

                report = trio.run(
                    lambda: run_builtin(names, repetitions, on_sample=advance),
                )
    except ConfigError as problem:
        say(err, f"reliant: {problem}", "red")
        return EXIT_BAD_INPUT
    except FailoverError as failure:
        say(err, f"reliant bench: {failure}", "red")
        return EXIT_BAD_INPUT

    _render(out, report)
    if not _write(args, err, report.write_json, lambda path: plot(report, path)):
        return EXIT_BAD_INPUT
    if any(r.errors for r in report.results):
        return EXIT_FAILED
    return 0
