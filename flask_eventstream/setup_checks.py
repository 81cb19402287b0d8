"""Setups that cannot work well, said in the log: a server that holds a
thread per stream, a memory backend split over processes, an app imported
before gevent patched the standard library (``--preload``), once per worker;
settings in the environment that the app never read, at ``init_app``.

These are warnings, not errors: a development server or a quick test may be
exactly what the user wants. ``docs/deploying.rst`` has the table of servers.
"""

from __future__ import annotations

import json
import logging
import sys
import typing as t

from .server import gunicorn_setup

logger = logging.getLogger("flask_eventstream")


#: Whether gevent had patched the socket module when the app was set up
#: (``None``: not seen yet). See :func:`note_setup`.
_patched_at_setup: bool | None = None


def note_setup() -> None:
    """Note, at ``init_app``, whether gevent has patched the standard library
    yet: a gevent worker that finds it had not imported the app in the master
    (``--preload``), where threads and locks made at import do not cooperate.
    """
    global _patched_at_setup
    monkey = sys.modules.get("gevent.monkey")
    patched = monkey is not None and monkey.is_module_patched("socket")
    if _patched_at_setup is None:
        _patched_at_setup = patched


def unread_environment(
    config: t.Mapping[str, t.Any], environ: t.Mapping[str, str]
) -> list[str]:
    """A warning for each ``FLASK_EVENTSTREAM_*`` variable of ``environ``
    whose value the app's ``config`` does not hold: the app never called
    ``app.config.from_prefixed_env()``, which reads them (as JSON when it
    parses), and the gunicorn preset counts its workers from them.
    """
    unread = []
    for name, raw in sorted(environ.items()):
        if not name.startswith("FLASK_EVENTSTREAM_"):
            continue
        key = name.removeprefix("FLASK_")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if key in config and config[key] == value:
            # The app read the environment: a key it set differently since
            # (create_app(test_config), say) is meant.
            return []
        if key in config:
            unread.append((name, raw, key))
    return [
        f"{name} is set in the environment ({raw[:60]!r}) but this app's {key}"
        f" is {config[key]!r}: the app did not read it. If it should, call"
        " app.config.from_prefixed_env() before EventStream(app) (or init_app)."
        for name, raw, key in unread
    ]


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
    if setup.kind == "gevent" and _patched_at_setup is False:
        found.append(
            "This app was set up before gevent patched the standard library:"
            " gunicorn imported it in the master (--preload, preload_app), and"
            " threads, locks and connections made at import block the worker,"
            " so streams stall. Remove --preload."
        )
    for message in found:
        logger.warning(message)
    return found
