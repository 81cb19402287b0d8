"""The docs build without a warning and every reference resolves: autodoc
keeps them in step with the code. docs/testing.rst is a test file that
passes against the quickstart app."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from snippets import blocks
from snippets import joined
from snippets import quickstart_app


def test_docs_build_with_warnings_as_errors(tmp_path: Path) -> None:
    # -n: nitpicky, so a reference to an undocumented name is an error too.
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-n", "-W", "-q", "-b", "html",
         str(ROOT / "docs"), str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "api.html").exists()


def test_every_setting_is_documented_with_its_default() -> None:
    from flask_eventstream.settings import DEFAULTS

    text = (ROOT / "docs" / "configuration.rst").read_text()
    entries = dict(
        re.findall(r"^\.\. data:: (\w+)\n\n(.*?)(?=^\.\. |\Z)", text, re.M | re.S)
    )
    assert set(entries) == set(DEFAULTS)
    for key, default in DEFAULTS.items():
        shown = f'``"{default}"``' if isinstance(default, str) else f"``{default}``"
        if isinstance(default, float) and default.is_integer():
            shown = f"``{int(default)}``"
        assert f"Default {shown}" in " ".join(entries[key].split()), key


@pytest.mark.parametrize("source", ["README.md", "docs/quickstart.rst"])
def test_the_testing_page_passes_against_the_quickstart_app(
    source: str, tmp_path: Path
) -> None:
    # As the page says: the quickstart app as app.py, the page's snippets
    # together as test_app.py beside it, then pytest.
    (tmp_path / "app.py").write_text(quickstart_app(source))
    page = joined("docs/testing.rst")
    (tmp_path / "test_app.py").write_text(page)
    tests = len(re.findall(r"^def test_", page, re.M))
    # A plain pytest run, not one of this suite's (xdist's variables, its
    # plugins).
    env = {
        k: v for k, v in os.environ.items()
        if "EVENTSTREAM" not in k and not k.startswith("PYTEST")
    }  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
         "-p", "no:benchmark", "-q", "-W", "error", "test_app.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert tests >= 4 and f"{tests} passed" in result.stdout, result.stdout


def test_the_quickstart_test_is_the_testing_pages() -> None:
    # The quickstart shows one test of that file: the same, so it runs too.
    shown = [block.strip() for block in blocks("docs/quickstart.rst")[2:]]
    assert shown
    for block in shown:
        assert block in [block.strip() for block in blocks("docs/testing.rst")]
