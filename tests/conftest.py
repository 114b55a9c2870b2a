"""Fixtures shared by the test modules that talk HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from reliant.testing import FakeLLMServer, serve_fake_llm


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    """The fake LLM server on a free loopback port, for one test."""
    async with serve_fake_llm() as s:
        yield s
