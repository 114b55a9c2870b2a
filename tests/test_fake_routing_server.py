"""The fake server's deployments (/d/<name>): latency, rate limits, prefix cache, controls.

Over real loopback HTTP, on both backends (trio's MockClock, looptime on
asyncio), the server on the test's own loop, so every time asserted is exact
virtual time.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import anyio
import httpx2
import pytest

from reliant import ChatMessage, FakeServerSpecError, ProviderError, ReliableProvider
from reliant.providers import Anthropic, OpenAICompatible
from reliant.testing import Deployment, DeploymentStats, FakeLLMServer, serve_fake_llm

pytestmark = pytest.mark.anyio

OPENAI = "/v1/chat/completions"
ANTHROPIC = "/v1/messages"
SYSTEM = "You are a careful assistant. " * 4  # 116 characters: 29 tokens
HI = [ChatMessage.user("hi")]


@pytest.fixture
async def client(server: FakeLLMServer) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=server.base_url) as c:
        yield c


def chat(
    model: str = "ok", *, user: str = "hi", system: str | None = None, **extra: Any
) -> dict[str, Any]:
    """An OpenAI chat body: an optional system message, then one user message."""
    messages = [{"role": "system", "content": system}] if system is not None else []
    return {"model": model, "messages": [*messages, {"role": "user", "content": user}], **extra}


def limit_headers(response: httpx2.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if "ratelimit" in k or k == "retry-after"}


async def first_piece_at(client: httpx2.AsyncClient, path: str, body: dict[str, Any]) -> float:
    """Seconds (to the nanosecond) from sending a streamed request to its first content piece."""
    start = anyio.current_time()
    first: float | None = None
    async with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        async for raw in response.aiter_raw():
            if first is None and b"tok0" in raw:
                first = anyio.current_time() - start
    assert first is not None, "no content piece"
    return round(first, 9)


# -- deployments on one server ---------------------------------------------------------------


async def test_a_prefix_reaches_every_route_and_is_recorded(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """``/d/<name>`` before OpenAI's and Anthropic's paths serves them; the record names it."""
    server.deployment("east")
    openai = await client.post("/d/east" + OPENAI, json=chat())
    anthropic = await client.post("/d/east" + ANTHROPIC, json=chat(max_tokens=10))
    plain = await client.post(OPENAI, json=chat())
    assert openai.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 tok4 "
    assert anthropic.json()["content"][0]["text"] == "tok0 tok1 tok2 tok3 tok4 "
    assert plain.status_code == 200
    assert [(r.deployment, r.path) for r in server.requests] == [
        ("east", OPENAI),
        ("east", ANTHROPIC),
        (None, OPENAI),
    ]


async def test_deployment_url_serves_reliant_providers(server: FakeLLMServer) -> None:
    """``deployment_url`` is the root a provider's base URL is built on (``+ "/v1"`` for OpenAI)."""
    server.deployment("east")
    server.deployment("west")
    assert server.deployment_url("east") == server.base_url + "/d/east"
    async with (
        OpenAICompatible(
            name="east", base_url=server.deployment_url("east") + "/v1", api_key="k"
        ) as east,
        Anthropic(name="west", base_url=server.deployment_url("west"), api_key="k") as west,
    ):
        assert await east.chat_with_history(HI, "ok:chunks=2", 0.0) == "tok0 tok1 "
        assert await west.chat_with_history(HI, "ok:chunks=1", 0.0) == "tok0 "
    assert [(r.deployment, r.path) for r in server.requests] == [
        ("east", OPENAI),
        ("west", ANTHROPIC),
    ]


async def test_settings_are_a_frozen_record_and_arguments_left_out_are_kept(
    server: FakeLLMServer,
) -> None:
    """``deployment()`` returns the settings; a later call changes only what it names."""
    first = server.deployment("east", ttft=0.05, rpm=600, prefix_cache=True)
    assert first == Deployment("east", ttft=0.05, rpm=600, prefix_cache=True)
    with pytest.raises(AttributeError):
        first.ttft = 1.0  # type: ignore[misc]
    assert server.deployment("east", ttft=0.5) == Deployment(
        "east", ttft=0.5, rpm=600, prefix_cache=True
    )
    assert server.deployment("east", rpm=None).rpm is None
    assert server.deployment("east") == Deployment("east", ttft=0.5, prefix_cache=True)
    assert server.deployments == {"east": Deployment("east", ttft=0.5, prefix_cache=True)}
    assert server.deployment_stats("east") == DeploymentStats()


async def test_ttft_delays_the_whole_response(
    client: httpx2.AsyncClient, server: FakeLLMServer
) -> None:
    """ttft=0.5: headers and the role chunk at 0.5 s, the behaviour's ttft=1 piece at 1.5 s."""
    server.deployment("east", ttft=0.5)
    start = anyio.current_time()
    seen: list[tuple[float, bytes]] = []
    body = {**chat("ok:ttft=1:chunks=1"), "stream": True}
    async with client.stream("POST", "/d/east" + OPENAI, json=body) as response:
        seen.append((anyio.current_time() - start, b"headers"))
        async for raw in response.aiter_raw():
            seen.append((anyio.current_time() - start, raw))
    assert [round(at, 9) for at, _ in seen[:3]] == [0.5, 0.5, 1.5]
    assert b'"role":"assistant"' in seen[1][1]
    assert b"tok0" not in seen[1][1]
    assert b"tok0" in seen[2][1]
    start = anyio.current_time()
    await client.post("/d/east" + ANTHROPIC, json=chat(max_tokens=10))
    assert round(anyio.current_time() - start, 9) == 0.5
    assert await first_piece_at(client, OPENAI, chat("ok:ttft=1")) == 1.0


async def test_ttft_changes_while_the_server_runs(
    client: httpx2.AsyncClient, server: FakeLLMServer
) -> None:
    """Changing ttft mid-run applies from the next request; other deployments keep theirs."""
    server.deployment("east", ttft=0.05)
    server.deployment("west", ttft=0.05)
    assert await first_piece_at(client, "/d/east" + OPENAI, chat()) == 0.05
    server.deployment("east", ttft=0.5)
    assert await first_piece_at(client, "/d/east" + OPENAI, chat()) == 0.5
    assert await first_piece_at(client, "/d/west" + OPENAI, chat()) == 0.05
    server.deployment("east", ttft=0.05)
    assert await first_piece_at(client, "/d/east" + OPENAI, chat()) == 0.05


# -- hostile input -----------------------------------------------------------------------------


async def test_an_undeclared_deployment_gets_a_404_that_names_it(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """``/d/eats/...`` answers 404 naming it, the declared ones and the closest, as a spec error."""
    server.deployment("east")
    response = await client.post("/d/eats" + OPENAI, json=chat())
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert message == (
        "reliant fake server: unknown deployment 'eats' (did you mean 'east'?): declared "
        "deployments are 'east'; declare it with server.deployment('eats', ...) before "
        "using /d/eats/"
    )
    assert response.headers["x-reliant-fake-server-error"] == message
    assert (await client.get("/d/eats/v1/models")).status_code == 404
    async with OpenAICompatible(
        name="p", base_url=server.base_url + "/d/nope/v1", api_key="k"
    ) as provider:
        with pytest.raises(FakeServerSpecError, match="unknown deployment 'nope'"):
            await provider.chat_with_history(HI, "ok", 0.0)
    with pytest.raises(KeyError, match="unknown deployment 'nope'"):
        server.deployment_url("nope")
    with pytest.raises(KeyError, match="unknown deployment 'nope'"):
        server.deployment_stats("nope")


async def test_a_declared_deployment_with_an_unknown_path_gets_the_usual_404(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """``/d/east/v1/nothing`` is a missing route (named without the prefix), not a deployment."""
    server.deployment("east")
    response = await client.post("/d/east/v1/nothing", json=chat())
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "no route for POST /v1/nothing"
    assert server.deployment_stats("east").requests == 0


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("a/b", {}, "bad deployment name 'a/b'"),
        ("", {}, "bad deployment name ''"),
        ("-x", {}, "bad deployment name '-x'"),
        ("x" * 65, {}, "bad deployment name"),
        ("east", {"ttft": -0.1}, "ttft must be >= 0, not -0.1"),
        ("east", {"ttft": math.nan}, "ttft must be a finite number"),
        ("east", {"ttft": "1"}, "ttft must be a finite number"),
        ("east", {"ttft": True}, "ttft must be a finite number"),
        ("east", {"rpm": 0}, "rpm must be a whole number >= 1 or None, not 0"),
        ("east", {"rpm": 1.5}, "rpm must be a whole number >= 1 or None, not 1.5"),
        ("east", {"tpm": True}, "tpm must be a whole number >= 1 or None, not True"),
        ("east", {"cache_size": 0}, "cache_size must be a whole number >= 1, not 0"),
        ("east", {"prefix_cache": "yes"}, "prefix_cache must be True or False"),
    ],
)
async def test_invalid_settings_are_refused_by_name(
    server: FakeLLMServer, name: str, settings: dict[str, Any], message: str
) -> None:
    """A bad name or setting raises ValueError naming it, and changes nothing."""
    server.deployment("east", rpm=5)
    with pytest.raises(ValueError, match=re.escape(message)):
        server.deployment(name, **settings)
    assert server.deployments == {"east": Deployment("east", rpm=5)}


# -- rate limits ---------------------------------------------------------------------------------


async def test_rpm_sends_openai_headers_and_429s_beyond_the_bucket(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """rpm=3: three answers count down, the fourth is a 429 (retry-after 20); at t=20 one more."""
    server.deployment("east", rpm=3)
    seen = [limit_headers(await client.post("/d/east" + OPENAI, json=chat())) for _ in range(3)]
    assert [
        (h["x-ratelimit-remaining-requests"], h["x-ratelimit-reset-requests"]) for h in seen
    ] == [
        ("2", "20s"),
        ("1", "40s"),
        ("0", "1m0s"),
    ]
    assert seen[0]["x-ratelimit-limit-requests"] == "3"
    refused = await client.post("/d/east" + OPENAI, json=chat())
    assert refused.status_code == 429
    assert limit_headers(refused) == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m0s",
        "retry-after": "20",
    }
    assert refused.json() == {
        "error": {
            "message": "Rate limit reached for deployment 'east' on requests per min (RPM): "
            "Limit 3, Used 3, Requested 1. Please try again in 20s.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    await anyio.sleep(19.9)
    assert (await client.post("/d/east" + OPENAI, json=chat())).status_code == 429
    await anyio.sleep(0.1)
    again = await client.post("/d/east" + OPENAI, json=chat())
    assert again.status_code == 200
    assert again.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert server.deployment_stats("east") == DeploymentStats(
        requests=6, rate_limited=2, tokens=4 * (1 + 5)
    )
    assert server.rate_limited == 2


async def test_the_bucket_refills_continuously_and_resets_read_like_openai(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """rpm=600 refills one request per 100 ms: 1 used reads ``100ms``, 2.2 used ``220ms``."""
    server.deployment("east", rpm=600)
    first = await client.post("/d/east" + OPENAI, json=chat())
    assert first.headers["x-ratelimit-reset-requests"] == "100ms"
    await client.post("/d/east" + OPENAI, json=chat())
    await anyio.sleep(0.08)
    third = await client.post("/d/east" + OPENAI, json=chat())
    assert third.headers["x-ratelimit-remaining-requests"] == "597"
    assert third.headers["x-ratelimit-reset-requests"] == "220ms"


async def test_tpm_counts_a_quarter_of_the_characters_plus_max_tokens_or_the_answer(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """Tokens = ceil(chars/4) of all message text + max_tokens, or + the answer's output tokens."""
    server.deployment("east", tpm=100)
    # 40 + 2 characters: 11 tokens, plus max_tokens 20.
    reserved = await client.post("/d/east" + OPENAI, json=chat(system="x" * 40, max_tokens=20))
    assert reserved.headers["x-ratelimit-remaining-tokens"] == "69"
    assert reserved.headers["x-ratelimit-limit-tokens"] == "100"
    # 2 characters: 1 token, plus the answer's 5 pieces.
    answered = await client.post("/d/east" + OPENAI, json=chat())
    assert answered.headers["x-ratelimit-remaining-tokens"] == "63"
    # 37 used at 100/60 per second: full again in 22.2 s.
    assert answered.headers["x-ratelimit-reset-tokens"] == "22.2s"
    assert server.deployment_stats("east").tokens == 37
    # 400 characters and max_tokens 0 (unset): 100 tokens, 63 held: 22.2 s to wait.
    refused = await client.post("/d/east" + OPENAI, json=chat(user="y" * 400))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "23"
    assert refused.json()["error"]["message"] == (
        "Rate limit reached for deployment 'east' on tokens per min (TPM): Limit 100, Used 37, "
        "Requested 100. Please try again in 22.2s."
    )
    too_large = await client.post("/d/east" + OPENAI, json=chat(max_tokens=1000))
    assert too_large.status_code == 429
    assert "retry-after" not in too_large.headers
    assert too_large.json()["error"]["message"].startswith(
        "Request too large for deployment 'east' on tokens per min (TPM): Limit 100, "
        "Requested 1001."
    )
    await anyio.sleep(22.2)
    assert (await client.post("/d/east" + OPENAI, json=chat(user="y" * 396))).status_code == 200


async def test_error_answers_carry_the_headers_but_take_no_output_tokens(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """A scripted 500 from a limited deployment reports its limits and costs its prompt only."""
    server.deployment("east", rpm=10, tpm=1000)
    response = await client.post("/d/east" + OPENAI, json=chat("status:500"))
    assert response.status_code == 500
    assert response.headers["x-ratelimit-remaining-requests"] == "9"
    assert response.headers["x-ratelimit-remaining-tokens"] == "999"
    assert server.deployment_stats("east").tokens == 1


async def test_anthropic_gets_its_own_headers_with_rfc3339_resets(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """/v1/messages reports anthropic-ratelimit-* with resets 30 s apart, and 429s as Anthropic."""
    server.deployment("east", rpm=2, tpm=1000)
    body = chat(max_tokens=10)
    first = await client.post("/d/east" + ANTHROPIC, json=body)
    second = await client.post("/d/east" + ANTHROPIC, json=body)
    h1, h2 = first.headers, second.headers
    assert (
        h1["anthropic-ratelimit-requests-limit"],
        h1["anthropic-ratelimit-requests-remaining"],
    ) == (
        "2",
        "1",
    )
    assert h2["anthropic-ratelimit-requests-remaining"] == "0"
    assert (h2["anthropic-ratelimit-tokens-limit"], h2["anthropic-ratelimit-tokens-remaining"]) == (
        "1000",
        "978",
    )
    resets = [datetime.fromisoformat(h["anthropic-ratelimit-requests-reset"]) for h in (h1, h2)]
    assert h1["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert (resets[1] - resets[0]).total_seconds() == 30
    wall = email.utils.parsedate_to_datetime(h1["date"])
    assert 29 <= (resets[0] - wall).total_seconds() <= 31
    assert not any(k.startswith("x-ratelimit") for k in h1)
    refused = await client.post("/d/east" + ANTHROPIC, json=body)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "30"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"


async def test_other_protocols_get_429s_in_their_own_shape(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """Gemini under a limited deployment: RESOURCE_EXHAUSTED with RetryInfo, no limit headers."""
    server.deployment("east", rpm=1)
    path = "/d/east/v1beta/models/ok:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    assert (await client.post(path, json=body)).status_code == 200
    refused = await client.post(path, json=body)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "60s"} in error[
        "details"
    ]
    assert limit_headers(refused) == {}


async def test_a_rate_limited_request_consumes_no_scripted_behaviour(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """Script [500, ok] with rpm=1: 500, then a 429 that leaves ``ok`` for t=60."""
    server.deployment("east", rpm=1)
    server.script(None, ["status:500", "ok"])
    statuses = [(await client.post("/d/east" + OPENAI, json=chat())).status_code for _ in "ab"]
    await anyio.sleep(60)
    statuses.append((await client.post("/d/east" + OPENAI, json=chat())).status_code)
    assert statuses == [500, 429, 200]


async def test_changing_a_limit_keeps_what_the_bucket_holds(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """Raising rpm 2 -> 4 keeps the empty bucket, refilling 4/min; ``rpm=None`` lifts the limit."""
    server.deployment("east", rpm=2)
    for _ in range(2):
        await client.post("/d/east" + OPENAI, json=chat())
    server.deployment("east", rpm=4)
    refused = await client.post("/d/east" + OPENAI, json=chat())
    assert refused.headers["retry-after"] == "15"
    await anyio.sleep(15)
    assert (await client.post("/d/east" + OPENAI, json=chat())).status_code == 200
    server.deployment("east", rpm=None)
    free = await client.post("/d/east" + OPENAI, json=chat())
    assert free.status_code == 200
    assert limit_headers(free) == {}


async def test_reliant_fails_over_from_a_rate_limited_deployment(server: FakeLLMServer) -> None:
    """east (rpm=1) serves the first call; its 429 sends the second to west at once."""
    server.deployment("east", rpm=1)
    server.deployment("west")
    async with (
        OpenAICompatible(
            name="e", base_url=server.deployment_url("east") + "/v1", api_key="k"
        ) as e,
        OpenAICompatible(
            name="w", base_url=server.deployment_url("west") + "/v1", api_key="k"
        ) as w,
    ):
        with pytest.raises(ProviderError) as caught:
            await e.chat_with_history(HI, "ok", 0.0)
            await e.chat_with_history(HI, "ok", 0.0)
        assert (caught.value.status_code, caught.value.retry_after) == (429, 60.0)
        llm = ReliableProvider([e, w], max_retries=0)
        assert await llm.chat_with_history(HI, "ok:chunks=1", 0.0) == "tok0 "
    assert [r.deployment for r in server.requests] == ["east", "east", "east", "west"]
    assert anyio.current_time() == 0


# -- prefix cache ------------------------------------------------------------------------------


async def test_openai_prefix_cache_reports_hits_in_usage_header_and_counters(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """The same system prompt hits (cached = its characters / 4); another misses."""
    server.deployment("east", prefix_cache=True)
    usages, verdicts = [], []
    for system, user in ((SYSTEM, "a"), (SYSTEM, "b"), ("other", "a")):
        response = await client.post("/d/east" + OPENAI, json=chat(system=system, user=user))
        verdicts.append(response.headers["x-fake-cache"])
        usages.append(response.json()["usage"])
    assert verdicts == ["miss", "hit", "miss"]
    assert [u["prompt_tokens"] for u in usages] == [30, 30, 2]
    assert [u["prompt_tokens_details"]["cached_tokens"] for u in usages] == [0, 29, 0]
    stats = server.deployment_stats("east")
    assert (stats.cache_hits, stats.cache_misses) == (1, 2)
    assert stats.cache_hit_ratio == pytest.approx(1 / 3)


async def test_anthropic_prefix_cache_reports_cache_read_input_tokens(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """Anthropic: a hit's cache_read_input_tokens is the prefix, input_tokens the rest."""
    server.deployment("east", prefix_cache=True)
    body = {
        "model": "ok",
        "max_tokens": 10,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": "hi there"}],
    }
    miss = await client.post("/d/east" + ANTHROPIC, json=body)
    assert miss.json()["usage"]["cache_read_input_tokens"] == 0
    assert miss.json()["usage"]["input_tokens"] == 31
    hit = await client.post("/d/east" + ANTHROPIC, json={**body, "stream": True})
    assert hit.headers["x-fake-cache"] == "hit"
    start = json.loads(hit.text.split("data: ", 2)[1].split("\n", 1)[0])
    assert start["message"]["usage"]["cache_read_input_tokens"] == 29
    assert start["message"]["usage"]["input_tokens"] == 2


async def test_the_prefix_is_everything_but_the_last_message(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """A repeated history hits; nothing before the last message is always a miss."""
    server.deployment("east", prefix_cache=True)
    history = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
    ]
    verdicts = []
    for last in ("again", "other", "again"):
        body = {"model": "ok", "messages": [*history, {"role": "user", "content": last}]}
        verdicts.append((await client.post("/d/east" + OPENAI, json=body)).headers["x-fake-cache"])
    for _ in range(2):
        response = await client.post("/d/east" + OPENAI, json=chat())
        verdicts.append(response.headers["x-fake-cache"])
        assert response.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert verdicts == ["miss", "hit", "hit", "miss", "miss"]


async def test_the_cache_forgets_the_least_recently_used_prefix(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """cache_size=2: A, B, A (hit), C evicts B, so B misses and then evicts A."""
    server.deployment("east", prefix_cache=True, cache_size=2)
    verdicts = []
    for system in "ABACBA":
        response = await client.post("/d/east" + OPENAI, json=chat(system=system))
        verdicts.append(response.headers["x-fake-cache"])
    assert verdicts == ["miss", "miss", "hit", "miss", "miss", "miss"]


async def test_without_prefix_cache_the_behaviour_usage_is_kept(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """No prefix_cache: no x-fake-cache, usage as the behaviour says; turning it off forgets."""
    server.deployment("east", prefix_cache=True)
    body = chat(system=SYSTEM)
    assert (await client.post("/d/east" + OPENAI, json=body)).headers["x-fake-cache"] == "miss"
    server.deployment("east", prefix_cache=False)
    plain = await client.post("/d/east" + OPENAI, json=chat("ok:cached_tokens=3", system=SYSTEM))
    assert "x-fake-cache" not in plain.headers
    assert plain.json()["usage"]["prompt_tokens"] == 10
    assert plain.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 3
    server.deployment("east", prefix_cache=True)
    assert (await client.post("/d/east" + OPENAI, json=body)).headers["x-fake-cache"] == "miss"


async def test_settings_changes_reach_the_cache_at_the_next_request(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """Off and on again with no request between still forgets; a smaller size keeps the newest."""
    server.deployment("east", prefix_cache=True)

    async def verdicts(systems: str) -> list[str]:
        out = []
        for system in systems:
            response = await client.post("/d/east" + OPENAI, json=chat(system=system))
            out.append(response.headers["x-fake-cache"])
        return out

    assert await verdicts("AA") == ["miss", "hit"]
    server.deployment("east", prefix_cache=False)
    server.deployment("east", prefix_cache=True)
    assert await verdicts("ABC") == ["miss", "miss", "miss"]
    server.deployment("east", cache_size=1)
    assert await verdicts("CB") == ["hit", "miss"]


async def test_a_rate_limited_request_does_not_touch_the_cache(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """A 429 reports no cache verdict and remembers nothing."""
    server.deployment("east", prefix_cache=True, rpm=1)
    await client.post("/d/east" + OPENAI, json=chat(system="A"))
    refused = await client.post("/d/east" + OPENAI, json=chat(system="B"))
    assert refused.status_code == 429
    assert "x-fake-cache" not in refused.headers
    stats = server.deployment_stats("east")
    assert (stats.cache_hits, stats.cache_misses, stats.rate_limited) == (0, 1, 1)


# -- controls over HTTP, clear ------------------------------------------------------------------


async def test_http_controls_declare_change_and_read_deployments(
    server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """POST /_fake/deployments/<name> declares or changes one; GET reads settings and counters."""
    created = await client.post("/_fake/deployments/east", json={"ttft": 0.05, "rpm": 600})
    assert created.json() == {
        "settings": {
            "name": "east",
            "ttft": 0.05,
            "rpm": 600,
            "tpm": None,
            "prefix_cache": False,
            "cache_size": 4096,
        },
        "stats": {
            "requests": 0,
            "rate_limited": 0,
            "cache_hits": 0,
            "cache_misses": 0,
            "tokens": 0,
        },
    }
    assert await first_piece_at(client, "/d/east" + OPENAI, chat()) == 0.05
    await client.post("/_fake/deployments/east", json={"ttft": 0.5, "rpm": None})
    assert server.deployments["east"] == Deployment("east", ttft=0.5)
    assert await first_piece_at(client, "/d/east" + OPENAI, chat()) == 0.5
    listing = (await client.get("/_fake/deployments")).json()
    assert list(listing["deployments"]) == ["east"]
    assert listing["deployments"]["east"]["stats"]["requests"] == 2
    assert (await client.get("/_fake/deployments/east")).json() == listing["deployments"]["east"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/_fake/deployments/east", {"ttfx": 1}, 400,
         "unknown deployment setting 'ttfx' (did you mean 'ttft'?)"),
        ("POST", "/_fake/deployments/east", {"rpm": "600"}, 400,
         "rpm must be a whole number >= 1 or None, not '600'"),
        ("POST", "/_fake/deployments/east", [1], 400, "the body must be a JSON object of settings"),
        ("POST", "/_fake/deployments/a%2Fb", {}, 400, "bad deployment name 'a%2Fb'"),
        ("GET", "/_fake/deployments/west", None, 404, "unknown deployment 'west'"),
        ("DELETE", "/_fake/deployments/east", None, 405, "DELETE /_fake/deployments/east: use GET"),
        ("POST", "/_fake/deployments", {}, 405, "POST /_fake/deployments: use GET"),
    ],
)  # fmt: skip
async def test_bad_control_requests_are_refused_by_name(
    server: FakeLLMServer,
    client: httpx2.AsyncClient,
    method: str,
    path: str,
    body: Any,
    status: int,
    message: str,
) -> None:
    """A bad control request gets a 4xx naming its problem; no deployment is made."""
    response = await client.request(method, path, json=body)
    assert response.status_code == status
    assert message in response.json()["error"]["message"]
    assert server.deployments == {}


async def test_clear_forgets_deployments(server: FakeLLMServer, client: httpx2.AsyncClient) -> None:
    """After ``clear()`` a deployment must be declared again."""
    server.deployment("east")
    server.clear()
    assert server.deployments == {}
    assert (await client.post("/d/east" + OPENAI, json=chat())).status_code == 404


async def test_deployments_work_when_served_to_asyncio(anyio_backend: Any) -> None:
    """On either backend, a server of the test's own (not the fixture's): limits and cache hold."""
    async with serve_fake_llm() as server, httpx2.AsyncClient() as client:
        server.deployment("east", rpm=2, prefix_cache=True)
        url = server.deployment_url("east") + OPENAI
        statuses = [(await client.post(url, json=chat(system=SYSTEM))).status_code for _ in "abc"]
        assert statuses == [200, 200, 429]
        assert server.deployment_stats("east") == DeploymentStats(
            requests=3, rate_limited=1, cache_hits=1, cache_misses=1, tokens=2 * (30 + 5)
        )
