"""The docs build without a warning and every reference resolves: autodoc
keeps them in step with the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


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
