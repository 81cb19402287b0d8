"""The shape of the package: what the import-linter contracts (run by
scripts/test) do not check.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "flask_eventstream"
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


API_PAGE = PACKAGE.parent / "docs" / "api.rst"

#: The modules a user may import: the public line, also drawn in the package
#: docstring and at the top of the API page.
PUBLIC_MODULES = {
    "flask_eventstream",
    "flask_eventstream.signals",
    "flask_eventstream.testing",
    "flask_eventstream.client",
    "flask_eventstream.metrics",
    "flask_eventstream.gunicorn",
}


def _api_page() -> tuple[set[str], set[str]]:
    """The names the API page documents in ``flask_eventstream`` itself, and
    the modules whose members it documents.
    """
    names, modules = set(), set()
    current = ""
    directive = re.compile(r"^\.\. (\w+)::\s*(\S+?)(?:\(.*\))?\s*$", re.M)
    for kind, target in directive.findall(API_PAGE.read_text()):
        if kind in ("module", "currentmodule"):
            current = target
        elif kind == "automodule":
            modules.add(target)
            current = target
        elif kind.startswith("auto"):
            full = (
                target
                if target.startswith("flask_eventstream")
                else f"{current}.{target}"
            )
            module, _, name = full.rpartition(".")
            modules.add(module)
            if module == "flask_eventstream":
                names.add(name)
    return names, modules


def test_the_package_exports_exactly_what_the_api_page_lists() -> None:
    import flask_eventstream

    documented, _ = _api_page()
    exported = set(flask_eventstream.__all__) - {"signals"}  # a module: its own section
    assert exported == documented, (
        f"exported, not on the API page: {sorted(exported - documented)};"
        f" on the API page, not exported: {sorted(documented - exported)}"
    )
    for name in flask_eventstream.__all__:
        assert not name.startswith("_"), name
        assert hasattr(flask_eventstream, name), name


def test_the_api_page_documents_only_public_modules() -> None:
    _, modules = _api_page()
    internal = {
        m
        for m in modules
        if m not in PUBLIC_MODULES and m != "flask_eventstream.errors"
    }
    # errors: only its docstring (the exception tree), under :no-index:; the
    # classes are documented as flask_eventstream's.
    assert not internal, f"the API page documents internal modules: {internal}"
    assert modules >= PUBLIC_MODULES, PUBLIC_MODULES - modules


def test_the_public_line_is_drawn_where_a_user_looks() -> None:
    import flask_eventstream

    docstring = flask_eventstream.__doc__ or ""
    page = API_PAGE.read_text()
    for module in PUBLIC_MODULES - {"flask_eventstream"}:
        assert f":mod:`{module}`" in docstring, module
        assert f":mod:`{module}`" in page, module


def test_every_exception_a_user_can_meet_is_exported() -> None:
    import flask_eventstream
    from flask_eventstream import errors

    raised = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, Exception)
    }
    assert raised <= set(flask_eventstream.__all__), raised - set(
        flask_eventstream.__all__
    )
