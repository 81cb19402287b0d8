"""The shape of the package: what the import-linter contracts (run by
scripts/test) do not check.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flask_eventstream"
MODULES = sorted(PACKAGE.rglob("*.py"))

#: Private names of other libraries' objects the package uses on purpose.
ALLOWED = {
    "current_app._get_current_object",  # werkzeug's LocalProxy, documented
    "response.sock._sock",  # gevent's C socket (http/direct.py says why)
}


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_module_reaches_into_another_s_private_names(path: Path) -> None:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            found += [
                f"import {alias.name}"
                for alias in node.names
                if alias.name.startswith("_") and not alias.name.startswith("__")
            ]
        elif isinstance(node, ast.Attribute):
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if private and not own and ast.unparse(node) not in ALLOWED:
                found.append(ast.unparse(node))
    assert not found, f"{_name(path)} uses private names of others: {found}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_each_module_says_what_it_owns(path: Path) -> None:
    # No line cap: a module owns one concept, whatever its length.
    source = path.read_text()
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring, f"{_name(path)} has no docstring saying what it owns"
