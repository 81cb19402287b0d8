"""The Python snippets of README.md, PYPI.md and docs/*.rst, and which of
them are whole programs.

A snippet is a whole program when it imports from ``flask_eventstream`` and
uses no name it neither defines nor imports (``ruff``'s F821 finds none): it
runs as pasted, beside the quickstart app saved as ``app.py`` when it imports
from ``app``. The others continue the program their page builds (they use its
``app`` or ``events``) and are not checked alone. The snippets of
docs/testing.rst are one test file, as that page says: they are taken
together, never one by one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from conftest import ROOT

#: Pages whose snippets together make one file (the page says so).
JOINED = ("docs/testing.rst",)

_IMPORTS_PACKAGE = re.compile(r"^(?:from|import) flask_eventstream\b", re.M)


def blocks(page: str) -> list[str]:
    """The Python blocks of ``page`` (a path from the repository's root), in
    order: ```` ```python ```` fences of Markdown, ``.. code-block:: python``
    directives of reStructuredText.
    """
    text = (ROOT / page).read_text()
    if page.endswith(".md"):
        return re.findall(r"```python\n(.*?)```", text, re.S)
    found = re.findall(r"\.\. code-block:: python\n\n((?:(?:    .*)?\n)+)", text)
    return [textwrap.dedent(block) for block in found]


def pages() -> list[str]:
    """README.md, PYPI.md and every page of docs/ with a Python block."""
    docs = sorted(path.relative_to(ROOT) for path in (ROOT / "docs").glob("*.rst"))
    return [page for page in ["README.md", "PYPI.md", *map(str, docs)] if blocks(page)]


def quickstart_app(source: str = "docs/quickstart.rst") -> str:
    """The quickstart's ``app.py``: the first Python block of ``source``."""
    return blocks(source)[0]


def joined(page: str) -> str:
    """The Python blocks of ``page`` as one file."""
    return "\n\n".join(block.strip() + "\n" for block in blocks(page))


def programs() -> dict[str, str]:
    """Every whole program of the docs by name (``page#n``, the n-th block
    from 1; a joined page by its path).
    """
    candidates: dict[str, str] = {}
    for page in pages():
        if page in JOINED:
            continue
        for n, block in enumerate(blocks(page), 1):
            if _IMPORTS_PACKAGE.search(block):
                candidates[f"{page}#{n}"] = block
    files = {}
    with tempfile.TemporaryDirectory() as workdir:
        for i, (name, block) in enumerate(candidates.items()):
            files[name] = Path(workdir, f"block{i}.py")
            files[name].write_text(block)
        lint = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--isolated", "--select",
             "F821", "--target-version", "py310", "--output-format", "json",
             workdir],
            capture_output=True, text=True,
        )  # fmt: skip
    undefined = {Path(found["filename"]).name for found in json.loads(lint.stdout)}
    found = {
        name: candidates[name]
        for name, path in files.items()
        if path.name not in undefined
    }
    found.update({page: joined(page) for page in JOINED})
    return found
