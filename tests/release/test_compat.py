"""The oldest and newest Flask and Python the package claims run it, each in
a clean virtualenv that builds it from the source tree.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from venvs import clean_venv
from venvs import interpreter

#: More than ten seconds a test: not in the fast core (-m 'not slow').
pytestmark = pytest.mark.slow


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


OLDEST = ("flask==3.0.0", "werkzeug==3.0.0", "blinker==1.7.0")


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("version", "pins"),
    [
        pytest.param("3.10", OLDEST, id="oldest-python-oldest-flask"),
        pytest.param("3.13", (), id="newest-python-newest-flask"),
    ],
)
def test_the_oldest_and_newest_flask_and_python_claimed_run_it(
    tmp_path: Path, version: str, pins: tuple[str, ...]
) -> None:
    base = interpreter(version)
    python = str(clean_venv(tmp_path / "venv", str(ROOT), *pins, base=base))
    done = subprocess.run(
        [python, "-c", SMOKE], capture_output=True, text=True, timeout=60,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")
