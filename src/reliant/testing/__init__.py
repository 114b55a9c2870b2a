"""Test tools for reliant users: a scripted provider and a fault-injecting fake LLM server.

``ScriptedProvider`` makes failover tests run in milliseconds under pytest-trio's
``autojump_clock``; the fake server speaks the OpenAI and Anthropic wire
protocols on loopback and injects the failures real APIs produce.
"""

from __future__ import annotations

# The protocols beyond OpenAI's and Anthropic's register their routes with the
# fake server when imported.
from . import _fake_azure as _fake_azure
from . import _fake_bedrock as _fake_bedrock
from . import _fake_gemini as _fake_gemini
from . import _fake_responses as _fake_responses
from ._fake_deployments import Deployment as Deployment
from ._fake_deployments import DeploymentStats as DeploymentStats
from ._fake_server import Behavior as Behavior
from ._fake_server import BehaviorKind as BehaviorKind
from ._fake_server import Disconnect as Disconnect
from ._fake_server import FakeLLMServer as FakeLLMServer
from ._fake_server import FakeRequest as FakeRequest
from ._fake_server import serve_fake_llm as serve_fake_llm
from ._jitter import NoJitter as NoJitter
from ._scripted import Empty as Empty
from ._scripted import Fail as Fail
from ._scripted import Hang as Hang
from ._scripted import Outcome as Outcome
from ._scripted import Reply as Reply
from ._scripted import Script as Script
from ._scripted import ScriptedCall as ScriptedCall
from ._scripted import ScriptedProvider as ScriptedProvider
from ._scripted import Stream as Stream

__all__ = [
    "Behavior",
    "BehaviorKind",
    "Deployment",
    "DeploymentStats",
    "Disconnect",
    "Empty",
    "Fail",
    "FakeLLMServer",
    "FakeRequest",
    "Hang",
    "NoJitter",
    "Outcome",
    "Reply",
    "Script",
    "ScriptedCall",
    "ScriptedProvider",
    "Stream",
    "serve_fake_llm",
]
