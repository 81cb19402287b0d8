"""The README's demo works in a real browser: publish from the form, see it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import typing as t
from pathlib import Path

import httpx
import pytest
from browsers import CHROMIUM_ARGS
from conftest import free_port
from conftest import require
from conftest import ROOT
from conftest import Server
from playwright.sync_api import sync_playwright

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def demo() -> t.Iterator[Server]:
    with Server(
        "gevent",
        app="app:app",
        extra=["--chdir", str(ROOT / "examples" / "demo")],
        health="/",
    ) as srv:
        yield srv


def test_demo_page_shows_what_the_form_publishes(demo: Server) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=require("chromium"), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(demo.url + "/")
            page.wait_for_function(
                "document.getElementById('status').textContent === 'connected'"
            )
            for text in ["first note", "second note"]:
                page.fill("#text", text)
                page.click("button")
                # The page clears the field once its POST is answered: a
                # second note typed before that would be cleared with it.
                page.wait_for_function("document.getElementById('text').value === ''")
            page.wait_for_function("document.querySelectorAll('#log li').length === 2")
            items = page.eval_on_selector_all(
                "#log li", "items => items.map(li => li.firstChild.textContent)"
            )
            assert items == ["second note", "first note"]
        finally:
            browser.close()


@pytest.mark.timeout(300)
def test_the_readme_demo_command_runs_as_pasted_on_debian_s_python(
    tmp_path: Path,
) -> None:
    """``bash scripts/demo`` from a fresh tree, no virtualenv active, with
    Debian's externally-managed /usr/bin/python3 first on PATH: it makes and
    uses the project's .venv (before: externally-managed-environment).
    """
    debian = Path("/usr/bin/python3")
    assert debian.exists(), "Debian's python3 is missing: this test needs it"
    tree = tmp_path / "tree"
    tracked = (
        subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"], "LANG": "C.UTF-8"}
    env["DEMO_BIND"] = f"127.0.0.1:{port}"
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            ["bash", "scripts/demo"], cwd=tree, env=env, start_new_session=True,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while True:
            assert demo.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the demo did not answer"
            time.sleep(0.5)
        venv = (tree / ".venv" / "pyvenv.cfg").read_text()
        assert "home = /usr/bin" in venv, venv
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(15)
