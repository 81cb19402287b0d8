"""Setups that cannot work well, said once per worker in the log: a server
that holds a thread per stream, or a memory backend split over processes.

These are warnings, not errors: a development server or a quick test may be
exactly what the user wants. ``docs/deploying.rst`` has the table of servers.
"""

from __future__ import annotations

import logging

from .server import gunicorn_setup

logger = logging.getLogger("flask_eventstream")


def check_server(backend_url: str) -> list[str]:
    """Log (once per call; call it once per worker) what is wrong with the
    server this process runs under for streams; return the messages.
    """
    setup = gunicorn_setup()
    if setup is None:
        return []
    found = []
    if setup.kind == "sync":
        found.append(
            "gunicorn's sync worker serves one request at a time: one open stream"
            " blocks the whole worker (the page itself, then WORKER TIMEOUT)."
            " Run gunicorn with '-k gevent' (pip install 'flask-eventstream[gevent]')."
        )
    elif setup.kind == "gthread":
        found.append(
            f"gunicorn's gthread worker holds a thread per open stream: this worker"
            f" can serve {setup.threads} streams and requests at once, and every"
            " other request waits. Run gunicorn with '-k gevent'"
            " (pip install 'flask-eventstream[gevent]')."
        )
    if backend_url == "memory" and setup.workers > 1:
        found.append(
            f"EVENTSTREAM_BACKEND is 'memory' with {setup.workers} gunicorn workers:"
            " each worker keeps its own events, and a publish reaches only the"
            " clients of the worker that made it. Use a Redis backend, or one"
            " worker."
        )
    for message in found:
        logger.warning(message)
    return found
