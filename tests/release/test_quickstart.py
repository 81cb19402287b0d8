"""The quickstart runs as pasted: the code blocks of README.md and
docs/quickstart.rst, served by a real gunicorn gevent worker.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from clients import RawStream
from conftest import free_port
from conftest import ROOT


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def rst_blocks() -> list[str]:
    text = (ROOT / "docs" / "quickstart.rst").read_text()
    found = re.findall(r"\.\. code-block:: python\n\n((?:(?:    .*)?\n)+)", text)
    return [textwrap.dedent(block) for block in found]


SOURCES = {"README.md": readme_blocks, "docs/quickstart.rst": rst_blocks}


@pytest.mark.parametrize("source", SOURCES)
def test_every_name_the_quickstart_uses_is_imported(
    source: str, tmp_path: Path
) -> None:
    app, login = SOURCES[source]()[:2]
    assert "flask_login" in login  # Flask-Login named where current_user is
    path = tmp_path / "app.py"
    path.write_text(app + "\n" + login)
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F",
         "--target-version", "py310", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert lint.returncode == 0, lint.stdout


def check_quickstart(gunicorn: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Serve the quickstart's ``app.py`` in ``cwd`` with ``gunicorn`` (the
    command that starts it), then stream an order and a tick from it.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*gunicorn, "-k", "gevent", "--worker-connections", "10000", "-w", "1",
         "-b", f"127.0.0.1:{port}", "app:app"],
        cwd=cwd, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "gunicorn exited"
            try:
                httpx.get(url + "/nothing", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.05)
        stream = RawStream(url, "/orders/7/events")
        stream.open()
        assert httpx.post(url + "/orders/7/ship", timeout=5).status_code == 204
        (event,) = stream.events(1)
        assert (event.event, event.data) == ("order", '{"status": "shipped"}')
        stream.close()
        clock = RawStream(url, "/clock")
        clock.open()
        (tick,) = clock.events(1)
        assert tick.event == "tick"
        clock.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


@pytest.mark.parametrize("source", SOURCES)
def test_the_quickstart_app_serves_and_delivers(source: str, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(SOURCES[source]()[0])
    env = {k: v for k, v in os.environ.items() if "EVENTSTREAM" not in k}
    check_quickstart([sys.executable, "-m", "gunicorn"], tmp_path, env)
