"""What a user installs: the extras the docs name are enough, in a clean
virtualenv; the package builds without a warning and ships its licence
(the oldest and newest Pythons it claims: test_compat.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import typing as t
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT
from conftest import Server
from test_quickstart import check_quickstart
from test_quickstart import readme_blocks
from venvs import clean_venv

#: More than ten seconds a test: not in the fast core (-m 'not slow').
pytestmark = pytest.mark.slow


class Built(t.NamedTuple):
    """The sdist and wheel ``python -m build`` made, and what it printed."""

    sdist: Path
    wheel: Path
    output: str


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The package built once for the module: the venvs install the wheel, as
    a user does from an index, instead of each building it again.
    """
    outdir = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(outdir), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (sdist,) = outdir.glob("*.tar.gz")
    (wheel,) = outdir.glob("*.whl")
    return Built(sdist, wheel, done.stdout + done.stderr)


@pytest.mark.timeout(600)
def test_the_gevent_extra_alone_runs_the_readme(tmp_path: Path, built: Built) -> None:
    python = clean_venv(tmp_path / "venv", f"{built.wheel}[gevent]")
    (tmp_path / "app.py").write_text(readme_blocks()[0])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check_quickstart([str(python.parent / "gunicorn")], tmp_path, env)


def test_the_package_builds_without_warnings_and_ships_its_licence(
    built: Built,
) -> None:
    lines = [line for line in built.output.splitlines() if "warn" in line.lower()]
    # Byte-compiling is switched off by the build tool itself, not a problem.
    assert [line for line in lines if "byte-compiling" not in line] == []
    sdist, wheel = built.sdist, built.wheel
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    assert any(name.endswith("/LICENSE") for name in names)
    assert not any("/tests/" in name for name in names)  # none shipped broken
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(name.endswith("licenses/LICENSE") for name in names)
    assert "flask_eventstream/static/eventstream.js" in names
    assert "flask_eventstream/static/eventstream.d.ts" in names
    assert "flask_eventstream/static/eventstream.d.mts" in names
    assert "flask_eventstream/py.typed" in names
    (info,) = [name for name in names if name.endswith(".dist-info/METADATA")]
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(info).decode()
    urls = [line for line in metadata.splitlines() if line.startswith("Project-URL")]
    assert [url.split(":")[1].split(",")[0].strip() for url in urls] == [
        "Documentation", "Changes", "Source", "Issue Tracker",
    ]  # fmt: skip
    assert "\nAuthor: The flask-eventstream developers\n" in metadata
    # The package page: how to install and use it, not the repository's
    # scripts and paths (PYPI.md).
    page = metadata.split("\n\n", 1)[1]
    assert "pip install 'flask-eventstream[gevent]'" in page
    assert "scripts/" not in page and "tests/" not in page
    # The SPDX name, not a licence classifier (deprecated by PEP 639, warned of).
    assert re.search(r"^License(-Expression)?: BSD-3-Clause$", metadata, re.M)
    assert "Classifier: Programming Language :: Python :: 3.13" in metadata


@pytest.mark.parametrize("page", ["README.md", "PYPI.md"])
def test_the_pages_link_the_docs_and_render_on_an_index(page: str) -> None:
    text = (ROOT / page).read_text()
    assert "](https://flask-eventstream.readthedocs.io/)" in text
    # A package index has no repository around the page: every link is absolute.
    targets = re.findall(r"\]\(([^)]+)\)", text)
    assert targets and all(target.startswith("https://") for target in targets)


def test_the_package_page_s_app_is_the_readme_s() -> None:
    # So the README's run in a clean venv (above) holds for the page too.
    page = re.findall(r"```python\n(.*?)```", (ROOT / "PYPI.md").read_text(), re.S)
    assert page[0] == readme_blocks()[0]


USES_THE_TYPES = """
import { EventStreamClient } from "./static/eventstream.mjs";
const getToken = async () => "t";
const source = new EventStreamClient("/events/x", {shared: true, getToken});
source.addEventListener("tick", (e) => console.log(e.data.length, e.lastEventId));
source.onerror = (e) => console.log(e.status, e.message);
const state: 0 | 1 | 2 = source.readyState;
source.close();
// @ts-expect-error: not a transport
new EventStreamClient("/x", {transport: "websocket"});
"""


@pytest.mark.timeout(300)
def test_the_browser_client_s_types_check_with_typescript(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    assert npm, "npm is missing: the TypeScript check needs Node.js and npm"
    subprocess.run(
        [npm, "install", "--silent", "--prefix", str(tmp_path), "typescript@5"],
        check=True, timeout=240, capture_output=True,
    )  # fmt: skip
    shutil.copytree(ROOT / "flask_eventstream" / "static", tmp_path / "static")
    (tmp_path / "use.ts").write_text(USES_THE_TYPES)
    done = subprocess.run(
        [str(tmp_path / "node_modules" / ".bin" / "tsc"), "--noEmit", "--strict",
         "--target", "es2020", "--module", "nodenext", "--moduleResolution",
         "nodenext", "--lib", "es2020,dom", "use.ts"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


READ_TWO = """
import sys
from flask_eventstream.client import EventSource

with EventSource(sys.argv[1], last_event_id=sys.argv[2], timeout=10) as source:
    events = iter(source)
    print(next(events).id, next(events).id)
"""


@pytest.mark.timeout(600)
def test_the_client_extra_alone_reads_a_stream(tmp_path: Path, built: Built) -> None:
    python = clean_venv(tmp_path / "venv", f"{built.wheel}[client]")
    server = Server("gevent").start()
    try:
        first, *ids = server.publish("venv-client", "{n}", count=3)
        done = subprocess.run(
            [str(python), "-c", READ_TWO, f"{server.url}/stream/venv-client", first],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ids
