"""A real ``redis-server`` for the Redis health tests (never a mock), and worker processes.

The server runs on a free loopback port in a temporary directory, without
persistence; :func:`require_redis_server` skips the tests when
``redis-server`` is missing, except under ``CI=true`` where it is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

INSTALL_HINT = (
    "redis-server not found: the Redis health tests need a real server "
    "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)"
)
WORKER = Path(__file__).with_name("redis_worker.py")


def require_redis_server() -> str:
    """Path of ``redis-server``; skip (or fail under ``CI=true``) when it is missing."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{INSTALL_HINT}; with CI=true it is required, not skipped")
        pytest.skip(INSTALL_HINT)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _major_version(binary: str) -> int:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    for part in out.split():
        if part.startswith("v="):
            return int(part[2:].split(".")[0])
    return 0


class RedisServer:
    """One ``redis-server`` process; ``stop()`` and ``start()`` again keep the port."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._debug = _major_version(binary) >= 7

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        if self._debug:  # DEBUG SLEEP, for the slow-server test (Redis 7 gates it)
            args += ["--enable-debug-command", "local"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited at start:\n{log}")
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGKILL) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            process.wait(10)


def run_workers(
    mode: str, count: int, params: dict[str, Any], *, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Start ``count`` worker processes, release them together, return their JSON reports.

    Each worker connects, prints ``ready``, waits for ``go`` on stdin, runs
    ``mode`` and prints one JSON line.
    """
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), mode, json.dumps({**params, "index": i})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                _, err = p.communicate(timeout=timeout)
                raise AssertionError(f"worker did not start: {line!r}\n{err}")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
