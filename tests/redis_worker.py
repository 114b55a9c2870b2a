"""One process of a fleet sharing health in Redis, for tests/test_redis_health.py.

    python tests/redis_worker.py MODE '{"url": ..., "prefix": ..., ...}'

Prints ``ready`` once its store is open, waits for ``go`` on stdin, runs
MODE and prints one JSON report line. Modes: ``hammer`` (callers loop on a
dead primary with a working backup), ``budget`` (callers against an
all-failing upstream), ``admit`` (concurrent admits on one route), ``hold``
(take the probe slot and never give it back), ``rpm`` (routing over two
deployments whose RPM budgets are shared in Redis).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import trio

from reliant import (
    HealthPolicy,
    NoCapacityError,
    ProviderError,
    RateLimit,
    RedisHealth,
    RedisRouting,
    ReliableProvider,
    Routing,
)
from reliant.testing import Fail, Reply, ScriptedProvider


class Outages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Redis health store unavailable"):
            self.count += 1


async def routed(params: dict[str, Any]) -> dict[str, Any]:
    """Mode ``rpm``: callers send requests over two deployments sharing one RPM budget each."""
    store = RedisRouting(params["url"], prefix=params["prefix"], timeout=1.0)
    limits = {name: RateLimit(rpm=params["rpm"]) for name in ("a", "b")}
    deployments = [ScriptedProvider([Reply("ok")], name=name) for name in ("a", "b")]
    async with store:
        llm = ReliableProvider(
            deployments,
            routing=Routing(tiers=[["a", "b"]], strategy="least_busy", max_wait=0),
            rate_limits=limits,
            routing_store=store,
        )
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        served = refused = 0

        async def caller() -> None:
            nonlocal served, refused
            for _ in range(params["requests"]):
                try:
                    await llm.simple_chat("hi", "m", 0.0)
                    served += 1
                except NoCapacityError:
                    refused += 1

        async with trio.open_nursery() as nursery:
            for _ in range(params["callers"]):
                nursery.start_soon(caller)
        return {
            "served": served,
            "refused": refused,
            "calls": {p.name: len(p.calls) for p in deployments},
            "shared": store.shared,
        }


async def main(mode: str, params: dict[str, Any]) -> dict[str, Any]:
    if mode == "rpm":
        return await routed(params)
    outages = Outages()
    logging.getLogger("reliant").addHandler(outages)
    policy = HealthPolicy(**params.get("policy", {}))
    health = RedisHealth(
        params["url"],
        policy,
        prefix=params["prefix"],
        name=params.get("name", "default"),
        timeout=params.get("timeout", 1.0),
        probe_ttl=params.get("probe_ttl", 30.0),
    )
    async with health:
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        # Wall time of trio time 0, so the test can merge call times of processes.
        wall0 = time.time() - trio.current_time()
        started = time.time()
        report: dict[str, Any] = {}
        if mode == "hammer":
            report = await hammer(health, params)
        elif mode == "budget":
            report = await budget(health, params)
        elif mode == "admit":
            async with trio.open_nursery() as nursery:
                admissions: list[str] = []

                async def one() -> None:
                    admissions.append((await health.admit(("primary", "m"))).admission)

                for _ in range(params["admits"]):
                    nursery.start_soon(one)
            report = {"admissions": admissions}
        elif mode == "hold":
            decision = await health.admit(("primary", "m"))
            print(json.dumps({"admission": decision.admission, "at": time.time()}), flush=True)
            await trio.sleep_forever()
        report["wall0"], report["start"], report["end"] = wall0, started, time.time()
        report["outages"] = outages.count
        return report


async def hammer(health: RedisHealth, params: dict[str, Any]) -> dict[str, Any]:
    dead = ScriptedProvider([Fail(ProviderError("down", status_code=500))], name="primary")
    backup = ScriptedProvider([Reply("ok")], name="backup")
    llm = ReliableProvider(
        [("primary", dead), ("backup", backup)], max_retries=0, base_backoff=0.05, health=health
    )
    served = 0

    async def caller() -> None:
        nonlocal served
        while trio.current_time() < end:
            assert await llm.simple_chat("hi", "m", 0.0) == "ok"
            served += 1
            await trio.sleep(params.get("pause", 0.01))

    end = trio.current_time() + params["duration"]
    async with trio.open_nursery() as nursery:
        for _ in range(params["callers"]):
            nursery.start_soon(caller)
    return {"calls": [c.started_at for c in dead.calls], "served": served}


async def budget(health: RedisHealth, params: dict[str, Any]) -> dict[str, Any]:
    dead = ScriptedProvider([Fail(ProviderError("down", status_code=500))], name="primary")
    llm = ReliableProvider([("primary", dead)], max_retries=2, base_backoff=0.05, health=health)
    failed = 0

    async def caller() -> None:
        nonlocal failed
        try:
            await llm.simple_chat("hi", "m", 0.0)
        except Exception:
            failed += 1

    async with trio.open_nursery() as nursery:
        for _ in range(params["callers"]):
            nursery.start_soon(caller)
    return {"calls": len(dead.calls), "requests": params["callers"], "failed": failed}


if __name__ == "__main__":
    print(json.dumps(trio.run(main, sys.argv[1], json.loads(sys.argv[2]))), flush=True)
