"""examples/asgi_stream.py: a Starlette app streaming through ReliableProvider on asyncio.

Real time (uvicorn and the fake server are real servers on loopback): the
answer takes four seconds, so "closed at once" is a bound well below that.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from reliant import ReliableProvider
from reliant.providers import Anthropic, OpenAICompatible
from reliant.testing import serve_fake_llm

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.anyio

FAKE_SERVER_TASKS = "reliant.testing._fake_server."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn serves on asyncio


def app_tasks() -> set[asyncio.Task[object]]:
    """The loop's tasks but the fake server's (it runs on this loop too, and keeps its own)."""
    return {t for t in asyncio.all_tasks() if not t.get_name().startswith(FAKE_SERVER_TASKS)}


def example() -> ModuleType:
    path = Path(__file__).parent.parent / "examples" / "asgi_stream.py"
    spec = importlib.util.spec_from_file_location("asgi_stream", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_client_disconnect_closes_the_upstream_at_once() -> None:
    """A client that hangs up mid-answer makes the app close the upstream within 0.5 s."""
    asgi = example()
    async with (
        serve_fake_llm() as server,
        OpenAICompatible(name="primary", base_url=server.openai_base_url, api_key="k") as primary,
        Anthropic(name="backup", base_url=server.anthropic_base_url, api_key="k") as backup,
    ):
        llm = ReliableProvider(
            [primary, backup],
            max_retries=0,
            model_aliases={
                "primary": {"chat": "status:500"},
                "backup": {"chat": "ok:chunks=200:gap=0.02"},
            },
        )
        before = app_tasks()
        app_server, task, port = await asgi.serve(asgi.make_app(llm))
        try:
            first = await asgi.hang_up_after_the_first_words(port)
            assert first.startswith("tok0 ")  # the backup's answer: the primary's 500 was hidden
            upstream = len(server.requests) - 1
            assert server.requests[upstream].model == "ok:chunks=200:gap=0.02"
            closed_at = await asyncio.wait_for(server.wait_for_disconnect(upstream), 5.0)
            assert closed_at - server.requests[upstream].received_at < 0.5
            assert upstream in server.aborted
        finally:
            app_server.should_exit = True
            await task
        assert app_tasks() == before  # nothing of the app or reliant outlives it


async def test_a_whole_answer_streams_through_the_app() -> None:
    """A client that reads to the end gets the backup's whole answer as plain text."""
    import httpx2

    asgi = example()
    async with (
        serve_fake_llm() as server,
        OpenAICompatible(name="primary", base_url=server.openai_base_url, api_key="k") as primary,
        Anthropic(name="backup", base_url=server.anthropic_base_url, api_key="k") as backup,
    ):
        llm = ReliableProvider(
            [primary, backup],
            max_retries=0,
            model_aliases={"primary": {"chat": "status:503"}, "backup": {"chat": "ok:chunks=4"}},
        )
        app_server, task, port = await asgi.serve(asgi.make_app(llm))
        try:
            async with httpx2.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{port}/chat?q=hello")
            assert response.status_code == 200
            assert response.text == "tok0 tok1 tok2 tok3 "
            assert response.headers["content-type"].startswith("text/plain")
        finally:
            app_server.should_exit = True
            await task
