"""Leaf providers over HTTP: OpenAI-compatible endpoints, Anthropic, Gemini,
the OpenAI Responses API and Azure OpenAI.

Importing this package is cheap: the provider modules (and httpx2) load on
first attribute access.

- :class:`OpenAICompatible` — any ``/chat/completions`` endpoint (OpenAI,
  Groq, Together, vLLM, Ollama, ...), streaming over SSE.
- :class:`Anthropic` — the Messages API, streaming over SSE.
- :class:`Bedrock` — Amazon Bedrock's Converse API, streaming over AWS
  event-stream frames; SigV4 through botocore (the ``bedrock`` extra) or a
  Bedrock API key.
- :class:`Gemini` — Google's Gemini API (AI Studio) or Vertex AI.
- :class:`OpenAIResponses` — OpenAI's ``/v1/responses``.
- :class:`AzureOpenAI` — Azure OpenAI deployments (v1 API or ``api-version`` URLs).
- :func:`create_client` — an ``httpx2.AsyncClient`` set up for LLM traffic,
  to share between providers; ``DEFAULT_TIMEOUT`` and ``DEFAULT_LIMITS`` are
  its defaults.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._anthropic import Anthropic as Anthropic
    from ._azure import AzureOpenAI as AzureOpenAI
    from ._bedrock import Bedrock as Bedrock
    from ._gemini import Gemini as Gemini
    from ._http import DEFAULT_LIMITS as DEFAULT_LIMITS
    from ._http import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
    from ._http import create_client as create_client
    from ._http import parse_retry_after as parse_retry_after
    from ._openai import OpenAICompatible as OpenAICompatible
    from ._openai_responses import OpenAIResponses as OpenAIResponses

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "Anthropic",
    "Bedrock",
    "AzureOpenAI",
    "Gemini",
    "OpenAICompatible",
    "OpenAIResponses",
    "create_client",
    "parse_retry_after",
]

_LAZY = {
    "Anthropic": "._anthropic",
    "Bedrock": "._bedrock",
    "AzureOpenAI": "._azure",
    "Gemini": "._gemini",
    "OpenAICompatible": "._openai",
    "OpenAIResponses": "._openai_responses",
    "DEFAULT_LIMITS": "._http",
    "DEFAULT_TIMEOUT": "._http",
    "create_client": "._http",
    "parse_retry_after": "._http",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
