"""Failover on real loopback HTTP, with no API keys and no network.

The fake LLM server from ``reliant.testing`` plays both providers: the model
name it is asked for picks its behaviour, so the primary answers HTTP 500
every time and the backup streams an answer. Run it::

    python examples/quickstart.py
"""

import trio

from reliant import ChatMessage, ReliableProvider, fallback_scope, take_last_provider_fallback
from reliant.providers import Anthropic, OpenAICompatible
from reliant.testing import serve_fake_llm


async def main() -> None:
    async with (
        serve_fake_llm() as server,
        OpenAICompatible(name="primary", base_url=server.openai_base_url, api_key="k") as primary,
        Anthropic(name="backup", base_url=server.anthropic_base_url, api_key="k") as backup,
    ):
        llm = ReliableProvider(
            [("primary", primary), ("backup", backup)],
            max_retries=1,  # two attempts per provider
            base_backoff=0.05,  # seconds before the retry, jittered
            # Each provider's id for the model we ask for; here, fake-server behaviours.
            model_aliases={"primary": {"chat": "status:500"}, "backup": {"chat": "ok:chunks=5"}},
        )
        messages = [ChatMessage.user("Why is the sky blue?")]
        with fallback_scope():
            async with llm.stream_chat_with_history(messages, "chat", 0.2) as chunks:
                async for chunk in chunks:
                    print(chunk.delta, end="", flush=True)
            info = take_last_provider_fallback()
        print()
        if info is not None:
            print(f"served by {info.actual_provider} ({info.actual_model})")
            for attempt in info.attempts:
                print(f"  {attempt.provider} attempt {attempt.attempt}: {attempt.reason}")


trio.run(main)
