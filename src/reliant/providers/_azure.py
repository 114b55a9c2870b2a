"""Azure OpenAI: OpenAI's chat wire with Azure's URLs, key header and quirks.

Not a wire module of its own (STYLE.md §5): :class:`AzureOpenAI` configures
:class:`~reliant.providers.OpenAICompatible`, whose parser reads Azure's
answers as they are (the ``prompt_filter_results`` chunk with empty
``choices`` is skipped like any usage-less chunk). What differs:

- URLs: the v1 API, ``{base_url}/openai/v1/chat/completions`` with the
  deployment as ``model`` (``api_version=None``, the default), or the older
  deployment URLs ``{base_url}/openai/deployments/{deployment}/chat/completions?api-version=...``
  (``api_version="2024-10-21"``), where the ``model`` of each call names the
  deployment;
- the key travels in an ``api-key`` header (no ``Authorization``);
- the content filter: a prompt refused with a 400 whose ``error.code`` is
  ``content_filter`` (``innererror.content_filter_result`` says which
  category) is a :class:`~reliant.ContentFilterError`, and
  ``finish_reason: "content_filter"`` ends an answer the filter cut (before
  any text: a ``ContentFilterError`` too), as the OpenAI wire already reads;
- ``stream_options``: deployments on older API versions refuse it
  ("Unrecognized request argument supplied: stream_options"). With
  ``stream_options=None`` (the default) a stream refused that way, before
  anything was delivered, is sent once more without it, and this provider
  stops sending it; usage then stays unknown for those streams.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any
from urllib.parse import quote, urlencode

import httpx2

from .._exceptions import ProviderError
from ._http import DEFAULT_TIMEOUT, TimeoutArg
from ._limits import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_TOOL_ARGUMENTS_BYTES,
    DEFAULT_REQUEST_TIMEOUT,
)
from ._openai import OpenAICompatible

__all__ = ["AzureOpenAI"]


def _rejects_stream_options(exc: ProviderError) -> bool:
    return exc.status_code == 400 and "stream_options" in (exc.body or str(exc))


class AzureOpenAI(OpenAICompatible):
    """A provider for Azure OpenAI (and Azure AI Foundry) chat deployments.

    Args:
        name: Provider name used in errors and failure trails.
        base_url: The resource endpoint, ``https://{resource}.openai.azure.com``.
        api_key: The resource key, sent as ``api-key``; None reads
            ``AZURE_OPENAI_API_KEY`` now.
        api_version: None: the v1 API (``/openai/v1/``, the deployment as
            ``model``). A version such as ``"2024-10-21"``: the deployment URLs
            with ``?api-version=``, the call's ``model`` naming the deployment.
        stream_options: None: send ``stream_options.include_usage`` and drop it
            for good when a deployment refuses it; True: always send it;
            False: never (usage of streams stays unknown).
        client: A shared ``httpx2.AsyncClient`` (the caller closes it); None
            makes the provider create one on first use and own it.
        timeout: Seconds (every phase) or an ``httpx2.Timeout`` (default
            ``DEFAULT_TIMEOUT``); None defers to the client's configuration.
        extra_headers: Headers added to every request.
        native_tools: The deployment supports ``tools``.
        vision: The model accepts images (reported by ``supports_vision``).
        max_response_bytes: Largest response body after decompression (32 MiB).
        max_event_bytes: Largest SSE line or event (4 MiB).
        max_tool_arguments_bytes: Largest arguments of one streamed tool call (4 MiB).
        request_timeout: Seconds a whole non-streaming call may take (600).

    Raises:
        ValueError: ``base_url`` is not an http(s) URL, or a cap is not positive.
        TypeError: A cap or timeout of the wrong type.
    """

    def __init__(
        self,
        *,
        name: str = "azure_openai",
        base_url: str,
        api_key: str | None = None,
        api_version: str | None = None,
        stream_options: bool | None = None,
        client: httpx2.AsyncClient | None = None,
        timeout: TimeoutArg = DEFAULT_TIMEOUT,
        extra_headers: Mapping[str, str] | None = None,
        native_tools: bool = True,
        vision: bool = False,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_tool_arguments_bytes: int = DEFAULT_MAX_TOOL_ARGUMENTS_BYTES,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get("AZURE_OPENAI_API_KEY")
        if api_version is not None and (not isinstance(api_version, str) or not api_version):
            raise ValueError(f"api_version must be a non-empty string or None, got {api_version!r}")
        super().__init__(
            name=name,
            base_url=base_url,
            api_key=api_key,
            client=client,
            timeout=timeout,
            native_tools=native_tools,
            vision=vision,
            max_response_bytes=max_response_bytes,
            max_event_bytes=max_event_bytes,
            max_tool_arguments_bytes=max_tool_arguments_bytes,
            request_timeout=request_timeout,
        )
        root = self._base_url
        if root.endswith("/openai/v1"):  # given the v1 base URL itself
            root = root[: -len("/openai/v1")]
        self._root = root
        self._api_version = api_version
        self._query = "?" + urlencode({"api-version": api_version}) if api_version else ""
        self._url = f"{root}/openai/v1/chat/completions"
        self._stream_options = stream_options
        headers = {"content-type": "application/json"}
        if self._api_key:
            headers["api-key"] = self._api_key
        headers.update(extra_headers or {})
        self._headers = headers

    @property
    def api_version(self) -> str | None:
        """The ``api-version`` of the deployment URLs; None for the v1 API."""
        return self._api_version

    def _chat_url(self, model: str) -> str:
        if self._api_version is None:
            return self._url
        deployment = quote(model, safe="")
        return f"{self._root}/openai/deployments/{deployment}/chat/completions{self._query}"

    def _payload(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        payload = super()._payload(*args, **kwargs)
        if self._stream_options is False:
            payload.pop("stream_options", None)
        return payload

    async def warmup(self) -> None:
        """Open a pooled connection (``GET`` the model list); never raises."""
        if self._api_version is None:
            await self._warmup_get(f"{self._root}/openai/v1/models")
        else:
            await self._warmup_get(f"{self._root}/openai/models{self._query}")

    async def _stream(
        self, payload: dict[str, Any], events: bool, count_tokens: bool
    ) -> AsyncGenerator[Any, None]:
        delivered = False
        try:
            async with aclosing(super()._stream(payload, events, count_tokens)) as items:
                async for item in items:
                    delivered = True
                    yield item
            return
        except ProviderError as exc:
            if (
                delivered
                or self._stream_options is not None
                or "stream_options" not in payload
                or not _rejects_stream_options(exc)
            ):
                raise
        # This deployment refuses stream_options: never send it again.
        self._stream_options = False
        payload = {k: v for k, v in payload.items() if k != "stream_options"}
        async with aclosing(super()._stream(payload, events, count_tokens)) as items:
            async for item in items:
                yield item
