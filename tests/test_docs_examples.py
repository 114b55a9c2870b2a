"""Every Python example of README.md and docs/ runs, every script of examples/ runs.

The rules a page follows (docs/contributing is this docstring):

- Each ```` ```python ```` block of a page is executed, in order, in one
  namespace per page (so a later block may use what an earlier one defined),
  as ``__main__``. A block's own ``trio.run(main)`` runs it.
- A block that defines ``async def test_*`` functions (pytest style) has them
  run too, each in a fresh ``trio.run``; one that takes ``autojump_clock``
  gets a ``trio.testing.MockClock(autojump_threshold=0)``, as pytest-trio gives.
- ``OpenAICompatible`` and ``Anthropic`` built without a ``base_url`` are
  pointed at a fake LLM server on loopback (only their ``base_url`` and
  ``api_key`` change), so an example written for the real APIs runs here
  with no keys and no network.
- A block preceded by ``<!-- test: skip REASON -->`` is only compiled, and
  the names it imports from reliant must exist.
- A block that is only ``--8<-- "examples/X.py"`` (an included example) is
  covered by running ``examples/X.py`` itself.

The literal blocks of the docstrings the API reference shows compile, and the
pytest-style ones among them run; docs/reference/ names exactly the public
surface that test_public_api.py lists.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

_BLOCK = re.compile(
    r"(?:<!--\s*test:\s*(?P<mark>[^\n]*?)\s*-->\s*\n)?^```python[^\n]*\n(?P<code>.*?)^```",
    re.DOTALL | re.MULTILINE,
)
_INCLUDE = re.compile(r'^--8<--\s+"(?P<path>[^"]+)"\s*$')


def python_blocks(page: Path) -> list[tuple[int, str | None, str]]:
    """``(line, mark, code)`` of every ```` ```python ```` block of ``page``."""
    text = page.read_text()
    blocks = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("code")) + 1
        blocks.append((line, m.group("mark"), m.group("code")))
    return blocks


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.fixture(scope="module")
def fake_server_url() -> Iterator[str]:
    """A fake LLM server in its own process, answering ``ok`` to ordinary model names."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "reliant.testing.fake_server", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()  # "openai:    http://HOST:PORT/v1"
        url = first.removeprefix("openai:").strip().removesuffix("/v1")
        assert url.startswith("http://"), first
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def providers_on_fake_server(fake_server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``reliant.providers.OpenAICompatible``/``Anthropic`` talk to the fake server."""
    import reliant.providers as providers

    real_openai = providers.OpenAICompatible
    real_anthropic = providers.Anthropic

    class OpenAICompatible(real_openai):  # type: ignore[valid-type,misc]
        def __init__(self, **kwargs: Any) -> None:
            if "base_url" not in kwargs:
                kwargs.update(base_url=fake_server_url + "/v1", api_key="test-key")
            super().__init__(**kwargs)

    class Anthropic(real_anthropic):  # type: ignore[valid-type,misc]
        def __init__(self, **kwargs: Any) -> None:
            if "base_url" not in kwargs:
                kwargs.update(base_url=fake_server_url, api_key="test-key")
            super().__init__(**kwargs)

    monkeypatch.setattr(providers, "OpenAICompatible", OpenAICompatible)
    monkeypatch.setattr(providers, "Anthropic", Anthropic)


def _check_imports(code: str, where: str) -> None:
    """Every ``from reliant... import X`` of ``code`` names something that exists."""
    for node in ast.walk(ast.parse(code, where)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reliant"):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module}.{alias.name}"


def _run_tests_defined(namespace: dict[str, Any], before: set[str], where: str) -> None:
    for name, fn in list(namespace.items()):
        if name in before or not name.startswith("test_"):
            continue
        if not inspect.iscoroutinefunction(fn):
            continue
        params = inspect.signature(fn).parameters
        if "autojump_clock" in params:
            clock = trio.testing.MockClock(autojump_threshold=0)
            trio.run(lambda fn=fn, clock=clock: fn(autojump_clock=clock), clock=clock)
        else:
            assert not params, f"{where}: {name} takes fixtures this runner does not know"
            trio.run(fn)


def run_page(page: Path) -> int:
    """Run every block of ``page``; the number of blocks executed."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    executed = 0
    for line, mark, code in python_blocks(page):
        where = f"{_rel(page)}:{line}"
        include = _INCLUDE.match(code.strip())
        if include is not None:
            target = ROOT / include.group("path")
            assert target in EXAMPLES, f"{where}: includes {target}, which is not run as an example"
            continue
        compiled = compile(code, where, "exec")
        _check_imports(code, where)
        if mark is not None:
            assert re.match(r"skip\s+\S", mark), f"{where}: unknown mark {mark!r}"
            continue
        before = set(namespace)
        try:
            exec(compiled, namespace)
            _run_tests_defined(namespace, before, where)
        except BaseException as exc:
            raise AssertionError(f"the example at {where} failed: {exc!r}") from exc
        executed += 1
    return executed


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_page_examples_run(
    page: Path, providers_on_fake_server: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every Python block of the page runs (or, marked skip with a reason, compiles)."""
    run_page(page)


def test_every_page_with_code_is_covered() -> None:
    """The runner sees the blocks: the guides hold runnable examples, README its quick one."""
    counts = {_rel(p): len(python_blocks(p)) for p in PAGES}
    assert counts["README.md"] >= 1
    assert counts["docs/getting-started.md"] >= 2
    assert sum(counts.values()) >= 20


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_script_runs(script: Path, request: pytest.FixtureRequest) -> None:
    """Each examples/*.py runs to completion as a program (Redis ones on a test redis-server)."""
    env = dict(os.environ)
    source = script.read_text()
    if "RedisHealth" in source:
        server = request.getfixturevalue("redis_server")
        # A database of its own: the example's default prefix must not meet other tests' keys.
        env["REDIS_URL"] = server.url.rsplit("/", 1)[0] + "/3"
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    if script.name == "quickstart.py":
        assert "served by backup" in out.stdout
    if script.name == "shared_health.py":
        assert out.stdout.splitlines()[-2:] == ["calls to primary: 3 and 0", "open"]


def _documented_names() -> dict[str, set[str]]:
    """``{module: names}`` of every ``::: module.name`` entry of docs/reference/."""
    found: dict[str, set[str]] = {}
    for page in sorted((DOCS / "reference").glob("*.md")):
        for path in re.findall(r"^::: ([\w.]+)\s*$", page.read_text(), re.MULTILINE):
            module, _, name = path.rpartition(".")
            assert name not in found.get(module, set()), f"{path} documented twice"
            found.setdefault(module, set()).add(name)
    return found


def test_api_reference_lists_exactly_the_public_surface() -> None:
    """docs/reference/ has one entry per public name, and no other (test_public_api's lists)."""
    from test_public_api import PUBLIC_MODULES

    assert _documented_names() == PUBLIC_MODULES


def test_every_reference_page_is_in_the_navigation() -> None:
    """Each reference page and guide is reachable from the site's navigation."""
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in sorted(DOCS.rglob("*.md")):
        assert str(page.relative_to(DOCS)) in nav, page


def _docstring_examples() -> list[tuple[str, str]]:
    """``(where, code)`` of each literal block (after ``::``) of the docstrings shown."""
    from test_public_api import PUBLIC_MODULES

    seen: set[int] = set()
    found: list[tuple[str, str]] = []

    def collect(obj: object, where: str) -> None:
        doc = inspect.getdoc(obj)
        if doc is None or id(obj) in seen:
            return
        seen.add(id(obj))
        for m in re.finditer(r"::\n\n((?:[ ]{4}.*\n|\n)+)", doc + "\n"):
            found.append((where, textwrap.dedent(m.group(1))))

    for module_name, names in PUBLIC_MODULES.items():
        module = importlib.import_module(module_name)
        for name in sorted(names):
            obj = getattr(module, name)
            collect(obj, f"{module_name}.{name}")
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if attr.startswith("_") and attr != "__init__":
                        continue
                    member = value.fget if isinstance(value, property) else value
                    if callable(member):
                        collect(member, f"{module_name}.{name}.{attr}")
    return found


def test_docstring_examples_compile_and_tests_in_them_run() -> None:
    """Each example in a documented docstring compiles; the pytest-style ones run."""
    import reliant
    import reliant.testing

    examples = _docstring_examples()
    assert any("ScriptedProvider" in where for where, _ in examples)
    for where, code in examples:
        # Fragments such as `async with RedisHealth(...) as health: ...` are shown as
        # they would appear inside an async function.
        compiled = compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        _check_imports(code, where)
        if "async def test_" in code:
            namespace: dict[str, Any] = {"trio": trio}
            namespace.update({n: getattr(reliant, n) for n in reliant.__all__})
            namespace.update({n: getattr(reliant.testing, n) for n in reliant.testing.__all__})
            before = set(namespace)
            exec(compiled, namespace)
            _run_tests_defined(namespace, before, where)


def test_readme_links_into_the_docs_resolve() -> None:
    """Every relative link of the README names a file that exists (mkdocs checks docs/ itself)."""
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    relative = [link for link in links if "://" not in link]
    assert relative
    for link in relative:
        assert (ROOT / link).is_file(), link
