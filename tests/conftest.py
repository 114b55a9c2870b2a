"""Fixtures shared by the test modules: the fake LLM server, a real redis-server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from backends_support import BACKENDS, backend_options
from redis_support import RedisServer, require_redis_server
from reliant.testing import FakeLLMServer, serve_fake_llm


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    """The fake LLM server on a free loopback port, for one test."""
    async with serve_fake_llm() as s:
        yield s


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, shared by the session's Redis tests."""
    server = RedisServer(require_redis_server(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop and start again (same port)."""
    server = RedisServer(require_redis_server(), tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses, so tests sharing the server share nothing."""
    return f"test-{uuid.uuid4().hex[:12]}:"


# -- both backends --------------------------------------------------------------------------
#
# Tests marked ``pytest.mark.anyio`` run once per backend through anyio's pytest
# plugin, each on a virtual clock: trio's MockClock(autojump_threshold=0), and on
# asyncio looptime's loop, which jumps its clock to the next timer whenever
# every task waits. pytest-trio's trio mode marks every coroutine test as a trio
# test; the hook below runs after it and gives the anyio-marked ones back.


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("anyio") is not None:
            item.own_markers[:] = [m for m in item.own_markers if m.name != "trio"]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Each anyio test once on trio and once on asyncio, both on a virtual clock."""
    return (request.param, backend_options(request.param))
