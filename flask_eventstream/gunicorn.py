"""A gunicorn configuration for a Flask app that serves event streams.

Use it as it is::

    gunicorn -c python:flask_eventstream.gunicorn app:app

or copy this file, or import it into your own ``gunicorn.conf.py`` and change
what differs::

    from flask_eventstream.gunicorn import *  # noqa: F403

    workers = 4

Environment variables override three settings without a file of your own:
``WEB_CONCURRENCY`` (workers), ``GUNICORN_BIND`` and
``EVENTSTREAM_WORKER_CONNECTIONS``. Without ``WEB_CONCURRENCY`` it starts one
worker, or one per core when ``FLASK_EVENTSTREAM_BACKEND`` names a shared
backend such as Redis: the memory backend keeps each worker's events to
itself. The app reads that variable with ``app.config.from_prefixed_env()``
(and ``init_app`` warns, naming it, when the app did not).

Nothing here is needed for a graceful shutdown: on ``SIGTERM``, a reload or a
``max_requests`` restart, each worker's streams end at once with a jittered
``retry:`` hint (see :doc:`reliability`), well inside ``graceful_timeout``.
"""

from __future__ import annotations

import os
import typing as t

#: Streams are long requests that mostly wait: one greenlet each.
worker_class = "gevent"


#: One worker per core. With the memory backend a publish reaches only its
#: own worker's clients: use one worker, or a Redis backend for more.
def _shared_backend() -> bool:
    # What the app reads with app.config.from_prefixed_env() (a JSON string
    # or a bare one); init_app warns when the app did not read it.
    value = os.environ.get("FLASK_EVENTSTREAM_BACKEND", "").strip('"')
    return bool(value) and value != "memory"


# One worker unless the backend is shared: with the memory backend each
# worker would keep its own events, and a publish would reach only the
# clients of one worker. Set WEB_CONCURRENCY (and a Redis backend) for more.
workers = int(
    os.environ.get("WEB_CONCURRENCY", (os.cpu_count() or 1) if _shared_backend() else 1)
)

#: Concurrent connections per worker; every open stream holds one. Keep it at
#: or above ``EVENTSTREAM_MAX_CONNECTIONS`` (10,000), which answers 503 past
#: its limit, so clients get a ``Retry-After`` rather than a stalled accept.
worker_connections = int(os.environ.get("EVENTSTREAM_WORKER_CONNECTIONS", 10000))

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")

#: Clients reconnect together after a deploy: a deep accept queue takes the
#: burst.
backlog = 2048

# No SO_REUSEPORT (reuse_port): with it a second server on a taken port starts
# without an error and takes half the first one's connections, and on gunicorn
# 25+ the master holds no socket, so a reload or a worker restart leaves the
# port closed for a moment or for good. One shared socket: whichever worker
# wakes first accepts the next connection, so with several workers the
# streams spread less evenly (docs/deploying.rst); add --reuse-port for that.

#: The worker's heartbeat to the master runs in its own greenlet, so an open
#: stream never counts against it; this only catches a worker that blocks
#: its event loop.
timeout = 30

#: Streams end within a second of SIGTERM; this bounds the other requests.
graceful_timeout = 30

#: Seconds an idle keep-alive connection (a poll client's) stays open.
keepalive = 5

#: Never preload: the app would be imported before gevent patches the
#: standard library, and a Redis client created then would block the worker.
preload_app = False


def on_starting(server: t.Any) -> None:
    """Say what would fail silently: ``--preload`` with the gevent worker."""
    if server.cfg.preload_app and "gevent" in str(server.cfg.worker_class_str):
        server.log.error(
            "--preload (preload_app) imports the app in gunicorn's master,"
            " before the gevent worker patches the standard library: threads,"
            " locks and connections made at import then block the worker, and"
            " streams stall. Remove --preload; this preset sets preload_app ="
            " False."
        )


def worker_abort(worker: t.Any) -> None:
    """Log what a worker that missed its ``timeout`` was serving."""
    worker.log.warning(
        "Worker %s aborted (timeout); its clients resume from history when"
        " they reconnect.",
        worker.pid,
    )


def child_exit(server: t.Any, worker: t.Any) -> None:
    """Drop a gone worker's live gauges (Prometheus multiprocess mode)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from .metrics import worker_gone

        worker_gone(worker.pid)
