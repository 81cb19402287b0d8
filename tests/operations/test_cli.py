"""``flask eventstream tail`` and ``stats`` against a running server."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from clients import RawStream
from conftest import redis_config
from conftest import RedisServer
from conftest import serve
from conftest import Server
from conftest import TESTS
from flask import Flask

from flask_eventstream import BackendUnavailable
from flask_eventstream import EventStream
from flask_eventstream import WorkerReport

pytestmark = pytest.mark.redis


# --reuse-port: the kernel spreads connections over both workers (without it
# one worker may accept them all, and the stats test needs both).
cluster = serve(backends=["redis"], workers=2, extra=["--reuse-port"])


def flask(server: Server, *args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "serverapp", "eventstream", *args]


def start(server: Server, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        flask(server, *args), env=server.env, cwd=TESTS, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def run(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        flask(server, *args), env=server.env, cwd=TESTS, text=True,
        capture_output=True, timeout=30,
    )  # fmt: skip


def lines(proc: subprocess.Popen[str], count: int) -> list[dict[str, str]]:
    assert proc.stdout is not None
    found = []
    for _ in range(count):
        line = proc.stdout.readline()  # the test's timeout bounds a hang
        assert line, proc.stderr.read() if proc.stderr else ""
        found.append(json.loads(line))
    return found


@pytest.mark.timeout(60)
def test_tail_resumes_from_history_then_follows(cluster: Server) -> None:
    first, second, third = cluster.publish("tail", "old {n}", count=3)
    proc = start(cluster, "tail", "tail", "--last-event-id", first, "--json",
                 "--count", "4")  # fmt: skip
    try:
        # The stored events after the cursor...
        got = lines(proc, 2)
        assert got == [
            {"id": second, "event": "message", "data": "old 1"},
            {"id": third, "event": "message", "data": "old 2"},
        ]
        # ...then the live ones.
        live = cluster.publish("tail", "new {n}", count=2)
        got = lines(proc, 2)
        assert [(e["id"], e["data"]) for e in got] == [
            (live[0], "new 0"),
            (live[1], "new 1"),
        ]
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.communicate(timeout=10)  # and close its pipes


@pytest.mark.timeout(60)
def test_tail_follows_a_url_in_wire_format(cluster: Server) -> None:
    (cursor,) = cluster.publish("tail-url", "before")
    proc = start(cluster, "tail", "tail-url", "--url",
                 cluster.url + "/stream/{channels}", "--last-event-id", cursor,
                 "--count", "2")  # fmt: skip
    try:
        cluster.wait_for(lambda s: s["channels"].get("tail-url", 0) >= 1)
        ids = cluster.publish("tail-url", "line {n}\nsecond", count=2, event="note")
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert out == "".join(
            f"id: {i}\nevent: note\ndata: line {n}\ndata: second\n\n"
            for n, i in enumerate(ids)
        )
    finally:
        proc.kill()
        proc.communicate(timeout=10)  # and close its pipes


@pytest.mark.timeout(60)
def test_tail_escapes_control_characters(cluster: Server) -> None:
    (cursor,) = cluster.publish("tail-esc", "before")
    (id,) = cluster.publish("tail-esc", "\x1b]0;pwned\x07red\x1b[31m")
    proc = start(cluster, "tail", "tail-esc", "--last-event-id", cursor,
                 "--count", "1")  # fmt: skip
    try:
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert out == f"id: {id}\ndata: \\x1b]0;pwned\\x07red\\x1b[31m\n\n"
    finally:
        proc.kill()
        proc.communicate(timeout=10)


@pytest.mark.timeout(90)
def test_stats_counts_every_worker(cluster: Server) -> None:
    streams = [RawStream(cluster.url, "/stream/counted") for _ in range(12)]
    try:
        pids = set()
        for stream in streams:
            stream.open()
            pids.add(stream.headers["x-worker-pid"])
        assert len(pids) == 2, "the streams all landed on one worker"
        cluster.publish("counted", "x", count=3)
        # Each worker reports every 2 seconds while it holds streams.
        deadline = time.monotonic() + 20
        while True:
            result = run(cluster, "stats")
            assert result.returncode == 0, result.stderr
            figures = json.loads(result.stdout)
            if figures["channels"].get("counted") == 12:
                break
            assert time.monotonic() < deadline, figures
            time.sleep(0.5)
        assert figures["workers"] == 2
        assert figures["connections"] >= 12
        assert figures["history"]["counted"] == 3
        for report in figures["per_worker"]:
            assert set(report) == set(WorkerReport.__annotations__), report
        reported = [w["worker"].split(":")[1] for w in figures["per_worker"]]
        assert sorted(reported) == sorted(pids)
        assert figures["counters"]["published"] >= 3
    finally:
        for stream in streams:
            stream.close()


def test_commands_that_need_a_shared_backend_say_so() -> None:
    server = Server("gevent")  # not started: only its environment is used
    for args in (("tail", "x"), ("stats",), ("publish", "x", "y")):
        result = run(server, *args)
        assert result.returncode == 1, result
        assert "EVENTSTREAM_BACKEND is 'memory'" in result.stderr
    # tail has another way: the server's own stream, over HTTP.
    result = run(server, "tail", "news", "user.7")
    assert (
        "or read the running server's stream over HTTP: flask eventstream tail"
        " --url http://HOST:PORT/events/{channels} news user.7"
    ) in result.stderr, result.stderr
    result = run(server, "tail", "--url", "ftp://example", "x")
    assert result.returncode == 2
    assert "is not an http(s) URL" in result.stderr


def test_publish_says_whether_the_event_was_stored(
    redis_server: RedisServer,
) -> None:
    """With Redis out of reach, ``publish`` exits 1 with a message that says
    nothing was stored, not a traceback; with an idempotency key, a second
    run stores nothing more.
    """
    from conftest import free_port

    down = Server(config={"BACKEND": f"redis://127.0.0.1:{free_port()}/0"})
    failed = run(down, "publish", "orders", "paid", "--idempotency-key", "o-1")
    assert failed.returncode == 1
    assert "Nothing was stored" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr
    up = Server(config=redis_config(redis_server))
    first = run(up, "publish", "orders", "paid", "--idempotency-key", "o-1")
    again = run(up, "publish", "orders", "paid", "--idempotency-key", "o-1")
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert first.stdout == again.stdout  # the same event, stored once


def test_stats_and_tail_with_redis_down_say_so_in_a_line() -> None:
    """Redis out of reach: ``snapshot(everywhere=True)`` raises the exported
    BackendUnavailable (not redis-py's own error), and ``stats`` and
    ``tail`` exit 1 with one line, not a traceback.
    """
    from conftest import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    app = Flask(__name__)
    app.config["EVENTSTREAM_BACKEND"] = url
    events = EventStream(app)
    try:
        with app.app_context():
            assert events.snapshot()["workers"] is None  # no I/O: it works
            with pytest.raises(BackendUnavailable, match="Redis is unavailable"):
                events.snapshot(everywhere=True)
    finally:
        events.hub_for(app).backend.close()
    down = Server(config={"BACKEND": url})  # not started: its environment
    for args in (("stats",), ("tail", "news", "--count", "1")):
        failed = run(down, *args)
        assert failed.returncode == 1, failed
        assert "Traceback" not in failed.stderr, failed.stderr
        (error,) = [x for x in failed.stderr.splitlines() if x.startswith("Error")]
        assert "Redis" in error, failed.stderr
