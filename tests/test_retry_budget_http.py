"""The retry budget over real loopback HTTP: dead routes never starve a working one."""

from __future__ import annotations

import anyio
import pytest

from reliant import ChatMessage, FailoverError, ReliableProvider
from reliant.providers import Anthropic, OpenAICompatible
from reliant.testing import FakeLLMServer

pytestmark = pytest.mark.anyio

HI = [ChatMessage.user("hi")]
N = 200


@pytest.mark.parametrize("health", ["default", "off"])
async def test_burst_of_200_is_served_whole_with_default_health(
    server: FakeLLMServer, health: str
) -> None:
    """200 concurrent requests; two dead providers first, the third fails each once: 200 served."""
    aliases: dict[str, dict[str, str]] = {"dead-a": {}, "dead-b": {}, "serving": {}}
    for i in range(N):
        for name in aliases:
            aliases[name][f"r{i}"] = f"{name}-{i}"
        server.script(f"dead-a-{i}", ["status:500"])
        server.script(f"dead-b-{i}", ["status:503"])
        server.script(f"serving-{i}", ["status:500", "ok:chunks=1"])
    async with (
        OpenAICompatible(name="dead-a", base_url=server.openai_base_url, api_key="k") as a,
        Anthropic(name="dead-b", base_url=server.anthropic_base_url, api_key="k") as b,
        OpenAICompatible(name="serving", base_url=server.openai_base_url, api_key="k") as c,
    ):
        llm = ReliableProvider(
            [("dead-a", a), ("dead-b", b), ("serving", c)],
            max_retries=1,
            model_aliases=aliases,
            **({} if health == "default" else {"health": None}),
        )
        served: list[str] = []
        failed: list[FailoverError] = []

        async def one(i: int) -> None:
            try:
                served.append(await llm.chat_with_history(HI, f"r{i}", 0.0))
            except FailoverError as err:
                failed.append(err)

        async with anyio.create_task_group() as nursery:
            for i in range(N):
                nursery.start_soon(one, i)
    assert not failed, failed[0]
    assert served == ["tok0 "] * N
    serving_calls = [r for r in server.requests if (r.model or "").startswith("serving-")]
    assert len(serving_calls) == 2 * N  # every serving route's one retry was admitted
