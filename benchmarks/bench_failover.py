"""Failover latency on the embedded fake LLM server: the figures of `reliant bench`.

Runs the built-in scenarios of ``reliant._bench`` (healthy, 500-then-fallback,
429-retry-after, hang-then-fallback, model-fallback) with the real
OpenAI-compatible and Anthropic providers over loopback HTTP, prints the
table of time to first token (p50/p95/p99, the direct baseline, the latency
added by failover, retries and fallbacks per request) and writes every figure
and raw sample as JSON. Not a timed test.

    python benchmarks/bench_failover.py [-n 20] [--scenario NAME ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from reliant._bench import SCENARIO_NAMES, TABLE_NOTE, format_table, run_builtin

DEFAULT_JSON = Path(__file__).parent / "results" / "failover.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--repetitions", type=int, default=20, help="per scenario")
    parser.add_argument("--scenario", action="append", choices=SCENARIO_NAMES)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="output file")
    args = parser.parse_args()
    if args.repetitions < 1:
        parser.error("-n must be at least 1")
    report = trio.run(lambda: run_builtin(args.scenario, args.repetitions))
    print(format_table(report))
    print(f"\n{TABLE_NOTE}")
    report.write_json(args.json)
    print(f"\nwrote {args.json}")
    return 1 if any(r.errors for r in report.results) else 0


if __name__ == "__main__":
    sys.exit(main())
