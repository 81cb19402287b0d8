"""What a user installs: the extras the docs name are enough, in a clean
virtualenv; the package builds without a warning and ships its licence; the
oldest Flask and blinker it claims still run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT
from test_quickstart import check_quickstart
from test_quickstart import readme_blocks


def clean_venv(path: Path, *requirements: str) -> Path:
    """A new virtualenv at ``path`` with only ``requirements``; its python."""
    venv.create(path, with_pip=True)
    python = path / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         *requirements],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    return python


@pytest.mark.timeout(600)
def test_the_gevent_extra_alone_runs_the_readme(tmp_path: Path) -> None:
    python = clean_venv(tmp_path / "venv", f"{ROOT}[gevent]")
    (tmp_path / "app.py").write_text(readme_blocks()[0])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check_quickstart([str(python.parent / "gunicorn")], tmp_path, env)


SMOKE = """
import json
from flask import Flask
from flask_eventstream import EventStream, stream
from flask_eventstream.testing import parse

app = Flask(__name__)
events = EventStream(app)

@app.get("/s")
@stream
def s():
    return events.subscribe("a")

with app.app_context():
    first = events.publish("a", {"n": 1})
    second = events.publish("a", "two")
client = app.test_client()
answer = client.get("/s?transport=poll", headers={"Last-Event-ID": first.id}).json
assert [e["data"] for e in answer["events"]] == ["two"], answer
print("ok", first.id)
"""


@pytest.mark.timeout(600)
def test_the_oldest_flask_and_blinker_claimed_run_it(tmp_path: Path) -> None:
    python = clean_venv(
        tmp_path / "venv",
        str(ROOT),
        "flask==3.0.0",
        "werkzeug==3.0.0",
        "blinker==1.7.0",
    )
    done = subprocess.run(
        [str(python), "-c", SMOKE], capture_output=True, text=True, timeout=60,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


@pytest.mark.timeout(300)
def test_the_package_builds_without_warnings_and_ships_its_licence(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    lines = [line for line in output.splitlines() if "warn" in line.lower()]
    # Byte-compiling is switched off by the build tool itself, not a problem.
    assert [line for line in lines if "byte-compiling" not in line] == []
    (sdist,) = tmp_path.glob("*.tar.gz")
    (wheel,) = tmp_path.glob("*.whl")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    assert any(name.endswith("/LICENSE") for name in names)
    assert not any("/tests/" in name for name in names)  # none shipped broken
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(name.endswith("licenses/LICENSE") for name in names)
    assert "flask_eventstream/static/eventstream.js" in names
    assert "flask_eventstream/py.typed" in names
