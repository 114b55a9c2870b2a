"""Rate limits learned from response headers: parsing (hostile values too) and routing by them."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reliant import ReliableProvider, Routing
from reliant._routing_state import MAX_RESET, Learned, learn_headers
from reliant.providers import OpenAICompatible
from reliant.testing import FakeLLMServer
from reliant.testing._raw import RawResponse, http_response

# -- parsing ----------------------------------------------------------------------------


def test_openai_headers_are_read_with_their_durations() -> None:
    """x-ratelimit-remaining-* and reset durations such as 6m0s and 120ms are read."""
    learned = learn_headers(
        {
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-reset-requests": "6m0s",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-tokens": "120ms",
        }
    )
    assert learned == Learned(59.0, 360.0, 149984.0, 0.12)
    learned = learn_headers(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1h2m3.5s"}
    )
    assert learned == Learned(0.0, MAX_RESET, None, None)  # 3723.5 s, capped at an hour


def test_anthropic_headers_are_read_with_their_rfc3339_resets() -> None:
    """anthropic-ratelimit-*-remaining and RFC 3339 resets become seconds from now."""
    reset = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    learned = learn_headers(
        {
            "anthropic-ratelimit-requests-remaining": "3",
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-input-tokens-remaining": "4000",
            "anthropic-ratelimit-input-tokens-reset": reset,
        }
    )
    assert learned is not None
    assert learned.requests == 3.0 and learned.tokens == 4000.0
    assert learned.requests_reset is not None and 28.0 < learned.requests_reset <= 30.0


def test_no_rate_limit_headers_learn_nothing() -> None:
    """A response without rate-limit headers teaches nothing."""
    assert learn_headers({"content-type": "application/json"}) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"x-ratelimit-remaining-requests": "lots"},
        {"x-ratelimit-remaining-requests": "-5"},
        {"x-ratelimit-remaining-requests": "nan"},
        {"x-ratelimit-remaining-requests": "1" * 100},
        {"anthropic-ratelimit-requests-remaining": "inf"},
    ],
)
def test_unreadable_counts_are_ignored(headers: dict[str, str]) -> None:
    """A count that is not a finite non-negative number is ignored, never an error."""
    assert learn_headers(headers) is None


def test_a_lying_reset_is_capped_and_a_garbled_one_ignored() -> None:
    """A reset of 999999h is read as an hour; one that is not a duration or time is dropped."""
    learned = learn_headers(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "999999h"}
    )
    assert learned == Learned(0.0, MAX_RESET, None, None)
    learned = learn_headers(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"}
    )
    assert learned == Learned(0.0, None, None, None)
    learned = learn_headers(
        {
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "2024-13-45T99:00:00",
        }
    )
    assert learned == Learned(0.0, None, None, None)


@given(st.dictionaries(st.sampled_from([
    "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
    "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset",
]), st.text(max_size=80)))  # fmt: skip
def test_any_header_values_give_a_learned_record_or_none(headers: dict[str, str]) -> None:
    """Whatever a server sends in these headers, parsing never raises and never goes negative."""
    learned = learn_headers(headers)
    if learned is not None:
        for value in (learned.requests, learned.tokens):
            assert value is None or value >= 0
        for reset in (learned.requests_reset, learned.tokens_reset):
            assert reset is None or 0 <= reset <= MAX_RESET


# -- routing by what the server said -------------------------------------------------------

ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "dep-a",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "from a"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


@pytest.mark.anyio
async def test_a_deployment_that_says_it_is_out_of_quota_gets_nothing_until_its_reset(
    server: FakeLLMServer, anyio_backend: object
) -> None:
    """remaining-requests 0 with reset 30s: the next requests go to the peer until t=30."""
    headers = {
        "content-type": "application/json",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "30s",
    }
    body = json.dumps(ANSWER).encode()
    server.script_raw("dep-a", [RawResponse([http_response(body, headers=headers)])])
    async with (
        OpenAICompatible(name="a", base_url=server.openai_base_url, api_key="sk-a") as a,
        OpenAICompatible(name="b", base_url=server.openai_base_url, api_key="sk-b") as b,
    ):
        llm = ReliableProvider(
            [a, b],
            model_aliases={"a": {"m": "dep-a"}, "b": {"m": "gpt-4o"}},
            routing=Routing(),  # the plain chain: a first whenever it has room
            rng=random.Random(1),
        )
        assert await llm.chat_with_system(None, "hi", "m", 0.0) == "from a"
        assert llm.deployments()["a"].ready_in == 30.0
        for _ in range(3):
            assert await llm.chat_with_system(None, "hi", "m", 0.0) != "from a"
        await anyio.sleep(30.0)
        assert await llm.chat_with_system(None, "hi", "m", 0.0) == "from a"
    served = [r.model for r in server.requests]
    assert served == ["dep-a", "gpt-4o", "gpt-4o", "gpt-4o", "dep-a"]


def test_a_told_limit_refills_what_is_left_continuously() -> None:
    """remaining 0 of 600 RPM: ready after one request's refill (0.1 s), not at the full reset."""
    from reliant._routing_state import LocalRouting

    learned = learn_headers(
        {
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1m0s",
        }
    )
    assert learned is not None and learned.requests_limit == 600.0
    store = LocalRouting()
    store.learn_nowait("east", 100.0, learned)
    assert store.view("east", 100.0, None, 0).ready_in == pytest.approx(0.1)
    assert store.view("east", 100.125, None, 0).ready_in == 0.0
    assert store.acquire_nowait("east", 100.125, None, 0) == 0.0
    assert store.view("east", 100.125, None, 0).ready_in == pytest.approx(0.075)


def test_without_a_told_limit_nothing_left_waits_for_the_reset() -> None:
    """remaining 0 without a limit header: no request until the announced reset."""
    from reliant._routing_state import LocalRouting

    learned = learn_headers(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20s"}
    )
    assert learned is not None
    store = LocalRouting()
    store.learn_nowait("east", 0.0, learned)
    assert store.view("east", 5.0, None, 0).ready_in == 15.0
    assert store.view("east", 20.0, None, 0).ready_in == 0.0
