"""The ``reliant.toml`` file: loading, full validation, and building providers from it.

Validation is hand-written (no schema library) so every message can say
exactly what is wrong: the key's path (``providers[1].base_url``), the type
expected and the type found, the closest valid key for a typo. Values are
never echoed back: a misplaced API key (``api_key = "sk-..."``, or a key
pasted into ``api_key_env``) must not end up on the terminal or in a CI log.
"""

from __future__ import annotations

import datetime
import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._health import HealthPolicy
from .._hedge import Hedge
from .._routing import RateLimit, Routing

if TYPE_CHECKING:
    from reliant import Provider, ReliableProvider

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAME",
    "Config",
    "ConfigError",
    "ProviderConfig",
    "api_key_for",
    "build_providers",
    "build_reliable",
    "enter_health",
    "load_config",
    "parse_config",
    "resolve_config_path",
]

DEFAULT_CONFIG_NAME = "reliant.toml"
CONFIG_ENV = "RELIANT_CONFIG"

ProviderKind = Literal[
    "openai", "anthropic", "bedrock", "gemini", "openai_responses", "azure_openai"
]
KINDS: tuple[ProviderKind, ...] = (
    "openai",
    "anthropic",
    "bedrock",
    "gemini",
    "openai_responses",
    "azure_openai",
)

# Bedrock's default URL depends on its region (see _provider_fields);
# azure_openai has none: its base_url is the user's own resource endpoint.
DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "openai_responses": "https://api.openai.com/v1",
}
# Bedrock has none: without api_key_env it signs with AWS credentials from
# botocore's standard chain (or sends AWS_BEARER_TOKEN_BEDROCK when set).
DEFAULT_KEY_ENVS: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "openai_responses": "OPENAI_API_KEY",
    "azure_openai": "AZURE_OPENAI_API_KEY",
}

_REGION_RE = re.compile(r"[a-z]{2}(-[a-z0-9]+)+-[0-9]+\Z")

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


class ConfigError(Exception):
    """A configuration problem, worded for the user (never contains secret values)."""


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One ``[[providers]]`` entry, validated."""

    name: str
    kind: ProviderKind
    base_url: str
    api_key_env: str | None
    models: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    max_tokens: int | None = None
    prefill: bool = False
    region: str | None = None
    api_version: str | None = None
    project: str | None = None
    location: str | None = None


@dataclass(frozen=True, slots=True)
class RedisHealthConfig:
    """``[health] redis_*``: provider health shared in Redis (``RedisHealth``)."""

    url: str = field(repr=False)  # may carry a password
    prefix: str = "reliant:"
    name: str = "default"


@dataclass(frozen=True, slots=True)
class Config:
    """A whole ``reliant.toml``, validated, with every default filled in."""

    providers: tuple[ProviderConfig, ...]
    default_model: str | None = None
    temperature: float = 0.7
    max_retries: int = 2
    base_backoff: float = 0.5
    timeout: float | None = None
    first_chunk_timeout: float = 60.0
    idle_timeout: float = 60.0
    stream_fallback_to_non_streaming: bool = False
    model_fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    health: HealthPolicy | None = field(default_factory=HealthPolicy)
    hedge: Hedge | None = None
    mid_stream: Literal["error", "restart", "continue"] = "error"
    max_stream_recoveries: int = 1
    fallback_on_content_filter: bool = False
    health_redis: RedisHealthConfig | None = None
    routing: Routing | None = None
    rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    source: str = DEFAULT_CONFIG_NAME
    deprecations: tuple[str, ...] = ()

    @property
    def model_aliases(self) -> dict[str, dict[str, str]]:
        """provider name -> {requested model: that provider's id}, for ReliableProvider."""
        return {p.name: dict(p.models) for p in self.providers if p.models}


# -- type names -----------------------------------------------------------------


def _found(value: object) -> str:
    """The TOML type of ``value`` for messages (the value itself is never shown)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, datetime.datetime):
        return "a date-time"
    if isinstance(value, datetime.date):
        return "a date"
    if isinstance(value, datetime.time):
        return "a time"
    return type(value).__name__


def _wrong_type(path: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"{path}: expected {expected}, found {_found(value)}")


_AFTER_TABLE = (
    " ({key!r} is a top-level key: in TOML every key after a [table] or [[providers]] "
    "header belongs to that table, so top-level keys must come before the first one)"
)


def _unknown_keys(table: Mapping[str, object], valid: tuple[str, ...], where: str) -> None:
    for key in table:
        if key in valid:
            continue
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        if where and key in TOP_KEYS:
            # TOML puts every key after a [table] header into that table.
            hint = _AFTER_TABLE.format(key=key)
        listing = ", ".join(valid)
        raise ConfigError(
            f"{where}: unknown key {key!r}{hint}; valid keys: {listing}"
            if where
            else f"unknown top-level key {key!r}{hint}; valid keys: {listing}"
        )


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# -- field readers ----------------------------------------------------------------------


def _string(
    table: Mapping[str, Any], key: str, where: str, *, required: bool = False
) -> str | None:
    path = _join(where, key)
    if key not in table:
        if required:
            raise ConfigError(f"{path}: missing required key (expected a string)")
        return None
    value = table[key]
    if not isinstance(value, str):
        raise _wrong_type(path, "a string", value)
    if not value.strip():
        raise ConfigError(f"{path}: must not be empty")
    return value


def _number(
    table: Mapping[str, Any],
    key: str,
    where: str,
    default: float,
    *,
    positive: bool,
) -> float:
    path = _join(where, key)
    if key not in table:
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type(path, "a number of seconds", value)
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(f"{path}: must be a finite number")
    if positive and number <= 0:
        raise ConfigError(f"{path}: must be greater than 0")
    if not positive and number < 0:
        raise ConfigError(f"{path}: must not be negative")
    return number


def _integer(
    table: Mapping[str, Any],
    key: str,
    where: str,
    default: int | None,
    *,
    minimum: int,
    maximum: int | None = None,
) -> int | None:
    path = _join(where, key)
    if key not in table:
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(path, "an integer", value)
    if value < minimum:
        raise ConfigError(f"{path}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{path}: must be at most {maximum}")
    return value


def _boolean(table: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    path = _join(where, key)
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, bool):
        raise _wrong_type(path, "a boolean (true or false)", value)
    return value


def _string_table(
    table: Mapping[str, Any],
    key: str,
    where: str,
    *,
    check_key: Callable[[str, str], None] | None = None,
    secret_values: bool = False,
) -> dict[str, str]:
    path = _join(where, key)
    if key not in table:
        return {}
    value = table[key]
    if not isinstance(value, dict):
        raise _wrong_type(path, "a table of strings", value)
    result: dict[str, str] = {}
    for name, item in value.items():
        item_path = f"{path}.{_quote_key(name)}"
        if check_key is not None:
            check_key(name, item_path)
        if not isinstance(item, str):
            raise _wrong_type(item_path, "a string", item)
        if not secret_values and not item.strip():
            raise ConfigError(f"{item_path}: must not be empty")
        if secret_values and ("\n" in item or "\r" in item):
            raise ConfigError(f"{item_path}: header values must not contain line breaks")
        result[name] = item
    return result


def _quote_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'


def _check_header_name(name: str, path: str) -> None:
    if not _HEADER_NAME_RE.match(name):
        raise ConfigError(f"{path}: {name!r} is not a valid HTTP header name")


# -- sections ---------------------------------------------------------------------------

TOP_KEYS: tuple[str, ...] = (
    "default_model",
    "temperature",
    "max_retries",
    "base_backoff",
    "timeout",
    "request_timeout",
    "first_chunk_timeout",
    "idle_timeout",
    "stream_fallback_to_non_streaming",
    "model_fallbacks",
    "mid_stream",
    "max_stream_recoveries",
    "fallback_on_content_filter",
    "health",
    "hedge",
    "routing",
    "rate_limits",
    "providers",
)
ROUTING_KEYS: tuple[str, ...] = tuple(Routing.__dataclass_fields__)
RATE_LIMIT_KEYS: tuple[str, ...] = tuple(RateLimit.__dataclass_fields__)
HEDGE_KEYS: tuple[str, ...] = tuple(Hedge.__dataclass_fields__)
REDIS_KEYS: tuple[str, ...] = ("redis_url", "redis_prefix", "redis_name")
HEALTH_KEYS: tuple[str, ...] = ("enabled", *HealthPolicy.__dataclass_fields__, *REDIS_KEYS)
PROVIDER_KEYS: tuple[str, ...] = (
    "name",
    "kind",
    "base_url",
    "api_key_env",
    "models",
    "headers",
    "max_tokens",
    "prefill",
    "region",
    "api_version",
    "project",
    "location",
)


# Kinds with an output-token limit of their own (Gemini's maxOutputTokens, the
# Responses API's max_output_tokens); Anthropic's is required, so defaulted.
_MAX_TOKEN_KINDS = ("anthropic", "bedrock", "gemini", "openai_responses")


def _provider(entry: object, index: int, seen: set[str]) -> ProviderConfig:
    where = f"providers[{index}]"
    if not isinstance(entry, dict):
        raise _wrong_type(where, "a table ([[providers]])", entry)
    name = entry.get("name")
    try:
        return _provider_fields(entry, where, seen)
    except ConfigError as err:
        if isinstance(name, str) and name.strip():
            # The index locates the table; the name makes it recognisable.
            raise ConfigError(f"{err} [provider {name!r}]") from None
        raise


def _provider_fields(entry: dict[str, Any], where: str, seen: set[str]) -> ProviderConfig:
    _unknown_keys(entry, PROVIDER_KEYS, where)
    name = _string(entry, "name", where, required=True)
    assert name is not None
    if name in seen:
        raise ConfigError(f"{where}.name: duplicate provider name")
    seen.add(name)
    kind = _string(entry, "kind", where, required=True)
    if kind not in KINDS:
        close = difflib.get_close_matches(kind or "", KINDS, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{where}.kind: unknown provider kind {kind!r}{hint}; expected one of "
            + ", ".join(repr(k) for k in KINDS)
        )
    region = _string(entry, "region", where)
    if region is not None and kind != "bedrock":
        raise ConfigError(f'{where}.region: only applies to kind = "bedrock"')
    if region is not None and not _REGION_RE.match(region):
        raise ConfigError(
            f"{where}.region: expected an AWS region such as us-east-1, found {region!r}"
        )
    project = _string(entry, "project", where)
    location = _string(entry, "location", where)
    if (project is not None or location is not None) and kind != "gemini":
        key = "project" if project is not None else "location"
        raise ConfigError(f'{where}.{key}: only applies to kind = "gemini" (Vertex AI)')
    if location is not None and project is None:
        raise ConfigError(f"{where}.location: needs project (Vertex AI)")
    api_version = _string(entry, "api_version", where)
    if api_version is not None and kind != "azure_openai":
        raise ConfigError(f'{where}.api_version: only applies to kind = "azure_openai"')
    if api_version == "":
        raise ConfigError(
            f"{where}.api_version: must not be empty (leave it out for Azure's v1 API)"
        )
    if kind == "bedrock":
        # Without a region: AWS_REGION / AWS_DEFAULT_REGION when the provider is built.
        default_url = f"https://bedrock-runtime.{region}.amazonaws.com" if region else ""
    else:
        default_url = _default_base_url(kind, project, location)
    base_url = _string(entry, "base_url", where) or default_url
    if not base_url and kind == "azure_openai":
        raise ConfigError(
            f'{where}.base_url: required for kind = "azure_openai" '
            "(the resource endpoint, https://<resource>.openai.azure.com)"
        )
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.base_url: must start with http:// or https://")
    key_env: str | None
    if "api_key_env" in entry and entry["api_key_env"] == "":
        key_env = None  # explicitly keyless (a local server)
    else:
        key_env = _string(entry, "api_key_env", where) or DEFAULT_KEY_ENVS.get(kind)
    if key_env is not None and not _ENV_NAME_RE.match(key_env):
        # Deliberately not echoed: this is where people paste the key itself.
        raise ConfigError(
            f"{where}.api_key_env: must be the NAME of an environment variable "
            "(letters, digits and _, e.g. OPENAI_API_KEY), not the key itself"
        )
    models = _string_table(entry, "models", where)
    headers = _string_table(
        entry, "headers", where, check_key=_check_header_name, secret_values=True
    )
    if headers and kind == "bedrock":
        raise ConfigError(f'{where}.headers: does not apply to kind = "bedrock" (signed requests)')
    max_tokens = _integer(entry, "max_tokens", where, None, minimum=1)
    if max_tokens is not None and kind not in _MAX_TOKEN_KINDS:
        raise ConfigError(
            f"{where}.max_tokens: only applies to kind = "
            + " or ".join(f'"{k}"' for k in _MAX_TOKEN_KINDS)
        )
    prefill = _boolean(entry, "prefill", where, False)
    if "prefill" in entry and kind != "openai":
        raise ConfigError(
            f'{where}.prefill: only applies to kind = "openai" '
            "(the Anthropic API always continues a trailing assistant message)"
        )
    return ProviderConfig(
        name=name,
        kind=kind,
        base_url=base_url.rstrip("/"),
        api_key_env=key_env,
        models=models,
        headers=headers,
        max_tokens=max_tokens,
        prefill=prefill,
        region=region,
        api_version=api_version,
        project=project,
        location=location,
    )


def _default_base_url(kind: str, project: str | None, location: str | None) -> str:
    """The kind's public endpoint ("" for azure_openai, whose endpoint is the user's own)."""
    if kind == "gemini" and project is not None:
        region = location or "us-central1"
        if region == "global":
            return "https://aiplatform.googleapis.com"
        return f"https://{region}-aiplatform.googleapis.com"
    return DEFAULT_BASE_URLS.get(kind, "")


def _model_fallbacks(table: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    if "model_fallbacks" not in table:
        return {}
    value = table["model_fallbacks"]
    if not isinstance(value, dict):
        raise _wrong_type("model_fallbacks", "a table of model -> array of models", value)
    chains: dict[str, tuple[str, ...]] = {}
    for model, chain in value.items():
        path = f"model_fallbacks.{_quote_key(model)}"
        if not isinstance(chain, list):
            problem = _wrong_type(path, "an array of strings", chain)
            if model in TOP_KEYS:
                raise ConfigError(f"{problem}{_AFTER_TABLE.format(key=model)}")
            raise problem
        for i, item in enumerate(chain):
            if not isinstance(item, str):
                raise _wrong_type(f"{path}[{i}]", "a string", item)
            if not item.strip():
                raise ConfigError(f"{path}[{i}]: must not be empty")
        chains[model] = tuple(chain)
    return chains


def _health(data: Mapping[str, Any]) -> HealthPolicy | None:
    if "health" not in data:
        return HealthPolicy()
    table = data["health"]
    if not isinstance(table, dict):
        raise _wrong_type("health", "a table ([health])", table)
    _unknown_keys(table, HEALTH_KEYS, "health")
    if not _boolean(table, "enabled", "health", True):
        return None
    values: dict[str, Any] = {}
    for key in HealthPolicy.__dataclass_fields__:
        if key not in table:
            continue
        if key == "open_after":
            values[key] = _integer(table, key, "health", None, minimum=1)
        else:
            zero_ok = key in ("retry_budget", "min_retries_per_second", "max_retry_after_wait")
            values[key] = _number(table, key, "health", 0.0, positive=not zero_ok)
    try:
        return HealthPolicy(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"health: {str(err).removeprefix('HealthPolicy.')}") from None


def _hedge(data: Mapping[str, Any]) -> Hedge | None:
    if "hedge" not in data:
        return None
    table = data["hedge"]
    if not isinstance(table, dict):
        raise _wrong_type("hedge", "a table ([hedge])", table)
    _unknown_keys(table, HEDGE_KEYS, "hedge")
    values: dict[str, Any] = {}
    for key in HEDGE_KEYS:
        if key not in table:
            continue
        if key == "after" and table[key] == "p95":
            values[key] = "p95"
        elif key == "max_extra":
            values[key] = _integer(table, key, "hedge", None, minimum=1)
        else:
            zero_ok = key in ("budget", "min_hedges_per_second")
            values[key] = _number(table, key, "hedge", 0.0, positive=not zero_ok)
    try:
        return Hedge(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"hedge: {str(err).removeprefix('Hedge.')}") from None


def _routing(data: Mapping[str, Any], names: set[str]) -> Routing | None:
    if "routing" not in data:
        return None
    table = data["routing"]
    if not isinstance(table, dict):
        raise _wrong_type("routing", "a table ([routing])", table)
    _unknown_keys(table, ROUTING_KEYS, "routing")
    values: dict[str, Any] = {}
    for key in ("strategy", "affinity"):
        if key in table:
            values[key] = _string(table, key, "routing")
    if "tiers" in table:
        tiers = table["tiers"]
        if not isinstance(tiers, list) or not all(
            isinstance(t, list) and all(isinstance(n, str) for n in t) for t in tiers
        ):
            raise _wrong_type("routing.tiers", 'an array of arrays of names ([["a", "b"]])', tiers)
        unknown = sorted({n for t in tiers for n in t} - names)
        if unknown:
            raise ConfigError(f"routing.tiers: unknown provider(s) {unknown}")
        values["tiers"] = tiers
    if "weights" in table:
        weights = table["weights"]
        if not isinstance(weights, dict):
            raise _wrong_type("routing.weights", "a table of name = weight", weights)
        unknown = sorted(set(weights) - names)
        if unknown:
            raise ConfigError(f"routing.weights: unknown provider(s) {unknown}")
        values["weights"] = {
            n: _number(weights, n, "routing.weights", 1.0, positive=True) for n in weights
        }
    for key in ("decay", "load_bound", "max_wait"):
        if key in table:
            values[key] = _number(table, key, "routing", 0.0, positive=key != "max_wait")
    try:
        return Routing(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"routing: {str(err).removeprefix('Routing.')}") from None


def _rate_limits(data: Mapping[str, Any], names: set[str]) -> dict[str, RateLimit]:
    table = data.get("rate_limits", {})
    if not isinstance(table, dict):
        raise _wrong_type("rate_limits", "a table ([rate_limits] name = { rpm = 600 })", table)
    limits: dict[str, RateLimit] = {}
    for name, entry in table.items():
        path = f"rate_limits.{_quote_key(name)}"
        if name not in names:
            raise ConfigError(f"{path}: unknown provider {name!r}")
        if not isinstance(entry, dict):
            raise _wrong_type(path, "a table such as { rpm = 600, tpm = 100000 }", entry)
        _unknown_keys(entry, RATE_LIMIT_KEYS, path)
        values = {k: _number(entry, k, path, 0.0, positive=True) for k in entry}
        try:
            limits[name] = RateLimit(**values)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{path}: {str(err).removeprefix('RateLimit.')}") from None
    return limits


def _mid_stream(data: Mapping[str, Any]) -> Literal["error", "restart", "continue"]:
    value = data.get("mid_stream", "error")
    if not isinstance(value, str):
        raise _wrong_type("mid_stream", 'one of "error", "restart", "continue"', value)
    for mode in ("error", "restart", "continue"):
        if value == mode:
            return mode
    raise ConfigError(f'mid_stream: must be "error", "restart" or "continue", got {value[:40]!r}')


def _recoveries(data: Mapping[str, Any]) -> int:
    value = _integer(data, "max_stream_recoveries", "", 1, minimum=0)
    assert value is not None
    if value > 10:
        raise ConfigError("max_stream_recoveries: must be at most 10")
    return value


def _health_redis(data: Mapping[str, Any]) -> RedisHealthConfig | None:
    table = data.get("health")
    if not isinstance(table, dict) or "redis_url" not in table:
        for key in REDIS_KEYS[1:]:
            if isinstance(table, dict) and key in table:
                raise ConfigError(f"health.{key}: only applies with health.redis_url")
        return None
    url = _string(table, "redis_url", "health")
    assert url is not None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        # Never echoed: the URL may carry a password.
        raise ConfigError(
            "health.redis_url: must start with redis://, rediss:// or unix:// "
            "(e.g. redis://localhost:6379/0)"
        )
    return RedisHealthConfig(
        url=url,
        prefix=_string(table, "redis_prefix", "health") or "reliant:",
        name=_string(table, "redis_name", "health") or "default",
    )


def parse_config(data: Mapping[str, Any], source: str = DEFAULT_CONFIG_NAME) -> Config:
    """Validate a parsed TOML document and fill in the defaults.

    Raises:
        ConfigError: With a message naming the key and what is wrong with it.
    """
    _unknown_keys(data, TOP_KEYS, "")
    if "providers" not in data:
        raise ConfigError(
            "providers: missing required key: declare at least one [[providers]] table"
        )
    providers_value = data["providers"]
    if not isinstance(providers_value, list):
        raise _wrong_type("providers", "an array of tables ([[providers]])", providers_value)
    if not providers_value:
        raise ConfigError("providers: declare at least one [[providers]] table")
    seen: set[str] = set()
    providers = tuple(_provider(entry, i, seen) for i, entry in enumerate(providers_value))
    temperature = _number(data, "temperature", "", 0.7, positive=False)
    if temperature > 2.0:
        raise ConfigError("temperature: must be between 0 and 2")
    max_retries = _integer(data, "max_retries", "", 2, minimum=0, maximum=100)
    assert max_retries is not None
    return Config(
        providers=providers,
        default_model=_string(data, "default_model", ""),
        temperature=temperature,
        max_retries=max_retries,
        base_backoff=_number(data, "base_backoff", "", 0.5, positive=False),
        timeout=_timeout(data),
        first_chunk_timeout=_number(data, "first_chunk_timeout", "", 60.0, positive=True),
        idle_timeout=_number(data, "idle_timeout", "", 60.0, positive=True),
        stream_fallback_to_non_streaming=_boolean(
            data, "stream_fallback_to_non_streaming", "", False
        ),
        model_fallbacks=_model_fallbacks(data),
        health=_health(data),
        hedge=_hedge(data),
        mid_stream=_mid_stream(data),
        max_stream_recoveries=_recoveries(data),
        fallback_on_content_filter=_boolean(data, "fallback_on_content_filter", "", False),
        health_redis=_health_redis(data),
        routing=_routing(data, {p.name for p in providers}),
        rate_limits=_rate_limits(data, {p.name for p in providers}),
        source=source,
        deprecations=(REQUEST_TIMEOUT_RENAMED,) if "request_timeout" in data else (),
    )


REQUEST_TIMEOUT_RENAMED = (
    "request_timeout is deprecated: write timeout (the same per-phase HTTP timeout, the "
    "name OpenAICompatible(timeout=...) and Anthropic(timeout=...) use; their "
    "request_timeout= is a cap on a whole non-streaming call)"
)


def _timeout(data: Mapping[str, Any]) -> float | None:
    # ``timeout`` is the per-phase HTTP timeout, as the providers' timeout=.
    # The old name, request_timeout, meant the same here but a whole-call
    # cap on the providers: accepted for one release, with a note.
    if "timeout" in data and "request_timeout" in data:
        raise ConfigError("timeout: also given as request_timeout, its deprecated name; keep one")
    for key in ("timeout", "request_timeout"):
        if key in data:
            return _number(data, key, "", 0.0, positive=True)
    return None


def resolve_config_path(explicit: str | None) -> Path:
    """``--config``, else ``$RELIANT_CONFIG``, else ``./reliant.toml``."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    return Path(DEFAULT_CONFIG_NAME)


def load_config(explicit: str | None) -> Config:
    """Find, read, parse and validate the configuration file.

    Raises:
        ConfigError: The file is missing, unreadable, not TOML, or invalid.
    """
    path = resolve_config_path(explicit)
    if not path.exists():
        how = (
            "given by --config"
            if explicit
            else f"from ${CONFIG_ENV}"
            if os.environ.get(CONFIG_ENV)
            else "in the current directory"
        )
        raise ConfigError(
            f"config file not found: {path} ({how}); pass --config FILE or set ${CONFIG_ENV}. "
            "See docs/configuration.md for the format."
        )
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8 text") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    try:
        return parse_config(data, source=str(path))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


# -- building providers ---------------------------------------------------------------------


def api_key_for(provider: ProviderConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The provider's key from its environment variable (None for keyless providers).

    Raises:
        ConfigError: The variable is unset or empty (named; its value never shown).
    """
    if provider.api_key_env is None:
        return None
    env = os.environ if environ is None else environ
    key = env.get(provider.api_key_env, "")
    if not key.strip():
        raise ConfigError(
            f"provider {provider.name!r}: environment variable {provider.api_key_env} is not set "
            f'(named by api_key_env); export it, or set api_key_env = "" for a keyless server'
        )
    return key


def build_providers(
    config: Config, environ: Mapping[str, str] | None = None
) -> list[tuple[str, Provider]]:
    """Leaf providers in priority order; the caller closes them (``aclose``).

    Every API key is looked up before any client is created, so a missing
    variable is reported without leaving half-built clients behind.
    """
    from reliant.providers import (
        Anthropic,
        AzureOpenAI,
        Bedrock,
        Gemini,
        OpenAICompatible,
        OpenAIResponses,
    )

    keys = {p.name: api_key_for(p, environ) for p in config.providers}
    built: list[tuple[str, Provider]] = []
    for p in config.providers:
        headers = dict(p.headers) or None
        # Keyless providers get an empty key so the provider does not fall
        # back to its own environment default.
        key = keys[p.name] if keys[p.name] is not None else ""
        if p.kind == "bedrock":
            # No key: the provider's own defaults (AWS_BEARER_TOKEN_BEDROCK,
            # else SigV4 with botocore's credential chain).
            provider: Provider = Bedrock(
                name=p.name,
                region=p.region,
                base_url=p.base_url or None,
                api_key=keys[p.name],
                timeout=config.timeout,
                max_tokens=p.max_tokens if p.max_tokens is not None else 4096,
            )
        elif p.kind == "openai":
            provider = OpenAICompatible(
                name=p.name,
                base_url=p.base_url,
                api_key=key,
                timeout=config.timeout,
                extra_headers=headers,
                supports_prefill=p.prefill,
            )
        elif p.kind == "anthropic":
            provider = Anthropic(
                name=p.name,
                base_url=p.base_url,
                api_key=key,
                timeout=config.timeout,
                extra_headers=headers,
                max_tokens=p.max_tokens if p.max_tokens is not None else 4096,
            )
        elif p.kind == "gemini":
            provider = Gemini(
                name=p.name,
                base_url=p.base_url,
                api_key=key,
                project=p.project,
                location=p.location or "us-central1",
                timeout=config.timeout,
                extra_headers=headers,
                max_output_tokens=p.max_tokens,
            )
        elif p.kind == "openai_responses":
            provider = OpenAIResponses(
                name=p.name,
                base_url=p.base_url,
                api_key=key,
                timeout=config.timeout,
                extra_headers=headers,
                max_output_tokens=p.max_tokens,
            )
        else:
            provider = AzureOpenAI(
                name=p.name,
                base_url=p.base_url,
                api_key=key,
                api_version=p.api_version,
                timeout=config.timeout,
                extra_headers=headers,
            )
        built.append((p.name, provider))
    return built


def build_reliable(config: Config, providers: list[tuple[str, Provider]]) -> ReliableProvider:
    """The ``ReliableProvider`` the configuration describes.

    With ``[health] redis_url`` its health store is a ``RedisHealth``, which
    the caller opens with :func:`enter_health` before the first request.

    Raises:
        ConfigError: ``redis_url`` is set but coredis (the ``redis`` extra)
            is not installed.
    """
    from reliant import HealthStore, ReliableProvider

    health: HealthPolicy | HealthStore | None = config.health
    if config.health is not None and config.health_redis is not None:
        try:
            from reliant._redis_health import RedisHealth
        except ImportError:
            raise ConfigError(
                "health.redis_url needs the redis extra: pip install 'reliant[redis]'"
            ) from None
        redis = config.health_redis
        health = RedisHealth(redis.url, config.health, prefix=redis.prefix, name=redis.name)
    return ReliableProvider(
        providers,
        max_retries=config.max_retries,
        base_backoff=config.base_backoff,
        model_fallbacks=config.model_fallbacks,
        model_aliases=config.model_aliases,
        first_chunk_timeout=config.first_chunk_timeout,
        idle_timeout=config.idle_timeout,
        stream_fallback_to_non_streaming=config.stream_fallback_to_non_streaming,
        health=health,
        hedge=config.hedge,
        mid_stream=config.mid_stream,
        max_stream_recoveries=config.max_stream_recoveries,
        fallback_on_content_filter=config.fallback_on_content_filter,
        routing=config.routing,
        rate_limits=config.rate_limits or None,
    )


async def enter_health(reliable: ReliableProvider, stack: AsyncExitStack) -> None:
    """Open ``reliable``'s health store in ``stack`` when it owns connections (Redis)."""
    store = reliable.health_store
    if isinstance(store, AbstractAsyncContextManager):
        await stack.enter_async_context(store)
