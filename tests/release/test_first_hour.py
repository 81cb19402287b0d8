"""The first hour: what a new user meets, from the setups that cannot work
well (said in the log) to the mistakes a view can make (said in the error).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import httpx
import pytest
from clients import RawStream
from conftest import run_script
from conftest import Server
from conftest import TESTS
from flask import Flask

from flask_eventstream import Event
from flask_eventstream import EventStream
from flask_eventstream import stream


def first_stream_log(server: Server, path: str = "/stream/hello") -> str:
    """Open a stream (the worker checks its setup then), and return the log."""
    stream = RawStream(server.url, path, timeout=5)
    try:
        stream.read_head()
    finally:
        stream.close()
    return server.output()


def test_the_sync_worker_is_named_with_the_fix() -> None:
    server = Server("sync", extra=["--timeout", "5"]).start()
    try:
        log = first_stream_log(server)
    finally:
        server.stop()
    assert "sync worker serves one request at a time" in log
    assert "-k gevent" in log


def test_the_gthread_worker_says_how_many_streams_it_holds() -> None:
    server = Server("gthread", extra=["--threads", "4"]).start()
    try:
        log = first_stream_log(server)
    finally:
        server.stop()
    assert "can serve 4 streams and requests at once" in log


def test_the_memory_backend_on_two_workers_is_named() -> None:
    server = Server(workers=2, extra=["--reuse-port"]).start()
    try:
        log = first_stream_log(server)
    finally:
        server.stop()
    assert "EVENTSTREAM_BACKEND is 'memory' with 2 gunicorn workers" in log


def test_one_gevent_worker_with_the_memory_backend_says_nothing() -> None:
    server = Server().start()
    try:
        log = first_stream_log(server)
    finally:
        server.stop()
    assert "flask_eventstream" not in log and "EVENTSTREAM" not in log, log


@pytest.mark.parametrize(
    ("backend", "workers"),
    [(None, "1"), ("memory", "1"), ("redis://127.0.0.1:6379/0", str(os.cpu_count()))],
)
def test_the_preset_starts_one_worker_unless_the_backend_is_shared(
    backend: str | None, workers: str
) -> None:
    env = {k: v for k, v in os.environ.items() if "EVENTSTREAM" not in k}
    env.pop("WEB_CONCURRENCY", None)
    if backend is not None:
        env["FLASK_EVENTSTREAM_BACKEND"] = backend
    code = "import flask_eventstream.gunicorn as g; print(g.workers)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert done.stdout.strip() == workers, done.stderr


def test_a_memory_publish_from_a_script_warns_that_nobody_hears_it() -> None:
    server = Server()  # its environment only: the script is another process
    code = (
        "from serverapp import app, events\n"
        "events.publish('news', 'from a script')\n"
        "events.publish('news', 'and again')\n"
    )
    done = run_script(server, code)
    assert done.stderr.count("no client will receive it") == 1, done.stderr


def test_a_subscription_returned_without_stream_says_how_to_fix_it() -> None:
    app = Flask(__name__)
    app.testing = True
    events = EventStream(app)

    @app.get("/plain")
    def plain() -> t.Any:
        return events.subscribe("a")

    @stream  # above the route: the route registered the undecorated view
    @app.get("/upside-down")
    def upside_down() -> t.Any:
        return events.subscribe("a")

    for url in ("/plain", "/upside-down"):
        with pytest.raises(TypeError, match=r"decorate the view with @stream \(below"):
            app.test_client().get(url)


def test_a_generator_returned_without_stream_says_how_to_fix_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Flask(__name__)
    app.testing = True
    EventStream(app)

    @app.get("/plain")
    def plain() -> t.Any:
        yield "data: hello\n\n"

    @stream  # above the route: the route registered the undecorated view
    @app.get("/upside-down")
    def upside_down() -> t.Any:
        yield "data: hello\n\n"

    client = app.test_client()
    for url in ("/plain", "/upside-down"):
        caplog.clear()
        # Left alone (any client may send that Accept header), but the log
        # says how to fix it.
        answer = client.get(url, headers={"Accept": "text/event-stream"})
        assert answer.status_code == 200
        assert answer.get_data() == b"data: hello\n\n"
        [warning] = [r.getMessage() for r in caplog.records]
        assert "decorate it with @stream (below the route decorator" in warning
    # A generator is still a fine streamed download for other clients.
    caplog.clear()
    assert client.get("/plain").get_data() == b"data: hello\n\n"
    assert not caplog.records


def test_events_yielded_without_stream_say_how_to_fix_it() -> None:
    # Before: a 200 with an empty body, and gunicorn's "Event(data='x') is
    # not a byte" in the log.
    app = Flask(__name__)
    app.testing = True
    EventStream(app)

    @app.get("/clock")
    def clock() -> t.Any:
        yield Event("x")

    with pytest.raises(
        TypeError,
        match=r"yielded Event\(data='x'\) but is not a stream: decorate it with",
    ):
        app.test_client().get("/clock").get_data()


def test_a_dashboard_snapshot_of_64_kib_publishes_with_the_defaults() -> None:
    app = Flask(__name__)
    events = EventStream(app)
    snapshot = {"rows": [{"id": n, "label": "x" * 120} for n in range(500)]}
    with app.app_context():
        stored = events.publish("dashboard", snapshot)
        assert len(stored.data) > 64 * 1024
        with pytest.raises(ValueError, match="EVENTSTREAM_MAX_EVENT_BYTES"):
            events.publish("dashboard", "x" * (1024 * 1024))


def test_the_version_is_the_package_s() -> None:
    import flask_eventstream

    assert flask_eventstream.__version__ == importlib.metadata.version(
        "flask-eventstream"
    )


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"raw", "is a bytes that app.json cannot serialise"),
        ({"when": object()}, "is a dict that app.json cannot serialise"),
    ],
    ids=["bytes", "object"],
)
def test_data_json_cannot_write_is_a_value_error_naming_the_channel(
    data: object, said: str
) -> None:
    app = Flask(__name__)
    events = EventStream(app)
    with app.app_context(), pytest.raises(ValueError) as refused:
        events.publish("orders", data)
    message = str(refused.value)
    assert f"The data published on 'orders' {said}" in message
    assert "Data is a str, sent as it is, or a value app.json serialises" in message
    if isinstance(data, bytes):
        assert "decode bytes to a str first" in message


PRESET = ["-c", "python:flask_eventstream.gunicorn"]


def test_the_preset_refuses_a_port_another_server_holds() -> None:
    """Before: with the preset's SO_REUSEPORT, a second server on a taken port
    started without a word and took half the first one's requests.
    """
    first = Server(extra=PRESET).start()
    second = Server(extra=PRESET, port=first.port)
    try:
        done = subprocess.run(
            second.command(), env=second.env, cwd=TESTS, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode != 0, done.stderr
        assert f"Connection in use: ('127.0.0.1', {first.port})" in done.stderr
        pids = {first.http.get("/health").headers["x-worker-pid"] for _ in range(8)}
        assert len(pids) == 1  # one server answers, the first
    finally:
        first.stop()


def test_the_preset_serves_on_after_a_reload() -> None:
    # With reuse_port set at start only, a SIGHUP left no socket open.
    server = Server(extra=PRESET).start()
    try:
        before = server.http.get("/health").headers["x-worker-pid"]
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while True:
            try:
                pid = server.http.get("/health", timeout=2).headers["x-worker-pid"]
                if pid != before:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "no new worker answered"
            time.sleep(0.1)
    finally:
        server.stop()


def test_the_preset_shares_a_port_when_asked() -> None:
    first = Server(extra=[*PRESET, "--reuse-port"]).start()
    second = Server(extra=[*PRESET, "--reuse-port"], port=first.port)
    try:
        second.start()  # meant: both listen
    finally:
        second.stop()
        first.stop()


def test_preload_with_gevent_is_named_at_start() -> None:
    server = Server(extra=[*PRESET, "--preload"]).start()
    try:
        log = server.output()
    finally:
        server.stop()
    assert "--preload (preload_app) imports the app in gunicorn's master" in log


def test_warnings_go_to_gunicorn_s_error_log_in_its_format(tmp_path: Path) -> None:
    """Before: bare lines on stderr (no time, no level), none in the file."""
    errors = tmp_path / "error.log"
    server = Server(extra=["--error-logfile", str(errors)])
    server.env["FLASK_EVENTSTREAM_HEARTBEET"] = "5"  # a typo: warned at init_app
    server.start()
    server.stop()
    line = next(line for line in errors.read_text().splitlines() if "HEARTBEET" in line)
    assert re.fullmatch(
        r"\[[-0-9 :+]+\] \[\d+\] \[WARNING\] Unknown configuration key"
        r" EVENTSTREAM_HEARTBEET \(ignored\): did you mean EVENTSTREAM_HEARTBEAT\?",
        line,
    ), line
    assert "HEARTBEET" not in server.final_output  # not on stderr as well


def test_warnings_go_to_flask_s_log_under_flask_run() -> None:
    server = Server("flask")
    server.env["FLASK_EVENTSTREAM_HEARTBEET"] = "5"
    server.start()
    server.stop()
    assert re.search(
        r"^\[[-0-9 :,]+\] WARNING in \w+: Unknown configuration key"
        r" EVENTSTREAM_HEARTBEET",
        server.final_output,
        re.M,
    ), server.final_output


def test_a_setting_in_the_environment_the_app_never_reads_is_named(
    tmp_path: Path,
) -> None:
    # The README's app does not call app.config.from_prefixed_env().
    from test_quickstart import readme_blocks

    (tmp_path / "app.py").write_text(readme_blocks()[0])
    env = {k: v for k, v in os.environ.items() if "EVENTSTREAM" not in k}
    env["FLASK_EVENTSTREAM_BACKEND"] = "redis://127.0.0.1:6390/0"
    done = subprocess.run(
        [sys.executable, "-c", "import app"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        "FLASK_EVENTSTREAM_BACKEND is set in the environment"
        " ('redis://127.0.0.1:6390/0') but this app's EVENTSTREAM_BACKEND is"
        " 'memory': the app did not read it. If it should, call"
        " app.config.from_prefixed_env()"
    ) in done.stderr, done.stderr


def test_a_key_set_in_code_after_reading_the_environment_is_not_warned() -> None:
    # create_app(test_config): the environment is read, then a key is set.
    from flask_eventstream.setup_checks import unread_environment

    environ = {"FLASK_EVENTSTREAM_HEARTBEAT": "5", "FLASK_EVENTSTREAM_HISTORY": "10"}
    config = {"EVENTSTREAM_HEARTBEAT": 5, "EVENTSTREAM_HISTORY": 100}
    assert unread_environment(config, environ) == []


PUBLISHES_AT_IMPORT = """
import threading, time
from flask import Flask
from flask_eventstream import EventStream

app = Flask(__name__)
events = EventStream(app)

def tick():
    time.sleep(0.5)
    with app.app_context():
        events.publish("clock", "tick")

threading.Thread(target=tick, daemon=True).start()

@app.get("/health")
def health():
    return "ok"
"""


def test_preload_is_named_by_the_worker_and_by_a_publish_in_the_master(
    tmp_path: Path,
) -> None:
    """Without the preset: the worker says the app was set up before gevent
    patched; a thread started at import publishes in the master, and the
    warning says so (before: 'a process that serves no streams').
    """
    (tmp_path / "ticker.py").write_text(PUBLISHES_AT_IMPORT)
    ticker = Server(app="ticker:app", extra=["--preload", "--chdir", str(tmp_path)])
    ticker.start()
    try:
        deadline = time.monotonic() + 10
        while "gunicorn's master process" not in ticker.output():
            assert time.monotonic() < deadline, ticker.output()
            time.sleep(0.05)
    finally:
        ticker.stop()
    assert "(--preload), and what it started at import" in ticker.final_output
    server = Server(extra=["--preload"]).start()
    try:
        log = first_stream_log(server)
    finally:
        server.stop()
    assert "gunicorn imported it in the master (--preload, preload_app)" in log, log
