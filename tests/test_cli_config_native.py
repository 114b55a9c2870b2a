"""`reliant.toml` kinds for the native providers: gemini, openai_responses and azure_openai."""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import pytest
import trio

from reliant._cli import main
from reliant._cli._config import Config, ConfigError, build_providers, parse_config
from reliant.providers import AzureOpenAI, Gemini, OpenAIResponses
from reliant.testing import serve_fake_llm


def _parse(text: str) -> Config:
    return parse_config(tomllib.loads(textwrap.dedent(text)))


def _problem(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _parse(text)
    return str(caught.value)


def _provider(kind: str, extra: str = "") -> str:
    return f'[[providers]]\nname = "p"\nkind = "{kind}"\n{extra}'


@pytest.mark.parametrize(
    ("kind", "base_url", "key_env", "cls"),
    [
        ("gemini", "https://generativelanguage.googleapis.com", "GEMINI_API_KEY", Gemini),
        ("openai_responses", "https://api.openai.com/v1", "OPENAI_API_KEY", OpenAIResponses),
    ],
)
def test_kind_defaults_and_built_provider(
    kind: str, base_url: str, key_env: str, cls: type
) -> None:
    """Each new kind has its public endpoint and key variable by default and builds its class."""
    config = _parse(_provider(kind, "max_tokens = 256\n"))
    (p,) = config.providers
    assert (p.base_url, p.api_key_env, p.max_tokens) == (base_url, key_env, 256)
    [(name, provider)] = build_providers(config, {key_env: "k-123456"})
    assert name == "p" and isinstance(provider, cls)


def test_azure_needs_its_endpoint_and_takes_an_api_version() -> None:
    """azure_openai has no default base_url; api_version selects the deployment URLs."""
    message = _problem(_provider("azure_openai"))
    assert 'providers[0].base_url: required for kind = "azure_openai"' in message
    config = _parse(
        _provider(
            "azure_openai",
            'base_url = "https://res.openai.azure.com"\napi_version = "2024-10-21"\n',
        )
    )
    (p,) = config.providers
    assert (p.api_key_env, p.api_version) == ("AZURE_OPENAI_API_KEY", "2024-10-21")
    [(_, provider)] = build_providers(config, {"AZURE_OPENAI_API_KEY": "k-123456"})
    assert isinstance(provider, AzureOpenAI) and provider.api_version == "2024-10-21"


def test_gemini_vertex_project_and_location() -> None:
    """project (and location) make a gemini provider talk to Vertex AI's regional host."""
    config = _parse(_provider("gemini", 'project = "proj"\nlocation = "europe-west4"\n'))
    (p,) = config.providers
    assert p.base_url == "https://europe-west4-aiplatform.googleapis.com"
    [(_, provider)] = build_providers(config, {"GEMINI_API_KEY": "ya29.token"})
    assert isinstance(provider, Gemini)
    assert provider._models_url.endswith(
        "/projects/proj/locations/europe-west4/publishers/google/models"
    )
    assert _parse(_provider("gemini", 'project = "p"\nlocation = "global"\n')).providers[
        0
    ].base_url == ("https://aiplatform.googleapis.com")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            _provider("openai", 'api_version = "x"\n'),
            'api_version: only applies to kind = "azure_openai"',
        ),
        (
            _provider("azure_openai", 'base_url = "https://r"\napi_version = ""\n'),
            "api_version: must not be empty",
        ),
        (_provider("anthropic", 'project = "x"\n'), 'project: only applies to kind = "gemini"'),
        (_provider("gemini", 'location = "x"\n'), "location: needs project"),
        (
            _provider("azure_openai", 'base_url = "https://r"\nmax_tokens = 5\n'),
            "max_tokens: only applies",
        ),
        (_provider("gemini", "project = 3\n"), "project: expected a string"),
        ('[[providers]]\nname = "p"\nkind = "gemeni"\n', "did you mean 'gemini'?"),
        ('[[providers]]\nname = "p"\nkind = "azure"\n', "'azure_openai'"),
    ],
)
def test_new_keys_are_validated(text: str, expected: str) -> None:
    """Misplaced, empty or mistyped new keys, and near-miss kinds, are named precisely."""
    assert expected in _problem(text)


# Trio only: the CLI (its own trio.run in a worker thread) is trio by design.
async def test_chat_through_each_new_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`reliant chat` answers through each new kind on the fake server (the CLI in a thread)."""
    monkeypatch.setenv("RELIANT_TEST_KEY", "k-123456")
    async with serve_fake_llm() as server:
        for kind, url in (
            ("gemini", server.gemini_base_url),
            ("openai_responses", server.responses_base_url),
            ("azure_openai", server.azure_base_url),
        ):
            path = tmp_path / f"{kind}.toml"
            path.write_text(
                f'default_model = "ok:chunks=2"\n[[providers]]\nname = "p"\nkind = "{kind}"\n'
                f'base_url = "{url}"\napi_key_env = "RELIANT_TEST_KEY"\n',
                encoding="utf-8",
            )
            code = await trio.to_thread.run_sync(main, ["chat", "hi", "--config", str(path)])
            out = capsys.readouterr().out
            assert (code, out.strip()) == (0, "tok0 tok1"), kind
