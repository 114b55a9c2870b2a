"""The fake server's Azure OpenAI protocol: OpenAI's chat wire with Azure's quirks.

Routes: the v1 API ``POST /openai/v1/chat/completions`` (model in the body)
and the deployment URLs ``POST /openai/deployments/{deployment}/chat/completions?api-version=...``
(the deployment, and so the behaviour, from the path when the body names no model).
Differences from :class:`~reliant.testing._fake_server._OpenAI`:

- the content filter refuses a prompt with Azure's 400: ``code:
  "content_filter"``, ``innererror.code: "ResponsibleAIPolicyViolation"`` and
  ``innererror.content_filter_result`` per category;
- a stream starts with Azure's ``prompt_filter_results`` chunk (empty ``choices``);
- ``reject_stream_options``: the deployment refuses a request carrying
  ``stream_options`` with the 400 older API versions send
  ("Unrecognized request argument supplied: stream_options") and answers
  normally without it;
- deployment URLs without ``api-version`` get Azure's 404 ``Resource not found``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote

from ._fake_server import Route, _dumps, _OpenAI, _Piece, register_protocol

__all__ = ["AzureProtocol", "azure_model_from_path", "is_azure_path"]

_FILTER_RESULT = {
    "hate": {"filtered": True, "severity": "high"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}


def is_azure_path(path: str) -> bool:
    """Whether ``path`` (without its query) is an Azure OpenAI chat route."""
    return path == "/openai/v1/chat/completions" or (
        path.startswith("/openai/deployments/") and path.endswith("/chat/completions")
    )


def azure_model_from_path(target: str) -> str | None:
    """The deployment of a deployment URL, or None."""
    path = target.split("?", 1)[0]
    if not (path.startswith("/openai/deployments/") and path.endswith("/chat/completions")):
        return None
    return unquote(path[len("/openai/deployments/") : -len("/chat/completions")]) or None


class AzureProtocol(_OpenAI):
    """Rendering of Azure OpenAI's chat completions."""

    def rejection(self) -> tuple[int, dict[str, Any]] | None:
        path, _, query = self.request.path.partition("?")
        if path.startswith("/openai/deployments/") and "api-version" not in parse_qs(query):
            return 404, {"error": {"code": "404", "message": "Resource not found"}}
        if self.behavior.reject_stream_options and "stream_options" in self.body:
            return 400, {
                "error": {
                    "message": "Unrecognized request argument supplied: stream_options",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            }
        return super().rejection()

    def content_filter_error(self) -> dict[str, Any]:
        return {
            "error": {
                "message": (
                    "The response was filtered due to the prompt triggering Azure OpenAI's "
                    "content management policy. Please modify your prompt and retry. To learn "
                    "more about our content filtering policies please read our documentation: "
                    "https://go.microsoft.com/fwlink/?linkid=2198766"
                ),
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": _FILTER_RESULT,
                },
            }
        }

    def sse_pieces(self) -> list[_Piece]:
        pieces = super().sse_pieces()
        prompt_filter = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [
                {
                    "prompt_index": 0,
                    "content_filter_results": {
                        k: {"filtered": False, "severity": "safe"} for k in _FILTER_RESULT
                    },
                }
            ],
        }
        return [_Piece(b"data: " + _dumps(prompt_filter) + b"\n\n", False), *pieces]


register_protocol(Route(is_azure_path, AzureProtocol, azure_model_from_path, lambda path: False))
