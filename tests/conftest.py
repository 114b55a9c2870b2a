"""Fixtures shared by the test modules: the fake LLM server, a real redis-server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

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
