from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing as t
import uuid
from pathlib import Path

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_eventstream import Event
from flask_eventstream import EventStream
from flask_eventstream import stream

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow test files first: run in parallel, the long
    ones start at once rather than last, when the others are done.
    """
    items.sort(key=lambda item: not item.get_closest_marker("slow"))


@pytest.fixture(autouse=True)
def _close_left_streams() -> t.Iterator[None]:
    """Close the raw streams a test opened and left open (it failed before
    its own close): a socket collected later warns in another test.
    """
    from clients import SOCKETS

    start = len(SOCKETS)
    yield
    left, SOCKETS[start:] = SOCKETS[start:], []
    for sock in left:
        sock.close()


def pytest_configure(config: pytest.Config) -> None:
    # The test servers log why each stream ended (see serverapp).
    os.environ["TEST_LOG_ENDS"] = "1"


def require(program: str) -> str:
    """Fail, never skip, when a real part of the test setup is missing."""
    path = shutil.which(program)
    if path is None:
        pytest.fail(
            f"{program} is not installed; run 'bash scripts/test', which installs"
            " what the tests need.",
            pytrace=False,
        )
    return path


class Server:
    """A real HTTP server process serving ``tests/serverapp.py``.

    ``kind`` is ``"gevent"`` (gunicorn's gevent worker, the target),
    ``"gthread"`` (gunicorn's threaded worker) or ``"flask"`` (``flask run``,
    the threaded development server).
    """

    def __init__(
        self,
        kind: str = "gevent",
        *,
        config: dict[str, t.Any] | None = None,
        workers: int = 1,
        app: str = "serverapp:app",
        extra: t.Sequence[str] = (),
        health: str = "/health",
        port: int | None = None,
    ) -> None:
        self.kind = kind
        self.health = health
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.app = app
        self.extra = list(extra)
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT)])
        settings = {"HEARTBEAT": 0.5, "RETRY": 0.5}
        settings.update(config or {})
        for key, value in settings.items():
            self.env[f"FLASK_EVENTSTREAM_{key}"] = (
                value if isinstance(value, str) else _json(value)
            )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: t.IO[bytes] | None = None
        self.final_output = ""
        # One client for the test's own requests: a new httpx client costs
        # tens of milliseconds (its TLS context), more than a request here.
        # No kept-alive connection, as httpx.get: each request a new one, so
        # several workers share them as they would a browser's.
        self.http = httpx.Client(
            base_url=self.url,
            timeout=30,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def command(self) -> list[str]:
        if self.kind == "flask":
            return [
                sys.executable, "-m", "flask", "--app", self.app, "run",
                "--port", str(self.port), "--with-threads", "--no-reload",
            ]  # fmt: skip
        worker = {"gevent": "gevent", "gthread": "gthread", "sync": "sync"}[self.kind]
        cmd = [
            sys.executable, "-m", "gunicorn", "-k", worker,
            "-b", f"127.0.0.1:{self.port}", "-w", str(self.workers),
            "--graceful-timeout", "3", "--log-level", "warning",
        ]  # fmt: skip
        if worker == "gevent":
            cmd += ["--worker-connections", "4000"]
        elif worker == "gthread" and "--threads" not in self.extra:
            # One thread per open stream, and some for the other requests.
            cmd += ["--threads", "560"]
        return [*cmd, *self.extra, self.app]

    def start(self, timeout: float = 20.0) -> Server:
        if self.log is not None and not self.log.closed:
            self.log.close()
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.command(),
            env=self.env,
            cwd=TESTS,
            start_new_session=True,
            stderr=self.log,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited: {self.proc.returncode}")
            try:
                if self._workers_up() >= self.workers:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.kind} server did not start in {timeout}s")
            time.sleep(0.05)

    def _workers_up(self) -> int:
        """How many workers answer: concurrent requests reach each one that
        has booted (the first one up would otherwise take every connection).
        """
        from concurrent.futures import ThreadPoolExecutor

        def pid(_: int) -> str:
            response = self.http.get(self.health, timeout=1)
            if not response.is_success:
                return ""
            return response.headers.get("x-worker-pid", "up")

        if self.workers == 1:
            return 1 if pid(0) else 0
        with ThreadPoolExecutor(8) as pool:
            pids = set(pool.map(pid, range(8 * self.workers)))
        pids.discard("")
        return len(pids)

    def __enter__(self) -> Server:
        """Started: ``with Server(...) as server: yield server`` in a fixture."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        if self.log is not None and not self.log.closed:
            self.final_output = self.output()
            self.log.close()
            kept = os.environ.get("TEST_SERVER_LOGS")
            if kept and self.final_output:
                # A module-scoped server stops after the test that failed:
                # TEST_SERVER_LOGS=dir keeps every server's log there.
                os.makedirs(kept, exist_ok=True)
                name = f"{time.strftime('%H%M%S')}-{self.kind}-{self.port}.log"
                Path(kept, name).write_text(self.final_output)
            if self.final_output:
                # Shown with the test's output when it fails.
                print(
                    f"--- {self.kind} server log ---\n{self.final_output}",
                    file=sys.stderr,
                )

    def publish(
        self,
        channel: str,
        data: str = "{n}",
        *,
        count: int = 1,
        event: str | None = None,
    ) -> list[str]:
        form = {"channel": channel, "data": data, "count": str(count)}
        if event is not None:
            form["event"] = event
        response = self.http.post("/publish", data=form)
        response.raise_for_status()
        return t.cast(list[str], response.json())

    def stats(self) -> dict[str, t.Any]:
        return t.cast(dict[str, t.Any], self.http.get("/stats", timeout=5).json())

    def output(self) -> str:
        """What the server wrote to its standard error so far (its log)."""
        if self.log is None or self.log.closed:
            return self.final_output
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def debug(self) -> dict[str, t.Any]:
        """What a leak would grow in the worker: greenlets, subscriptions,
        descriptors, memory, open streams (``/debug`` of ``serverapp``).
        """
        return t.cast(dict[str, t.Any], self.http.get("/debug", timeout=5).json())

    def ended(self, channels: str) -> list[str]:
        """Why each stream of exactly ``channels`` (comma-separated) ended,
        as the server logged it (see appkit), oldest first.
        """
        names = ", ".join(channels.split(","))
        pattern = re.compile(rf"ended <Subscription {re.escape(names)}>: (\w+)")
        return pattern.findall(self.output())

    def wait_ended(
        self, channels: str, reason: str, timeout: float = 10.0, *, count: int = 1
    ) -> None:
        """Wait until ``count`` streams of ``channels`` ended for ``reason``;
        fail at the deadline with the reasons they did end for.
        """
        deadline = time.monotonic() + timeout
        while self.ended(channels).count(reason) < count:
            if time.monotonic() > deadline:
                found = self.ended(channels)
                raise AssertionError(f"no {channels} stream ended {reason!r}: {found}")
            time.sleep(0.05)

    def wait_for(
        self, check: t.Callable[[dict[str, t.Any]], bool], timeout: float = 10.0
    ) -> dict[str, t.Any]:
        """Poll the server's stats until ``check`` holds; fail at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if check(stats):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached in {timeout}s: {stats}")
            time.sleep(0.05)


def run_app(server: Server, code: str) -> list[str]:
    """Run ``code`` in a process of its own with the server's app (as a script
    or task worker would) and an app context; return what it printed.
    """
    script = "from serverapp import app, events\nwith app.app_context():\n"
    script += "".join(f"    {line}\n" for line in code.splitlines())
    return run_script(server, script).stdout.split()


def run_script(server: Server, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with the server's environment, from the tests' folder
    (its apps importable); fail with its stderr if it fails.
    """
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=server.env,
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


def _json(value: t.Any) -> str:
    import json

    return json.dumps(value)


@pytest.fixture(scope="module", params=["gevent", "gthread", "flask"])
def server(request: pytest.FixtureRequest) -> t.Iterator[Server]:
    """The core test server, under each kind of server the library supports."""
    srv = Server(request.param, config={"QUEUE_SIZE": 50, "HISTORY": 300}).start()
    yield srv
    srv.stop()


@pytest.fixture
def app() -> Flask:
    app = Flask("test")
    app.config["EVENTSTREAM_HEARTBEAT"] = 0.2
    app.testing = True
    return app


@pytest.fixture
def events(app: Flask) -> EventStream:
    return EventStream(app)


def add_views(app: Flask, events: EventStream) -> FlaskClient:
    """Register the in-process tests' views (``/sub/<channels>`` returns a
    subscription, ``/iterate/<channel>`` iterates one in a generator) and an
    ``authorize`` that refuses ``secret``; return a test client.
    """

    @events.authorize
    def authorize(channel: str) -> bool:
        return channel != "secret"

    @app.get("/sub/<channels>")
    @stream
    def sub(channels: str) -> t.Any:
        return events.subscribe(*channels.split(","))

    @app.get("/iterate/<channel>")
    @stream
    def iterate(channel: str) -> t.Any:
        for event in events.subscribe(channel):
            yield Event("seen " + event.data, id=event.id)

    return app.test_client()


@pytest.fixture
def client(app: Flask, events: EventStream) -> FlaskClient:
    return add_views(app, events)


def publish(app: Flask, events: EventStream, channel: str, data: str) -> Event:
    """Publish from outside a request, as a background job does."""
    with app.app_context():
        return events.publish(channel, data)


class RedisServer:
    """A real redis-server on a free port, without persistence."""

    def __init__(self, *args: str) -> None:
        self.executable = require("redis-server")
        #: More command-line arguments (a config file first, if any).
        self.args = list(args)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: t.IO[bytes] | None = None
        self.final_output = ""
        # A replica writes the snapshot it syncs to its working directory,
        # whatever --save says: one of its own, removed at stop.
        self.dir = tempfile.mkdtemp(prefix="redis-")

    def start(self, timeout: float = 10.0) -> RedisServer:
        import redis

        os.makedirs(self.dir, exist_ok=True)  # again after a stop
        self.proc = subprocess.Popen(
            [
                self.executable,
                *self.args,
                "--dir",
                self.dir,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        while True:
            try:
                client.ping()
                client.close()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self) -> t.Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)


@pytest.fixture(scope="session")
def redis_server() -> t.Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def redis_config(redis: RedisServer, **extra: t.Any) -> dict[str, t.Any]:
    """A server's config on ``redis``, under a key prefix of its own (tests
    share the session's redis-server), with ``extra`` settings.
    """
    config: dict[str, t.Any] = {
        "BACKEND": redis.url,
        "REDIS_PREFIX": f"t{uuid.uuid4().hex[:8]}:",
    }
    config.update(extra)
    return config


def on_backend(
    request: pytest.FixtureRequest, config: dict[str, t.Any] | None = None
) -> dict[str, t.Any]:
    """``config`` for a server on the backend a ``params=["memory", "redis"]``
    fixture names: with Redis, the session's server under a prefix of its own.
    """
    config = dict(config or {})
    if request.param == "redis":
        config = redis_config(request.getfixturevalue("redis_server"), **config)
    return config


def serve(
    kind: str = "gevent", *, backends: t.Sequence[str] = (), **options: t.Any
) -> t.Any:
    """A module-scoped fixture: one :class:`Server` for the module's tests,
    ``Server(kind, **options)``. Assign it to the fixture's name::

        server = serve(config={"RETRY": 0.3})

    :param backends: run the module once on each of these (``"memory"``,
        ``"redis"``: the session's redis-server, a key prefix of its own).
    """

    several = len(backends) > 1  # then each test's id names its backend

    @pytest.fixture(scope="module", params=list(backends) if several else None)
    def fixture(request: pytest.FixtureRequest) -> t.Iterator[Server]:
        settings = dict(options)
        backend = request.param if several else "".join(backends) or "memory"
        if backend == "redis":
            redis = request.getfixturevalue("redis_server")
            settings["config"] = redis_config(redis, **settings.get("config", {}))
        with Server(kind, **settings) as server:
            yield server

    return fixture
