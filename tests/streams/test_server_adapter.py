"""Tripwires for what the server adapter (``flask_eventstream.server``) relies
on in gunicorn and gevent, and its limits. Each test fails when a release
changes a behaviour the fast path needs: the adapter's probe would then
serve streams the portable way, and this says why.
"""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
import textwrap

import gevent._socket3
from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers import base
from gunicorn.workers import base_async

from flask_eventstream import server


def test_gunicorn_ends_a_connection_with_close_never_shutdown() -> None:
    """A parked stream keeps its connection on a duplicate descriptor after
    gunicorn closes its own: that holds only while gunicorn closes, since a
    shutdown() ends the connection for every descriptor.
    """
    assert "shutdown" not in inspect.getsource(util.close)
    handle = inspect.getsource(base_async.AsyncWorker.handle)
    assert handle.rstrip().endswith("util.close(client)")
    assert "shutdown" not in handle


def test_gunicorn_response_has_what_a_stream_takes_over() -> None:
    init = inspect.getsource(wsgi.Response.__init__)
    for name in ("chunked", "must_close", "sent", "sock"):
        assert f"self.{name} = " in init
    assert callable(wsgi.Response.force_close)
    # The C socket under gevent's, whose send() fails rather than waits.
    assert hasattr(gevent._socket3.socket, "_sock")


def test_gunicorn_writes_an_error_into_a_request_it_kills() -> None:
    """Why a stopping worker cuts the streams still inside an event before
    its graceful timeout: a request greenlet gunicorn kills gets an error
    response written on its connection, which would land inside the event.
    """
    assert "write_error" in inspect.getsource(base.Worker.handle_error)
    run = inspect.getsource(
        __import__("gunicorn.workers.ggevent", fromlist=["x"]).GeventWorker.run
    )
    assert "server.stop(timeout=1)" in run


def test_a_duplicated_descriptor_keeps_the_connection() -> None:
    """What parking does: duplicate the socket's descriptor, close the
    original, write on the duplicate. The client sees one connection.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        accepted, _ = listener.accept()
        duplicate = socket.socket(fileno=os.dup(accepted.fileno()))
        accepted.close()
        duplicate.sendall(b"still here")
        assert client.recv(100) == b"still here"
        duplicate.close()
        assert client.recv(100) == b""  # and closing the last one ends it
        client.close()


def _limit_in(soft: int, hard: int, configured: int, *, parks: bool) -> str:
    code = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
        from flask_eventstream.server import stream_limit
        limit = stream_limit({configured}, parks={parks})
        print(limit.streams, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        print(limit.warning)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_stream_limit_leaves_descriptors_for_other_requests() -> None:
    out = _limit_in(256, 256, 10000, parks=True)
    first, warning = out.splitlines()
    assert first == "224 256"  # 32 descriptors left for the rest
    assert "RLIMIT_NOFILE) is 256" in warning
    assert "serves at most 224 streams" in warning


def test_the_soft_descriptor_limit_is_raised_when_the_hard_one_allows() -> None:
    out = _limit_in(256, 20000, 10000, parks=True)
    assert out.splitlines() == ["10000 10625", "None"]


def test_a_configured_limit_within_the_descriptors_is_kept() -> None:
    assert _limit_in(256, 256, 100, parks=True).splitlines() == ["100 256", "None"]


def test_no_fast_path_outside_gunicorn() -> None:
    assert server.gunicorn_worker() is None
    assert server.fast_path() is None
