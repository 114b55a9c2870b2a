"""reliant vs LiteLLM's Router on this machine: overhead over raw HTTP, failover, import.

Both libraries stream from the same fake LLM server (``reliant.testing.fake_server``,
one separate process on 127.0.0.1 for the whole run), in one run of this script:

1. Per chunk, reading a 200-chunk stream (median over ``--reps`` streams after
   warm-up; the variants take turns so noise hits them alike), when the server
   sends the stream in one burst and when it paces chunks 0.5 ms apart:
   - raw HTTP: httpx2 under trio (reliant side), httpx under asyncio (LiteLLM
     side), both with the same hand-written SSE line split and a
     ``json.loads`` of every data line;
   - the leaf: ``OpenAICompatible`` called directly / ``litellm.acompletion``;
   - the wrapper: ``ReliableProvider`` over one ``OpenAICompatible`` /
     ``litellm.Router`` with one deployment.
   Overhead ratio = wrapper / raw HTTP, each on its own loop. The asyncio
   tasks LiteLLM leaves running after a stream (success logging, caching,
   router bookkeeping) are awaited untimed after each call, so they are not
   billed to the next variant; how many and how long is reported apart.
2. Time to first token of a simple failover: the first deployment answers
   HTTP 500, the second streams 20 chunks. ``ReliableProvider([bad, good],
   max_retries=0)`` / ``Router`` with two ``openai/`` deployments, fallbacks
   ``primary -> backup``, ``num_retries=0``, the OpenAI SDK's ``max_retries=0``
   and cooldowns disabled (every request sees the 500, then the fallback: on
   both sides this was checked once by hand against the server's request log,
   one ``status:500`` then one ``ok`` request per call). Ratio = failover / the serving
   deployment called through the library's leaf path (``OpenAICompatible``
   directly / ``litellm.acompletion``). A failover costs two round trips, so
   this ratio cannot go much below 2 here; the floor is shown as raw HTTP doing
   the same (one request answered 500, body read, then the stream), with
   failover / that floor, failover / raw HTTP and the wrapper with only the
   healthy deployment.
3. Import: wall time of a fresh interpreter running ``import reliant,
   reliant.providers; reliant.providers.OpenAICompatible`` / ``import litellm;
   litellm.Router`` (median of ``--import-runs``, after one unmeasured run), and
   the same minus a bare interpreter (``-c pass``) of the same venv.
4. Same loop (asyncio, one process): 1. and 2. again, but reliant (on its
   asyncio backend) and LiteLLM take turns on ONE asyncio loop in one process
   (benchmarks/_same_loop_side.py), against one floor for both: raw httpx2
   (the same ``_util`` loop as reliant's trio floor). Every variant is the
   one of the trio column or of _litellm_side.py; per chunk, the client CPU
   of the process is measured as well as the wall time (the server is
   another process), and raw httpx is timed alongside for reference. The
   tasks any call leaves running are awaited untimed after it, for every
   variant (reliant leaves none). Ratios: wrapper / raw httpx2 on that loop.
   Written under ``same_loop`` in the JSON.

Caveat: in 1. and 2. the loops differ. reliant runs there on trio and LiteLLM
is asyncio-only, and their HTTP stacks differ (httpx2 vs httpx / the OpenAI
SDK), so absolute times across those two columns mix library cost with loop
and client cost. That is why each side is compared with raw HTTP on its own
loop, and the ratios (wrapper / raw, failover / direct) are the figures to
compare; their ``LiteLLM / reliant`` column of absolute rows is indicative
only. The same-loop table (4.) removes that difference: one loop, one
process, one floor, so there its absolute rows compare directly too (what
remains different is each library's own HTTP client, which is part of what
it costs; raw httpx against raw httpx2 on that loop shows how much).

Reproduce (LiteLLM is never installed in the project's virtualenv; the
second one holds LiteLLM and, for the same-loop run, this checkout)::

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -e '.[test]'
    python3 -m venv /tmp/litellm-venv
    /tmp/litellm-venv/bin/pip install litellm httpx && /tmp/litellm-venv/bin/pip install -e .
    . /tmp/venv/bin/activate
    python benchmarks/compare_litellm.py --litellm-python /tmp/litellm-venv/bin/python

Without ``--litellm-python`` (or ``$LITELLM_PYTHON``), or if that interpreter
cannot import litellm, the LiteLLM columns and the same-loop table are
skipped with a note; the same-loop table alone is skipped (with a note) if it
cannot import this checkout's reliant, or with ``--no-same-loop``. Both
LiteLLM halves (benchmarks/_litellm_side.py, _same_loop_side.py) run as
subprocesses under that interpreter with ``LITELLM_LOCAL_MODEL_COST_MAP=True``
(no network) and ``litellm.telemetry = False``, and print their figures as
JSON; the interleaved timing all three halves share is benchmarks/_turns.py.
Writes benchmarks/results/litellm.json (first measured with LiteLLM 1.110.2).
Takes about 3.5 min on 2 shared CPUs (``--quick``: 1.5 min), of which the
same-loop run is about a third.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import trio

import _util
from _turns import Variant, take_turns
from reliant import ChatMessage, Provider, ReliableProvider
from reliant.providers import OpenAICompatible

HERE = Path(__file__).parent
LITELLM_SIDE = HERE / "_litellm_side.py"
SAME_LOOP_SIDE = HERE / "_same_loop_side.py"
HI = [ChatMessage.user("hi")]
API_KEY = "sk-bench"
CHUNKS = 200
TTFT_CHUNKS = 20
TTFT_MODEL = f"ok:chunks={TTFT_CHUNKS}"
MODES = (("burst", f"ok:chunks={CHUNKS}"), ("paced", f"ok:chunks={CHUNKS}:gap=0.0005"))
# Loopback only, whatever proxies the environment names; no network for LiteLLM.
CHILD_ENV = {
    **os.environ,
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
}
RELIANT_IMPORT = "import reliant, reliant.providers; reliant.providers.OpenAICompatible"
LITELLM_IMPORT = "import litellm; litellm.Router"
REFERENCE = {
    "source": "project brief (reported figures for LiteLLM Router, not measured here)",
    "per_chunk_over_raw": 16.0,
    "failover_ttft_ratio": 21.0,
    "import": "seconds",
}


# -- the fake server -----------------------------------------------------------------


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reliant.testing.fake_server", "--port", "0", "--host", "127.0.0.1"],
        stdout=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    urls = [word for word in line.split() if word.startswith("http://127.0.0.1:")]
    if not urls:
        proc.terminate()
        proc.wait(timeout=10)
        raise RuntimeError(f"fake server did not print its URL: {line!r}")
    # The first line is the OpenAI base URL (".../v1"); the root is wanted here.
    return proc, urls[0].rstrip("/").removesuffix("/v1")


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()  # SIGTERM: the server exits cleanly
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# -- reliant side (trio) -------------------------------------------------------------


async def raw_stream(
    client: httpx2.AsyncClient, url: str, model: str, first: list[float] | None = None
) -> int:
    """The floor: the raw loop of ``_util`` with this run's key."""
    return await _util.raw_stream(
        client, url, model, first, headers={"authorization": f"Bearer {API_KEY}"}
    )


async def raw_failover(client: httpx2.AsyncClient, url: str, model: str, first: list[float]) -> int:
    """The floor of a failover: one request answered 500 (body read), then the raw stream."""
    body = {"model": "status:500", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {API_KEY}"}
    response = await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
    if response.status_code != 500:
        raise RuntimeError(f"expected HTTP 500, got {response.status_code}")
    return await raw_stream(client, url, model, first)


async def provider_stream(provider: Provider, model: str, first: list[float] | None = None) -> int:
    n = 0
    async with provider.stream_chat_with_history(HI, model, 0.0) as chunks:
        async for chunk in chunks:
            if chunk.delta:
                if n == 0 and first is not None:
                    first.append(time.perf_counter())
                n += 1
    return n


def openai(name: str, url: str) -> OpenAICompatible:
    return OpenAICompatible(name=name, base_url=f"{url}/v1", api_key=API_KEY)


def per_chunk_variants(
    client: httpx2.AsyncClient, url: str, direct: Provider, reliable: Provider, model: str
) -> dict[str, Variant]:
    """raw HTTP, the leaf and the wrapper streaming `model`: one turn each."""
    return {
        "raw": lambda f: raw_stream(client, url, model, f),
        "leaf": lambda f: provider_stream(direct, model, f),
        "wrapper": lambda f: provider_stream(reliable, model, f),
    }


def ttft_variants(
    client: httpx2.AsyncClient, url: str, bad: Provider, good: Provider
) -> dict[str, Variant]:
    """The serving deployment raw and direct, the wrapper over it alone, and the failover."""
    healthy = ReliableProvider([("good", good)], max_retries=0, base_backoff=0.05)
    failover = ReliableProvider(
        [("bad", bad), ("good", good)],
        max_retries=0,
        base_backoff=0.05,
        health=None,  # every repetition meets the 500 afresh (no breaker skips it)
        model_aliases={"bad": {"m": "status:500"}, "good": {"m": TTFT_MODEL}},
    )
    return {
        "raw": lambda f: raw_stream(client, url, TTFT_MODEL, f),
        "raw_failover": lambda f: raw_failover(client, url, TTFT_MODEL, f),
        "leaf": lambda f: provider_stream(good, TTFT_MODEL, f),
        "wrapper_healthy": lambda f: provider_stream(healthy, TTFT_MODEL, f),
        "wrapper_failover": lambda f: provider_stream(failover, "m", f),
    }


async def reliant_per_chunk(url: str, reps: int, warmup: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    async with (
        httpx2.AsyncClient(timeout=30) as client,
        openai("direct", url) as direct,
        openai("inner", url) as inner,
    ):
        reliable = ReliableProvider([("inner", inner)], max_retries=0, base_backoff=0.05)
        for label, model in MODES:
            variants = per_chunk_variants(client, url, direct, reliable, model)
            samples = await take_turns(
                variants, reps=reps, warmup=warmup, expect=CHUNKS, what=label
            )
            out[label] = {f"{k}_s": s.median("wall") / CHUNKS for k, s in samples.items()}
    return out


async def reliant_ttft(url: str, reps: int, warmup: int) -> dict[str, float]:
    async with (
        httpx2.AsyncClient(timeout=30) as client,
        openai("bad", url) as bad,
        openai("good", url) as good,
    ):
        variants = ttft_variants(client, url, bad, good)
        # Every stream is read to the end, as on the LiteLLM side.
        samples = await take_turns(
            variants, reps=reps, warmup=warmup, expect=TTFT_CHUNKS, what="ttft"
        )
    return {f"{k}_s": s.median("ttft") for k, s in samples.items()}


async def reliant_side(url: str, reps: int, warmup: int) -> dict[str, Any]:
    return {
        "per_chunk": await reliant_per_chunk(url, reps, warmup),
        "ttft": await reliant_ttft(url, reps, warmup),
    }


# -- LiteLLM side (subprocess, asyncio) ----------------------------------------------


def litellm_version(python: str | None) -> tuple[str | None, str | None]:
    """(version, None) if `python` can import litellm, else (None, why not)."""
    if not python:
        return None, "no --litellm-python given (nor $LITELLM_PYTHON)"
    if not Path(python).exists():
        return None, f"interpreter {python} does not exist"
    code = "import importlib.metadata as m, litellm; print(m.version('litellm'))"
    try:
        done = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, env=CHILD_ENV, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{python} failed: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"{python} cannot import litellm ({last})"
    return done.stdout.strip().splitlines()[-1], None


def same_loop_ready(python: str) -> str | None:
    """None if `python` (which imports litellm) also imports this checkout's reliant,
    else why not."""
    code = "import reliant, httpx2, anyio; print(reliant.__file__)"
    done = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, env=CHILD_ENV, timeout=60
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"{python} cannot import reliant ({last}); pip install -e this checkout there"
    theirs = Path(done.stdout.strip().splitlines()[-1]).resolve()
    ours = Path(sys.modules["reliant"].__file__ or "").resolve()
    if theirs != ours:
        return f"{python} imports reliant from {theirs}, not this checkout's {ours}"
    return None


def run_side(python: str, script: Path, args: list[str]) -> dict[str, Any]:
    """Run one subprocess half under `python`; it prints its figures as JSON."""
    cmd = [python, str(script), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=CHILD_ENV, timeout=600)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise RuntimeError(f"{script.name} failed with exit status {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def litellm_side(python: str, url: str, reps: int, warmup: int) -> dict[str, Any]:
    args = ["--url", url, "--reps", str(reps), "--warmup", str(warmup), "--chunks", str(CHUNKS)]
    return run_side(python, LITELLM_SIDE, args)


def same_loop_side(python: str, url: str, reps: int, warmup: int) -> dict[str, Any]:
    args = ["--url", url, "--reps", str(reps), "--warmup", str(warmup)]
    return run_side(python, SAME_LOOP_SIDE, args)


# -- import time ---------------------------------------------------------------------


def wall(python: str, code: str) -> float:
    start = time.perf_counter()
    subprocess.run([python, "-c", code], check=True, env=CHILD_ENV, capture_output=True)
    return time.perf_counter() - start


def import_time(python: str, code: str, runs: int) -> dict[str, float]:
    wall(python, code)  # unmeasured: bytecode caches, page cache
    bare = statistics.median(wall(python, "pass") for _ in range(runs))
    full = statistics.median(wall(python, code) for _ in range(runs))
    return {"bare_interpreter_s": bare, "with_import_s": full, "import_s": full - bare}


# -- report --------------------------------------------------------------------------


def ratios(side: dict[str, Any]) -> dict[str, float]:
    pc, tt = side["per_chunk"], side["ttft"]
    out = {}
    for mode in ("burst", "paced"):
        out[f"per_chunk_{mode}_wrapper_over_raw"] = pc[mode]["wrapper_s"] / pc[mode]["raw_s"]
        out[f"per_chunk_{mode}_leaf_over_raw"] = pc[mode]["leaf_s"] / pc[mode]["raw_s"]
        out[f"per_chunk_{mode}_wrapper_over_leaf"] = pc[mode]["wrapper_s"] / pc[mode]["leaf_s"]
        if "wrapper_cpu_s" in pc[mode]:  # the same-loop run also measures client CPU
            raw_cpu = pc[mode]["raw_cpu_s"]
            out[f"per_chunk_{mode}_wrapper_cpu_over_raw"] = pc[mode]["wrapper_cpu_s"] / raw_cpu
            out[f"per_chunk_{mode}_leaf_cpu_over_raw"] = pc[mode]["leaf_cpu_s"] / raw_cpu
    out["ttft_failover_over_leaf"] = tt["wrapper_failover_s"] / tt["leaf_s"]
    out["ttft_failover_over_raw"] = tt["wrapper_failover_s"] / tt["raw_s"]
    out["ttft_failover_over_raw_failover"] = tt["wrapper_failover_s"] / tt["raw_failover_s"]
    out["ttft_healthy_wrapper_over_leaf"] = tt["wrapper_healthy_s"] / tt["leaf_s"]
    return out


def print_table(
    rel: dict[str, Any],
    lit: dict[str, Any] | None,
    labels: tuple[str, str],
    reps: int,
    runs: int | None,
    raw: str = "raw HTTP (httpx2+trio / httpx+asyncio)",
) -> None:
    """One table, reliant's column then LiteLLM's (``-`` if skipped); client CPU
    rows when the sides have them, the import section when ``runs`` is given."""
    width = 46

    def line(label: str, a: float, b: float | None, unit: str) -> None:
        scale, fmt = {"us": (1e6, "{:10.2f} us"), "ms": (1e3, "{:10.2f} ms")}.get(
            unit, (1.0, "{:11.2f}x ")
        )
        left = fmt.format(a * scale)
        right = fmt.format(b * scale) if b is not None else f"{'-':>13}"
        cross = f"{b / a:9.2f}x" if b is not None and a > 0 else f"{'-':>10}"
        print(f"  {label:<{width}} {left}   {right}   {cross}")

    def get(d: dict[str, Any] | None, *keys: str) -> float | None:
        for key in keys:
            if d is None:
                return None
            d = d[key]
        return d  # type: ignore[return-value]

    rr, lr = ratios(rel), (ratios(lit) if lit else None)
    print(f"  {'':<{width}} {labels[0]:>13}   {labels[1]:>13}   {'LiteLLM/rel':>10}")
    for mode, what in (("burst", "one burst"), ("paced", "paced 0.5 ms")):
        print(f"1. per chunk, {CHUNKS}-chunk stream, {what} (median of {reps})")
        cpu = "wrapper_cpu_s" in rel["per_chunk"][mode]
        for clock in ("", "_cpu") if cpu else ("",):
            name = "client CPU" if clock else "wall"
            for key, label in (
                (f"raw{clock}_s", raw),
                (f"leaf{clock}_s", "leaf (OpenAICompatible / acompletion)"),
                (f"wrapper{clock}_s", "wrapper (ReliableProvider / Router)"),
            ):
                if clock:  # the same variants again, named short
                    label = f"{name}: {label.split(' (')[0]}"
                line(label, rel["per_chunk"][mode][key], get(lit, "per_chunk", mode, key), "us")
            key = f"per_chunk_{mode}_wrapper{clock}_over_raw"
            label = (
                f"=> overhead, {name}: wrapper / raw" if cpu else "=> overhead: wrapper / raw HTTP"
            )
            line(label, rr[key], get(lr, key), "x")
    print(f"2. time to first token, first deployment 500 -> second streams (median of {reps})")
    for key, label in (
        ("raw_s", "raw HTTP, serving deployment"),
        ("raw_failover_s", "raw HTTP, a 500 then the serving one"),
        ("leaf_s", "leaf, serving deployment directly"),
        ("wrapper_healthy_s", "wrapper, healthy deployment only"),
        ("wrapper_failover_s", "wrapper, failover (500 then fallback)"),
    ):
        line(label, rel["ttft"][key], get(lit, "ttft", key), "ms")
    for key, label in (
        ("ttft_failover_over_leaf", "=> failover / leaf direct"),
        ("ttft_failover_over_raw", "   failover / raw HTTP"),
        ("ttft_failover_over_raw_failover", "   failover / raw HTTP 500 then serving"),
    ):
        line(label, rr[key], get(lr, key), "x")
    if runs is None:
        return
    print(f"3. import, fresh interpreter, wall (median of {runs})")
    for key, label in (
        ("bare_interpreter_s", "bare interpreter (-c pass)"),
        ("with_import_s", "interpreter + import"),
        ("import_s", "=> import alone"),
    ):
        line(label, rel["import"][key], get(lit, "import", key), "ms")


def print_same_loop(same: dict[str, Any], lit_label: str, reps: int) -> None:
    rel = same["reliant"]
    print("\nSame loop (asyncio, one process): both libraries and raw httpx2 take turns on one")
    print(f"asyncio loop, reliant {same['versions']['reliant']} on its asyncio backend; both are")
    print("compared with the same raw HTTP floor, so the absolute rows compare too.")
    print_table(rel, same["litellm"], ("reliant", lit_label), reps, None, "raw HTTP (httpx2)")
    for mode in ("burst", "paced"):
        raw, httpx = rel["per_chunk"][mode], same["raw_httpx"]["per_chunk"][mode]
        print(
            f"  raw httpx (LiteLLM's client), {mode}: {httpx['s'] * 1e6:.2f} us wall,"
            f" {httpx['cpu_s'] * 1e6:.2f} us CPU per chunk"
            f" ({httpx['s'] / raw['raw_s']:.2f}x, {httpx['cpu_s'] / raw['raw_cpu_s']:.2f}x httpx2)"
        )
    bg = same["litellm"]["per_chunk"]["burst"]
    print(
        f"  Tasks left running after a stream, awaited untimed: Router"
        f" {bg['wrapper_background_tasks']:.0f} ({bg['wrapper_background_s'] * 1e3:.2f} ms),"
        f" ReliableProvider {rel['per_chunk']['burst']['wrapper_background_tasks']:.0f}."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--litellm-python",
        default=os.environ.get("LITELLM_PYTHON"),
        help="python of a venv with litellm and httpx (default: $LITELLM_PYTHON; none: skip)",
    )
    parser.add_argument("--reps", type=int, default=30, help="measured streams per variant")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured streams first")
    parser.add_argument("--import-runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="5 reps, 3 import runs (smoke)")
    parser.add_argument(
        "--no-same-loop",
        action="store_true",
        help="skip the same-loop run (reliant and LiteLLM on one asyncio loop)",
    )
    parser.add_argument("--json", type=Path, default=HERE / "results" / "litellm.json")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.import_runs = 5, 3
    if args.reps < 1 or args.warmup < 0 or args.import_runs < 1:
        parser.error("--reps and --import-runs must be >= 1, --warmup >= 0")

    version, skipped = litellm_version(args.litellm_python)
    same_skipped = skipped or ("--no-same-loop given" if args.no_same_loop else None)
    if same_skipped is None:
        same_skipped = same_loop_ready(args.litellm_python)
    started = time.perf_counter()
    proc, url = start_server()
    try:
        reliant: dict[str, Any] = trio.run(reliant_side, url, args.reps, args.warmup)
        litellm = None
        if version is not None:
            litellm = litellm_side(args.litellm_python, url, args.reps, args.warmup)
        same = None
        if same_skipped is None:
            same = same_loop_side(args.litellm_python, url, args.reps, args.warmup)
    finally:
        stop_server(proc)
    reliant["import"] = import_time(sys.executable, RELIANT_IMPORT, args.import_runs)
    if litellm is not None:
        litellm["import"] = import_time(args.litellm_python, LITELLM_IMPORT, args.import_runs)
    elapsed = time.perf_counter() - started

    lit_label = f"LiteLLM {version}" if version else "LiteLLM"
    print(f"reliant {importlib.metadata.version('reliant')} vs {lit_label} Router, fake server")
    print(f"on {url} (separate process), {os.cpu_count()} CPUs; each side vs raw HTTP on its loop")
    print_table(reliant, litellm, ("reliant (trio)", lit_label), args.reps, args.import_runs)
    if skipped:
        print(f"\nLiteLLM columns skipped: {skipped}.")
    if litellm is not None:
        bg = litellm["per_chunk"]["burst"]
        print(
            f"\nLiteLLM leaves {bg['wrapper_background_tasks']:.0f} asyncio tasks running after"
            f" each Router stream (logging, caching,\nrouter bookkeeping) that took a median"
            f" {bg['wrapper_background_s'] * 1e3:.2f} ms to finish; they are awaited, untimed,"
            " between calls,\nso that work is NOT in the figures above. reliant leaves no task"
            " behind a stream (trio nurseries)."
        )
    print("\nCaveat: trio vs asyncio and httpx2 vs httpx/OpenAI SDK; compare the ratios (x).")
    if same is not None:
        print_same_loop(same, lit_label, args.reps)
    elif version is not None:
        print(f"\nSame-loop table skipped: {same_skipped}.")
    print()
    print("Reference (project brief, not measured here): Router ~16x per chunk over raw HTTP,")
    print("~21x time to first token on a simple failover, seconds to import.")
    print(f"Took {elapsed:.0f} s.")

    reliant["version"] = importlib.metadata.version("reliant")
    reliant["ratios"] = ratios(reliant)
    if litellm is not None:
        litellm["ratios"] = ratios(litellm)
    if same is not None:
        for lib in ("reliant", "litellm"):
            same[lib]["ratios"] = ratios(same[lib])
        same["litellm_ratio_over_reliant_ratio"] = {
            k: v / same["reliant"]["ratios"][k] for k, v in same["litellm"]["ratios"].items()
        }
    report = {
        "python": sys.version.split()[0],
        "chunks": CHUNKS,
        "ttft_chunks": TTFT_CHUNKS,
        "reps": args.reps,
        "warmup": args.warmup,
        "import_runs": args.import_runs,
        "imports": {"reliant": RELIANT_IMPORT, "litellm": LITELLM_IMPORT},
        "cpus": os.cpu_count(),
        "reliant": reliant,
        "litellm": litellm,
        "litellm_skipped": skipped,
        "litellm_ratio_over_reliant_ratio": (
            {k: v / reliant["ratios"][k] for k, v in litellm["ratios"].items()} if litellm else None
        ),
        "same_loop": same,
        "same_loop_skipped": same_skipped,
        "reference": REFERENCE,
        "seconds": elapsed,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
