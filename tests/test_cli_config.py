"""`reliant.toml` validation through the `reliant chat` entry point: every bad input is exit 2."""

from __future__ import annotations

import socket
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from redis_support import RedisServer
from reliant._cli import main
from reliant._cli._config import REQUEST_TIMEOUT_RENAMED, Config, ConfigError, parse_config

SECRET = "sk-test-abcdefghijklmnopqrstuvwxyz0123456789"

PROVIDER = """
[[providers]]
name = "primary"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "RELIANT_TEST_KEY"
"""
GOOD = 'default_model = "m"\n' + PROVIDER


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reliant.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _chat(
    capsys: pytest.CaptureFixture[str], config: Path | None, *extra: str
) -> tuple[int, str, str]:
    argv = ["chat", "hello", *extra]
    if config is not None:
        argv += ["--config", str(config)]
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _parse(text: str) -> Config:
    return parse_config(tomllib.loads(textwrap.dedent(text)))


def _problem(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _parse(text)
    return str(caught.value)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELIANT_CONFIG", raising=False)
    monkeypatch.delenv("RELIANT_TEST_KEY", raising=False)


# -- the documented schema ----------------------------------------------------------------


def test_defaults_are_filled_in() -> None:
    """A minimal file gets the documented defaults and the kind's default base URL and key."""
    config = _parse('[[providers]]\nname = "a"\nkind = "anthropic"\n')
    assert config.max_retries == 2 and config.base_backoff == 0.5
    assert config.first_chunk_timeout == 60.0 and config.idle_timeout == 60.0
    assert config.timeout is None and config.temperature == 0.7
    (provider,) = config.providers
    assert provider.base_url == "https://api.anthropic.com"
    assert provider.api_key_env == "ANTHROPIC_API_KEY"


def test_documented_example_is_valid() -> None:
    """The complete example in docs/configuration.md parses and means what the text says."""
    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text("utf-8")
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    config = parse_config(tomllib.loads(example))
    assert [p.name for p in config.providers] == ["openai", "anthropic", "local"]
    assert config.model_fallbacks == {"smart": ("fast",)}
    assert config.model_aliases["anthropic"]["smart"] == "claude-sonnet-4-5"
    assert config.providers[2].api_key_env is None


def test_prefill_key_reaches_the_provider() -> None:
    """`prefill = true` sets supports_prefill of an OpenAI provider; Anthropic refuses it."""
    from reliant._cli._config import build_providers

    config = _parse(GOOD + "prefill = true\n")
    assert config.providers[0].prefill
    [(_, provider)] = build_providers(config, {"RELIANT_TEST_KEY": "k"})
    assert provider.supports_prefill
    assert not _parse(GOOD).providers[0].prefill
    message = _problem('[[providers]]\nname = "a"\nkind = "anthropic"\nprefill = true\n')
    assert 'providers[0].prefill: only applies to kind = "openai"' in message


def test_unknown_top_level_key_suggests_the_closest() -> None:
    """A misspelt top-level key names the closest valid key."""
    message = _problem("max_retires = 1\n" + GOOD)
    assert "unknown top-level key 'max_retires'" in message
    assert "did you mean 'max_retries'?" in message


def test_unknown_provider_key_suggests_the_closest_and_hides_the_value() -> None:
    """A misplaced `api_key = "sk-..."` is named with a suggestion, its value never shown."""
    message = _problem(GOOD + f'api_key = "{SECRET}"\n')
    assert "providers[0]: unknown key 'api_key'" in message
    assert "did you mean 'api_key_env'?" in message
    assert "[provider 'primary']" in message
    assert SECRET not in message


def test_key_pasted_into_api_key_env_is_rejected_without_echo() -> None:
    """api_key_env must be a variable name; a pasted key is refused and not printed."""
    message = _problem(GOOD.replace('"RELIANT_TEST_KEY"', f'"{SECRET}"'))
    assert "NAME of an environment variable" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('max_retries = "3"', "max_retries: expected an integer, found a string"),
        ("max_retries = true", "max_retries: expected an integer, found a boolean"),
        ("base_backoff = [1]", "base_backoff: expected a number of seconds, found an array"),
        ('idle_timeout = "60"', "idle_timeout: expected a number of seconds, found a string"),
        (
            "stream_fallback_to_non_streaming = 1",
            "stream_fallback_to_non_streaming: expected a boolean (true or false), found an",
        ),
        ("default_model = 4", "default_model: expected a string, found an integer"),
        (
            'model_fallbacks = { m = "x" }',
            "model_fallbacks.m: expected an array of strings, found a string",
        ),
        ("model_fallbacks = { m = [1] }", "model_fallbacks.m[0]: expected a string, found an"),
    ],
)
def test_wrong_top_level_types_name_key_expected_and_found(snippet: str, expected: str) -> None:
    """A wrong type says which key, the type expected and the type found."""
    assert expected in _problem(snippet + "\n" + PROVIDER)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("models = 3", "providers[0].models: expected a table of strings, found an integer"),
        ("models = { m = 3 }", "providers[0].models.m: expected a string, found an integer"),
        ("headers = { X-A = 1 }", "providers[0].headers.X-A: expected a string, found an integer"),
        ("max_tokens = 10", 'providers[0].max_tokens: only applies to kind = "anthropic"'),
        ('prefill = "yes"', "providers[0].prefill: expected a boolean (true or false), found a"),
        (
            'base_url = "ftp://x"',
            "providers[0].base_url: must start with http:// or https://",
        ),
        ("base_url = 1", "providers[0].base_url: expected a string, found an integer"),
    ],
)
def test_wrong_provider_fields_are_named(snippet: str, expected: str) -> None:
    """Provider fields are checked one by one, with the table's index and name."""
    message = _problem(f'[[providers]]\nname = "primary"\nkind = "openai"\n{snippet}\n')
    assert expected in message
    assert "[provider 'primary']" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('default_model = "m"', "providers: missing required key"),
        ("providers = []", "providers: declare at least one [[providers]] table"),
        ("providers = 3", "providers: expected an array of tables ([[providers]]), found an"),
        ('[[providers]]\nkind = "openai"', "providers[0].name: missing required key"),
        ('[[providers]]\nname = "a"', "providers[0].kind: missing required key"),
        (
            '[[providers]]\nname = "a"\nkind = "opnai"',
            "unknown provider kind 'opnai' (did you mean 'openai'?)",
        ),
        (
            '[[providers]]\nname = "a"\nkind = "openai"\n' * 2,
            "providers[1].name: duplicate provider name",
        ),
        ("max_retries = -1\n" + GOOD, "max_retries: must be at least 0"),
        ("first_chunk_timeout = 0\n" + GOOD, "first_chunk_timeout: must be greater than 0"),
        ("temperature = 3\n" + GOOD, "temperature: must be between 0 and 2"),
        (GOOD + "[health]\nopen_after = 0\n", "health.open_after: must be at least 1"),
        (GOOD + "[hedge]\nafter = 0\n", "hedge.after: must be greater than 0"),
        (GOOD + '[hedge]\nafter = "p99"\n', "hedge.after: expected a number"),
        (GOOD + "[hedge]\nmax_extr = 1\n", "did you mean 'max_extra'?"),
        (GOOD + "[hedge]\nbudget = 3\n", "hedge: budget must be at most max_extra"),
        ('mid_stream = "retry"\n' + GOOD, 'mid_stream: must be "error", "restart" or "continue"'),
        ("mid_stream = 1\n" + GOOD, "mid_stream: expected one of"),
        ("max_stream_recoveries = 11\n" + GOOD, "max_stream_recoveries: must be at most 10"),
        ("fallback_on_content_filter = 1\n" + GOOD, "fallback_on_content_filter: expected a"),
        (GOOD + "[health]\nopen_for = -1\n", "health.open_for: must be greater than 0"),
        (GOOD + "[health]\nopen_fr = 1\n", "did you mean 'open_for'?"),
        (GOOD + "[health]\nenabled = 1\n", "health.enabled: expected a boolean"),
        ("health = 3\n" + GOOD, "health: expected a table"),
        (
            GOOD + "[health]\nopen_for = 10\nmax_open_for = 5\n",
            "health: max_open_for (5.0) must be >= open_for (10.0)",
        ),
    ],
)
def test_missing_and_invalid_values(text: str, expected: str) -> None:
    """Missing required keys and out-of-range values are reported by key."""
    assert expected in _problem(text)


def test_recovery_keys_reach_the_reliable_provider() -> None:
    """mid_stream, max_stream_recoveries and fallback_on_content_filter are passed through."""
    from reliant._cli._config import build_reliable

    text = 'mid_stream = "continue"\nmax_stream_recoveries = 2\n'
    text += "fallback_on_content_filter = true\n" + GOOD
    from reliant.testing import Reply, ScriptedProvider

    config = parse_config(tomllib.loads(text))
    llm = build_reliable(config, [("primary", ScriptedProvider([Reply()]))])
    assert (llm.mid_stream, llm.max_stream_recoveries) == ("continue", 2)
    assert llm._planner.fallback_on_content_filter is True
    assert parse_config(tomllib.loads(GOOD)).mid_stream == "error"


def test_hedge_table_builds_the_policy() -> None:
    """[hedge] turns hedging on with its fields; "p95" is accepted for after."""
    from reliant import Hedge

    assert parse_config(tomllib.loads(GOOD)).hedge is None
    text = GOOD + '[hedge]\nafter = "p95"\nmax_extra = 2\nbudget = 0.05\n'
    assert parse_config(tomllib.loads(text)).hedge == Hedge(after="p95", max_extra=2, budget=0.05)


TWO = GOOD + PROVIDER.replace('"primary"', '"east"') + "\n"


def test_routing_and_rate_limits_tables_build_the_policy() -> None:
    """[routing] and [rate_limits] reach ReliableProvider as Routing and RateLimit."""
    from reliant import RateLimit, Routing
    from reliant._cli._config import build_reliable
    from reliant.testing import Reply, ScriptedProvider

    text = TWO + textwrap.dedent(
        """
        [routing]
        tiers = [["primary", "east"]]
        strategy = "latency"
        affinity = "prefix"
        weights = { east = 2 }
        max_wait = 0

        [rate_limits]
        east = { rpm = 600, tpm = 100000 }
        """
    )
    config = parse_config(tomllib.loads(text))
    routing = Routing(
        tiers=[["primary", "east"]],
        strategy="latency",
        affinity="prefix",
        weights={"east": 2},
        max_wait=0,
    )
    assert config.routing == routing
    assert config.rate_limits == {"east": RateLimit(rpm=600, tpm=100000)}
    llm = build_reliable(
        config, [(n, ScriptedProvider([Reply()], name=n)) for n in ("primary", "east")]
    )
    assert llm.routing == routing
    assert parse_config(tomllib.loads(GOOD)).routing is None


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('[routing]\nstrategy = "fastest"\n', "routing: strategy must be one of"),
        ('[routing]\ntiers = [["nobody"]]\n', "routing.tiers: unknown provider(s) ['nobody']"),
        ('[routing]\ntiers = "primary"\n', "routing.tiers: expected an array of arrays"),
        ("[routing]\nstratgy = 1\n", "did you mean 'strategy'"),
        ("[rate_limits]\nnobody = { rpm = 1 }\n", "rate_limits.nobody: unknown provider"),
        ("[rate_limits]\nprimary = { rpm = -1 }\n", "rate_limits.primary.rpm"),
        ("[rate_limits]\nprimary = { rpn = 1 }\n", "did you mean 'rpm'"),
        ("[rate_limits]\nprimary = 600\n", "rate_limits.primary: expected a table"),
    ],
)
def test_bad_routing_tables_are_clear_errors(extra: str, expected: str) -> None:
    """Each mistake in [routing] or [rate_limits] names its key."""
    assert expected in _problem(GOOD + extra)


def test_health_table_builds_the_policy() -> None:
    """[health] sets the HealthPolicy fields; enabled = false turns health off."""
    from reliant import HealthPolicy

    text = GOOD + "[health]\nopen_after = 5\nopen_for = 2.5\nretry_budget = 0\n"
    config = parse_config(tomllib.loads(text))
    assert config.health == HealthPolicy(open_after=5, open_for=2.5, retry_budget=0.0)
    assert parse_config(tomllib.loads(GOOD)).health == HealthPolicy()
    assert parse_config(tomllib.loads(GOOD + "[health]\nenabled = false\n")).health is None
    text = GOOD + "[health]\nmax_retry_after_wait = 0\nmax_open_for_fast = 20\n"
    assert parse_config(tomllib.loads(text)).health == HealthPolicy(
        max_retry_after_wait=0.0, max_open_for_fast=20.0
    )


# -- through the command line ---------------------------------------------------------------


def test_unknown_key_exits_2_with_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`reliant chat` with a typo in the config prints the suggestion and exits 2."""
    config = _write(tmp_path, "tempreature = 0.2\n" + GOOD)
    code, out, err = _chat(capsys, config)
    assert code == 2 and out == ""
    assert "did you mean 'temperature'?" in err
    assert str(config) in err
    assert "Traceback" not in err


def test_top_level_key_after_a_table_gets_the_toml_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`default_model` written after `[hedge]` is explained: top-level keys come first."""
    config = _write(tmp_path, PROVIDER + '[hedge]\nafter = 1\ndefault_model = "m"\n')
    code, out, err = _chat(capsys, config)
    assert code == 2 and out == ""
    assert "hedge: unknown key 'default_model' ('default_model' is a top-level key: in TOML " in (
        " ".join(err.split())
    )
    assert "top-level keys must come before the first one" in " ".join(err.split())


def test_wrong_type_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong type is reported with key, expected and found type, exit 2."""
    code, _, err = _chat(capsys, _write(tmp_path, 'max_retries = "2"\n' + GOOD))
    assert code == 2
    assert "max_retries: expected an integer, found a string" in err


def test_missing_env_var_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unset key variable is named (never a value) and nothing is sent; exit 2."""
    code, _, err = _chat(capsys, _write(tmp_path, GOOD))
    assert code == 2
    assert "environment variable RELIANT_TEST_KEY is not set" in err
    assert "provider 'primary'" in err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file is named with how to point at one; exit 2."""
    code, _, err = _chat(capsys, tmp_path / "nope.toml")
    assert code == 2
    assert "config file not found" in err and "nope.toml" in err


def test_default_config_in_cwd_and_env_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --config, $RELIANT_CONFIG is used, else ./reliant.toml."""
    monkeypatch.chdir(tmp_path)
    code, _, err = _chat(capsys, None)
    assert code == 2 and "reliant.toml (in the current directory)" in err
    other = tmp_path / "elsewhere.toml"
    other.write_text("bogus = 1\n" + GOOD, encoding="utf-8")
    monkeypatch.setenv("RELIANT_CONFIG", str(other))
    code, _, err = _chat(capsys, None)
    assert code == 2 and "elsewhere.toml" in err and "unknown top-level key 'bogus'" in err


def test_invalid_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A TOML syntax error is reported with its position; exit 2."""
    code, _, err = _chat(capsys, _write(tmp_path, "max_retries = = 2\n"))
    assert code == 2 and "invalid TOML" in err and "line" in err


def test_no_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --model and default_model the command says what to do; exit 2."""
    code, _, err = _chat(capsys, _write(tmp_path, PROVIDER))
    assert code == 2 and "no model" in err and "--model" in err


def test_unreachable_provider_prints_trail_without_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed port fails over to nothing: the sanitized trail, no traceback, no key; exit 2."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RELIANT_TEST_KEY", SECRET)
    config = _write(
        tmp_path,
        GOOD.replace("127.0.0.1:9", f"127.0.0.1:{port}")
        + f'\n[[providers]]\nname = "second"\nkind = "anthropic"\n'
        f'base_url = "http://127.0.0.1:{port}"\napi_key_env = "RELIANT_TEST_KEY"\n',
    )
    config.write_text("max_retries = 0\n" + config.read_text("utf-8"), encoding="utf-8")
    for extra in ((), ("--no-stream",)):
        code, out, err = _chat(capsys, config, *extra)
        assert code == 2 and out == ""
        assert "providers/models failed" in err
        assert "provider=primary model=m attempt 1/1" in err
        assert "provider=second model=m attempt 1/1" in err
        assert SECRET not in err and "Traceback" not in err


def test_bad_temperature_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--temperature outside 0..2 is refused before anything is sent; exit 2."""
    code, _, err = _chat(capsys, _write(tmp_path, GOOD), "--temperature", "5")
    assert code == 2 and "--temperature" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown commands and a missing command are usage errors (exit 2)."""
    assert main(["frobnicate"]) == 2
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err


def test_missing_rich_asks_for_the_cli_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without rich the command explains how to install the cli extra and exits 2."""
    monkeypatch.setitem(sys.modules, "rich", None)
    assert main(["demo"]) == 2
    assert "needs the cli extra: pip install 'reliant[cli]'" in capsys.readouterr().err


def test_health_redis_url_is_validated_without_echoing_it() -> None:
    """[health] redis_url is checked (scheme) and never shown; its companions need it."""
    config = parse_config(tomllib.loads(GOOD + '[health]\nredis_url = "redis://h:6379/0"\n'))
    assert config.health_redis is not None
    assert (config.health_redis.url, config.health_redis.prefix, config.health_redis.name) == (
        "redis://h:6379/0",
        "reliant:",
        "default",
    )
    assert "redis://" not in repr(config)
    with pytest.raises(ConfigError, match=r"health\.redis_url: must start with redis://") as info:
        parse_config(tomllib.loads(GOOD + '[health]\nredis_url = "http://:s3cret@h"\n'))
    assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError, match=r"health\.redis_name: only applies with"):
        parse_config(tomllib.loads(GOOD + '[health]\nredis_name = "svc"\n'))
    assert parse_config(tomllib.loads(GOOD)).health_redis is None


# Trio only: the CLI opens the stores its config builds under trio.run, by design.
async def test_health_redis_url_builds_a_shared_store(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """build_reliable makes a RedisHealth from [health]; enter_health opens it for the run."""
    from contextlib import AsyncExitStack

    from reliant import RedisHealth
    from reliant._cli._config import build_reliable, enter_health
    from reliant.testing import Reply, ScriptedProvider

    text = GOOD + (
        f'[health]\nopen_after = 4\nredis_url = "{redis_server.url}"\n'
        f'redis_prefix = "{redis_prefix}"\nredis_name = "svc"\n'
    )
    config = parse_config(tomllib.loads(text))
    reliable = build_reliable(config, [("p", ScriptedProvider([Reply("hi")]))])
    store = reliable.health_store
    assert isinstance(store, RedisHealth)
    assert (store.prefix, store.name, store.policy.open_after) == (redis_prefix, "svc", 4)
    async with AsyncExitStack() as stack:
        await enter_health(reliable, stack)
        assert await reliable.simple_chat("hello", "m", 0.0) == "hi"
        assert store.shared
    assert not store.shared


def test_timeout_key_and_its_deprecated_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`timeout` is the per-phase HTTP timeout; `request_timeout` still works, with a note."""
    assert parse_config(tomllib.loads("timeout = 7\n" + GOOD)).timeout == 7.0
    old = parse_config(tomllib.loads("request_timeout = 7\n" + GOOD))
    assert old.timeout == 7.0 and old.deprecations == (REQUEST_TIMEOUT_RENAMED,)
    with pytest.raises(ConfigError, match="keep one"):
        parse_config(tomllib.loads("timeout = 1\nrequest_timeout = 7\n" + GOOD))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    text = "max_retries = 0\nrequest_timeout = 7\n" + GOOD.replace(
        "127.0.0.1:9", f"127.0.0.1:{port}"
    )
    code, _, err = _chat(capsys, _write(tmp_path, text))
    assert code == 2  # the closed port; the note came first
    note = " ".join(err.split("\n", 1)[0].split())
    assert note == (
        f"reliant: {tmp_path / 'reliant.toml'}: request_timeout is deprecated: write timeout "
        "(the same per-phase HTTP timeout, the name OpenAICompatible(timeout=...) and "
        "Anthropic(timeout=...) use; their request_timeout= is a cap on a whole non-streaming "
        "call)"
    )


# -- kind = "bedrock" ------------------------------------------------------------------------

BEDROCK = '[[providers]]\nname = "aws"\nkind = "bedrock"\n'


def test_bedrock_defaults_to_the_credential_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """kind = "bedrock" needs no key variable; its region names the endpoint."""
    from reliant._cli._config import build_providers
    from reliant.providers import Bedrock

    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    (provider,) = _parse(BEDROCK + 'region = "eu-west-3"\nmax_tokens = 100\n').providers
    assert (provider.kind, provider.region, provider.api_key_env) == ("bedrock", "eu-west-3", None)
    assert provider.base_url == "https://bedrock-runtime.eu-west-3.amazonaws.com"
    [(name, built)] = build_providers(_parse(BEDROCK + 'region = "eu-west-3"\n'), {})
    assert name == "aws" and isinstance(built, Bedrock)
    assert built.base_url == "https://bedrock-runtime.eu-west-3.amazonaws.com"
    assert built._api_key is None and built._max_tokens == 4096


def test_bedrock_without_region_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without region (or base_url) the endpoint follows AWS_REGION when the provider is built."""
    from reliant._cli._config import build_providers

    monkeypatch.setenv("AWS_REGION", "ap-northeast-1")
    config = _parse(BEDROCK)
    assert config.providers[0].base_url == ""
    [(_, built)] = build_providers(config, {})
    assert built.base_url == "https://bedrock-runtime.ap-northeast-1.amazonaws.com"  # type: ignore[attr-defined]


def test_bedrock_api_key_env_is_the_bearer_key() -> None:
    """api_key_env names the variable holding a Bedrock API key, sent as a bearer token."""
    from reliant._cli._config import build_providers

    config = _parse(BEDROCK + 'api_key_env = "RELIANT_TEST_KEY"\nbase_url = "http://127.0.0.1:9"\n')
    [(_, built)] = build_providers(config, {"RELIANT_TEST_KEY": SECRET})
    assert built._headers["authorization"] == f"Bearer {SECRET}"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="RELIANT_TEST_KEY is not set") as info:
        build_providers(config, {})
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('region = "eu-west-3"', 'providers[0].region: only applies to kind = "bedrock"'),
    ],
)
def test_region_only_for_bedrock(snippet: str, expected: str) -> None:
    """region on another kind is refused by name."""
    assert expected in _problem(f'[[providers]]\nname = "a"\nkind = "openai"\n{snippet}\n')


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('region = "Europe"', "providers[0].region: expected an AWS region such as us-east-1"),
        ("region = 3", "providers[0].region: expected a string, found an integer"),
        ('headers = { X-A = "b" }', 'providers[0].headers: does not apply to kind = "bedrock"'),
        ("prefill = true", 'providers[0].prefill: only applies to kind = "openai"'),
        ('base_url = "bedrock.example"', "providers[0].base_url: must start with http://"),
        ('api_key_env = "ABSK-not-a-name"', "providers[0].api_key_env: must be the NAME"),
        ("max_tokens = 0", "providers[0].max_tokens: must be at least 1"),
    ],
)
def test_wrong_bedrock_fields_are_named(snippet: str, expected: str) -> None:
    """Bedrock's fields are checked like every kind's, with the table's index and name."""
    message = _problem(f"{BEDROCK}{snippet}\n")
    assert expected in message and "[provider 'aws']" in message
    assert "ABSK-not-a-name" not in message
