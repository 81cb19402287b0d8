"""What every app that the integration tests serve has in common."""

from __future__ import annotations

import os
import sys
import typing as t

from flask import Flask

from flask_eventstream import signals
from flask_eventstream import Subscription


def instrument(app: Flask) -> None:
    """What every test server has: why each stream ended in its log, its
    worker's pid on every answer, and ``/health``.
    """
    if os.environ.get("TEST_LOG_ENDS"):  # set under pytest, not in benchmarks
        # Why each stream ended, in the server's log (shown when a test fails).
        def ended(sender: Flask, subscription: Subscription, reason: str) -> None:
            print(f"[{os.getpid()}] ended {subscription!r}: {reason}", file=sys.stderr)

        signals.client_disconnected.connect(ended, sender=app, weak=False)

    @app.after_request
    def worker_pid(response: t.Any) -> t.Any:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    @app.get("/health")
    def health() -> t.Any:
        return "ok"
