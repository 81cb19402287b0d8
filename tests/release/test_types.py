"""A type checker accepts what the docs and the examples show: ``mypy
--strict`` (with the project's configuration) over examples/*/app.py and
over every Python snippet of README.md, PYPI.md and docs/*.rst that is a
whole program (the rule is in ``snippets.py``), checked against this
checkout's package. Flask's route decorators take every kind of ``@stream`` view.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from snippets import programs
from snippets import quickstart_app

EXAMPLES = sorted(
    str(path.relative_to(ROOT)) for path in ROOT.glob("examples/*/app.py")
)
PROGRAMS = programs()


def mypy(paths: list[Path], cache: Path, cwd: Path) -> None:
    """Fail with mypy's report unless it finds no error in ``paths``."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--strict", "--cache-dir", str(cache), *map(str, paths)],
        cwd=cwd, capture_output=True, text=True, timeout=300,
        # The package as checked out, whatever is installed (an editable
        # install is out of mypy's reach).
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for the module: the first run reads Flask's types."""
    return tmp_path_factory.mktemp("mypy-cache")


def test_the_rule_finds_the_programs_the_docs_show() -> None:
    # A page that stops being whole would drop out of the check unseen.
    for name in [
        "README.md#1",
        "PYPI.md#1",
        "docs/quickstart.rst#1",
        "docs/testing.rst",
    ]:
        assert name in PROGRAMS
    assert "docs/streams.rst#1" not in PROGRAMS  # a fragment: uses `app`


@pytest.mark.parametrize("example", EXAMPLES)
def test_an_example_type_checks(example: str, cache: Path) -> None:
    mypy([ROOT / example], cache, ROOT)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_a_snippet_type_checks(name: str, cache: Path, tmp_path: Path) -> None:
    # Beside the quickstart app, which a test file imports as `app`.
    (tmp_path / "app.py").write_text(quickstart_app())
    path = tmp_path / "snippet.py"
    path.write_text(PROGRAMS[name])
    mypy([path], cache, tmp_path)


def test_every_kind_of_stream_view_is_a_route(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "views.py"
    path.write_text(VIEWS)
    mypy([path], cache, tmp_path)


def test_a_view_stream_cannot_serve_is_refused(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "views.py"
    path.write_text(VIEWS + WRONG)
    with pytest.raises(AssertionError) as found:
        mypy([path], cache, tmp_path)
    report = str(found.value)
    assert 'to "stream" has incompatible type "Callable[[], int]"' in report, report
    assert 'to "sub" has incompatible type "str"; expected "int"' in report, report
    assert "Found 2 errors" in report, report


#: A view of every kind @stream serves, bare and with options; ``publish``'s
#: id is a ``str``.
VIEWS = """\
from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from typing import Any

from flask import Blueprint, Flask, Response
from flask.typing import ResponseReturnValue
from flask_eventstream import Event, EventStream, Published, Subscription, stream

app = Flask(__name__)
events = EventStream(app)
bp = Blueprint("bp", __name__)


@app.get("/sub/<int:uid>")
@stream
def sub(uid: int) -> Subscription:
    return events.subscribe(f"user.{uid}")


@app.get("/clock")
@stream(heartbeat=15)
def clock() -> Iterator[Event]:
    yield Event("tick")


@bp.get("/gen")
@stream(retry=1, heartbeat=5, headers={"X-A": "b"}, announce=False)
def gen() -> Generator[Event, None, None]:
    yield Event("x")


@app.get("/items")
@stream
def items() -> Iterator[str | bytes | dict[str, Any]]:
    yield "text"
    yield b"data: raw\\n\\n"
    yield {"data": "x", "event": "y"}


@app.get("/list")
@stream
def listed() -> Iterable[Event]:
    return [Event("a")]


@app.get("/maybe")
@stream
def maybe() -> Subscription | Response:
    return Response("", 204)


@app.get("/done")
@stream
def done() -> tuple[str, int]:
    return "", 204


@app.get("/text")
@stream
def text() -> str:
    return "no stream"


@app.get("/any")
@stream
def anything() -> ResponseReturnValue:
    return {"a": 1}


def untyped(uid):  # type: ignore[no-untyped-def]
    return events.subscribe("a")


app.add_url_rule("/untyped/<uid>", view_func=stream(untyped))
published: Published = events.publish("news", {"a": 1})
cursor: str = published.id
first: Event = published
"""

#: A view @stream cannot serve, and a call that does not match the view's
#: parameters (kept by the decorator).
WRONG = """
@app.get("/number")
@stream
def number() -> int:
    return 1


sub("7")
"""
