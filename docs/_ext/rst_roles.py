"""Griffe extension: render the reST inline markup of reliant's docstrings as Markdown.

The docstrings are Google-style, but name things with Sphinx roles
(``:class:`X```) and end paragraphs before literal blocks with ``::``. Markdown
would print the role names literally; this turns a role into a code span and
``::`` into ``:`` (the indented block after it is already a Markdown code
block). Docstrings in the source stay as they are.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|exc|data|mod|obj|const):`~?\.?([^`]+)`")
_LITERAL = re.compile(r"(\S)::$|\s::$", re.MULTILINE)


def _markdown(text: str) -> str:
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    return _LITERAL.sub(lambda m: f"{m.group(1)}:" if m.group(1) else "", text)


class RstRoles(griffe.Extension):
    """Rewrite each docstring once, when griffe has loaded its object."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _markdown(obj.docstring.value)
