"""Secrets in exception chains: every error reliant keeps or raises is clean all the way down.

``str(err)``, the failure trail and the logs were clean before; these tests
look where a traceback printer or a debugger looks: the whole
``__cause__``/``__context__`` chain, exception groups, notes, and the HTTP
request objects that transport errors carry.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

import reliant
from reliant import (
    ChatMessage,
    FailoverError,
    Provider,
    ReliableProvider,
    StreamChunk,
    StreamError,
    StreamOptions,
)
from reliant.providers import Anthropic, OpenAICompatible
from reliant.testing import FakeLLMServer

pytestmark = pytest.mark.anyio

HI = [ChatMessage.user("hi")]
SECRET = "plainword-looking-secret-42"  # no pattern would recognise it
SK = "sk-live-0123456789abcdefABCDEF"  # a pattern does


def chain(exc: BaseException) -> Iterator[BaseException]:
    """Every exception below ``exc``: causes, contexts and group members."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]
        if isinstance(e, BaseExceptionGroup):
            todo += list(e.exceptions)


def everything_about(exc: BaseException) -> str:
    """What a traceback printer, a repr and a look at kept requests show."""
    parts = ["".join(traceback.format_exception(exc)), repr(exc)]
    for e in chain(exc):
        parts.append(repr(e.args))
        parts.extend(getattr(e, "__notes__", []))
        for name in ("_request", "request", "response"):
            try:
                obj = getattr(e, name, None)
            except RuntimeError:  # httpx2's .request when none was set
                continue
            request = getattr(obj, "request", obj) if name == "response" else obj
            if isinstance(request, httpx2.Request):
                parts.append(repr(dict(request.headers)))
                parts.append(str(request.url))
    return "\n".join(parts)


class Leaky(Provider):
    """A custom provider whose errors quote keys, directly and through their chain."""

    async def chat_with_system(
        self, system_prompt: Any, message: str, model: str, temperature: float
    ) -> str:
        try:
            raise ValueError(f"upstream said: bad token {SK}")
        except ValueError:
            err = RuntimeError(f"auth failed for key {SECRET}")
            err.add_note(f"tried with {SECRET}")
            raise err  # noqa: B904  # the ValueError stays as __context__

    @property
    def supports_streaming(self) -> bool:
        return True

    def stream_chat_with_system(
        self,
        system_prompt: str | None,
        message: str,
        model: str,
        temperature: float,
        options: StreamOptions = StreamOptions(),  # noqa: B008
    ) -> Any:
        provider = self

        class Opening:
            async def __aenter__(self) -> Any:
                await provider.chat_with_system(system_prompt, message, model, temperature)

            async def __aexit__(self, *exc: object) -> None:
                return None

        return Opening()


@pytest.fixture
def registered() -> Iterator[None]:
    forget = reliant.register_secret(SECRET)
    try:
        yield
    finally:
        forget()


async def test_register_secret_is_public_and_undone(registered: None) -> None:
    """reliant.register_secret scrubs a key of any shape; its returned undo forgets it."""
    assert reliant.sanitize_api_error(f"x {SECRET} y") == "x [REDACTED] y"
    other = "another-plain-secret-77"
    forget = reliant.register_secret(other)
    assert other not in reliant.sanitize_api_error(other)
    forget()
    assert reliant.sanitize_api_error(other) == other


async def test_failover_error_chain_of_a_custom_provider_is_clean(
    registered: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A custom provider's errors, their contexts and notes lose the keys in FailoverError."""
    llm = ReliableProvider([("leaky", Leaky())], max_retries=1, base_backoff=0.0)
    with pytest.raises(FailoverError) as info:
        await llm.simple_chat("q", "m", 0)
    logging.getLogger("test").exception("failed", exc_info=info.value)
    text = everything_about(info.value) + caplog.text
    assert SECRET not in text and SK not in text
    assert "auth failed for key [REDACTED]" in text  # scrubbed, not dropped


async def test_streaming_failover_error_chain_is_clean(registered: None) -> None:
    """The same holds for a stream whose every candidate failed before its first chunk."""
    llm = ReliableProvider([("leaky", Leaky())], max_retries=0)
    with pytest.raises(FailoverError) as info:
        async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
            async for _ in chunks:
                pass
    text = everything_about(info.value)
    assert SECRET not in text and SK not in text


async def test_committed_stream_break_chain_is_clean(registered: None) -> None:
    """A custom upstream that breaks after its first chunk raises nothing that quotes a key."""

    class Breaks(Leaky):
        def stream_chat_with_history(self, *args: Any, **kwargs: Any) -> Any:
            class Opening:
                async def __aenter__(self) -> Any:
                    async def gen() -> Any:
                        yield StreamChunk("hi")
                        raise ConnectionError(f"peer reset; key={SECRET} {SK}")

                    return gen()

                async def __aexit__(self, *exc: object) -> None:
                    return None

            return Opening()

    llm = ReliableProvider([("breaks", Breaks())], max_retries=0)
    with pytest.raises(StreamError) as info:
        async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
            async for _ in chunks:
                pass
    text = everything_about(info.value)
    assert SECRET not in text and SK not in text


@pytest.mark.parametrize("name", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
async def test_transport_error_requests_in_the_chain_carry_no_key(
    server: FakeLLMServer, name: str, stream: bool
) -> None:
    """A reset connection's httpx2 error under FailoverError keeps its request, keys masked."""
    server.script(None, ["reset:after=0"])
    provider: OpenAICompatible | Anthropic = (
        OpenAICompatible(name="p", base_url=server.openai_base_url, api_key=SK)
        if name == "openai"
        else Anthropic(name="p", base_url=server.anthropic_base_url, api_key=SK)
    )
    async with provider:
        llm = ReliableProvider([("p", provider)], max_retries=0)
        with pytest.raises(FailoverError) as info:
            if stream:
                async with llm.stream_chat_with_history(HI, "m", 0.0) as chunks:
                    async for _ in chunks:
                        pass
            else:
                await llm.chat_with_history(HI, "m", 0.0)
    requests = [
        e._request
        for e in chain(info.value)
        if isinstance(e, httpx2.RequestError) and e._request is not None
    ]
    assert requests, "the transport error keeps its request"
    header = "authorization" if name == "openai" else "x-api-key"
    for request in requests:
        assert SK not in request.headers[header]
    assert SK not in everything_about(info.value)
