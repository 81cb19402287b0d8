"""Clean virtualenvs for the release tests: what a user gets from ``pip
install`` with only the extras the docs name, on this Python or another.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path


def clean_venv(path: Path, *requirements: str, base: str | None = None) -> Path:
    """A new virtualenv at ``path`` with only ``requirements``; its python.

    :param base: the interpreter that makes it; default: this one.
    """
    if base is None:
        venv.create(path, with_pip=True)
    else:
        subprocess.run([base, "-m", "venv", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         *requirements],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    return python


def interpreter(version: str) -> str:
    """The machine's Python ``version``: pyenv's (as on this project's CI),
    else one on ``PATH``.
    """
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for found in sorted(root.glob(f"versions/{version}.*/bin/python{version}")):
        return str(found)
    found = shutil.which(f"python{version}")
    if found and "shims" not in found:
        return found
    raise AssertionError(f"python{version} is missing: the compatibility runs need it")
