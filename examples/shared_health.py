"""Two services sharing provider health in Redis (as two processes or machines would).

Needs a redis-server; ``REDIS_URL`` names it (default: localhost)::

    python examples/shared_health.py
"""

import os

import trio

from reliant import HealthPolicy, ProviderError, RedisHealth, ReliableProvider
from reliant.testing import Fail, Reply, ScriptedProvider

URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
POLICY = HealthPolicy(open_after=3, open_for=5.0)


def service(health: RedisHealth) -> tuple[ScriptedProvider, ReliableProvider]:
    dead = ScriptedProvider([Fail(ProviderError("down", status_code=503))], name="primary")
    backup = ScriptedProvider([Reply("served by backup")], name="backup")
    llm = ReliableProvider([("primary", dead), ("backup", backup)], max_retries=0, health=health)
    return dead, llm


async def main() -> None:
    # One store (and connection) per worker; the same prefix shares breakers,
    # the same name shares the retry budget.
    async with (
        RedisHealth(URL, POLICY, name="my-service") as one,
        RedisHealth(URL, POLICY, name="my-service") as two,
    ):
        dead_one, llm_one = service(one)
        dead_two, llm_two = service(two)
        for _ in range(3):
            print(await llm_one.simple_chat("hi", "m", 0.0))  # primary fails, backup answers
        print(await llm_two.simple_chat("hi", "m", 0.0))  # skips the open primary at once
        print("calls to primary:", len(dead_one.calls), "and", len(dead_two.calls))  # 3 and 0
        print(llm_two.health()[("primary", "m")].state)  # open


trio.run(main)
