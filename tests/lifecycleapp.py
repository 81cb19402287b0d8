"""The app of ``tests/streams/test_lifecycle.py``: a stream's life from its admission
to the exit of the worker that serves it, under gunicorn's gevent worker.

Configured like ``serverapp`` (``FLASK_EVENTSTREAM_*`` from the environment),
plus ``LIFECYCLE_BREAK_PROBE`` (see :func:`break_probe`). Served with
``Server(app="lifecycleapp:app", ...)``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import typing as t

from appkit import instrument
from flask import Flask
from flask import jsonify
from flask import request
from flask import Response
from flask import send_file
from flask import url_for

from flask_eventstream import EventStream
from flask_eventstream import stream

# Every record a WARNING or above, with its level and logger, one line each,
# in the server's log: the tests find the library's warnings by those lines.
logging.basicConfig(
    level=logging.WARNING,
    format="%(levelname)s [%(process)d] %(name)s: %(message)s",
    stream=sys.stderr,
)

#: Channels ``authorize`` refuses: ``private.*`` is let in by a token only.
REFUSED = ("secret", "private.")


def break_probe(names: str) -> None:
    """Hide attributes of gunicorn's response object from every caller
    outside gunicorn, which keeps working as before: the fast path (direct
    writes and parked streams) relies on them, so the server adapter's probe
    (``flask_eventstream/server.py``) must find one missing, serve every
    stream the portable way, and say so once.

    ``names`` is a comma-separated list; ``"1"`` means the default,
    ``force_close,chunked``: the probe looks for ``force_close`` on the class
    (a method) and for ``chunked`` in the constructor's source, so hiding
    ``force_close`` is what it sees.
    To break something else, name it here (any attribute of
    ``gunicorn.http.wsgi.Response`` or of its instances).
    """
    from gunicorn.http import wsgi

    if names == "1":
        names = "force_close,chunked"
    for name in names.split(","):
        setattr(wsgi.Response, name, _HiddenFromOutside(name, wsgi.Response))


def _caller_is_gunicorn() -> bool:
    # Frame 0 is this function, 1 the descriptor's method, 2 who looked.
    module = str(sys._getframe(2).f_globals.get("__name__", ""))
    return module == "gunicorn" or module.startswith("gunicorn.")


class _HiddenFromOutside:
    """A data descriptor: gunicorn's own code reads and writes the attribute
    (a method of the class, or an instance's value, kept under another
    name); to anyone else it does not exist (``AttributeError``, so
    ``hasattr`` is ``False``).
    """

    def __init__(self, name: str, owner: type) -> None:
        self.name = name
        self.slot = f"_lifecycle_hidden_{name}"
        # A method stays on the class; an instance value lives in the slot.
        self.method = owner.__dict__.get(name)

    def __get__(self, obj: t.Any, owner: type | None = None) -> t.Any:
        if not _caller_is_gunicorn():
            raise AttributeError(self.name)
        if self.method is not None:
            return self.method.__get__(obj, owner) if obj is not None else self.method
        if obj is None:
            raise AttributeError(self.name)
        try:
            return obj.__dict__[self.slot]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, obj: t.Any, value: t.Any) -> None:
        if not _caller_is_gunicorn():
            raise AttributeError(f"{self.name} is hidden by LIFECYCLE_BREAK_PROBE")
        obj.__dict__[self.slot] = value


if os.environ.get("LIFECYCLE_BREAK_PROBE"):
    break_probe(os.environ["LIFECYCLE_BREAK_PROBE"])


events = EventStream()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_prefixed_env()
    secret = app.config["SECRET_KEY"] or "the lifecycle tests' key, long enough"
    app.config["SECRET_KEY"] = secret
    events.init_app(app)

    @events.authorize
    def authorize(channel: str) -> bool:
        return not channel.startswith(REFUSED)

    instrument(app)

    # The same subscription served two ways: returned (the control) ...
    @app.get("/stream/<channels>")
    @stream
    def returned(channels: str) -> t.Any:
        return events.subscribe(*channels.split(","))

    # ... and iterated by a generator view, the pattern of docs/streams.rst.
    @app.get("/gen/<channels>")
    @stream
    def iterated(channels: str) -> t.Any:
        for event in events.subscribe(*channels.split(",")):  # noqa: UP028
            yield event

    @app.get("/never")
    @stream
    def never() -> t.Any:
        # Waits for something that never comes: it yields nothing, ever.
        threading.Event().wait()
        yield "never"

    @app.post("/publish")
    def publish() -> t.Any:
        channel = request.form["channel"]
        ids = []
        for n in range(int(request.form.get("count", 1))):
            data = request.form.get("data", "{n}").replace("{n}", str(n))
            ids.append(events.publish(channel, data).id)
        return jsonify(ids)

    @app.post("/close")
    def close() -> t.Any:
        events.close_channel(request.form["channel"])
        return "closed"

    @app.get("/token")
    def token() -> t.Any:
        channels = request.args["channels"].split(",")
        return events.token(*channels, expires_in=float(request.args["expires_in"]))

    @app.get("/static-url")
    def static_url() -> t.Any:
        return url_for("eventstream.static", filename="eventstream.js")

    @app.get("/file")
    def file() -> t.Any:
        return send_file(os.path.abspath(__file__), mimetype="text/plain")

    @app.get("/csv")
    def csv() -> t.Any:
        count = int(request.args.get("rows", 50))

        def rows() -> t.Iterator[str]:
            for n in range(count):
                yield f"{n},row {n}\r\n"

        return Response(rows(), mimetype="text/csv")

    @app.get("/stats")
    def stats() -> t.Any:
        return jsonify(events.stats())

    @app.get("/debug")
    def debug() -> t.Any:
        import gc

        from greenlet import greenlet

        gc.collect()  # count what is kept, not garbage awaiting collection
        return {
            "greenlets": sum(isinstance(o, greenlet) for o in gc.get_objects()),
            "fds": len(os.listdir("/proc/self/fd")),
        }

    return app


app = create_app()
