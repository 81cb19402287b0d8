"""HTTP: the bodies that serve subscriptions and generator views (streams,
polls, long-polls), the :func:`stream` decorator, CORS and direct writes.

Nothing here keeps a request context past the view: bodies keep the app's
:class:`~flask_eventstream.hub.Hub` and what the view read.
"""

from __future__ import annotations

from .admission import open_subscription
from .cors import preflight
from .endpoint import blueprint
from .request import request_cursor
from .tokens import check_secret
from .tokens import make_token
from .views import stream
from .views import undecorated

__all__ = [
    "blueprint",
    "check_secret",
    "make_token",
    "open_subscription",
    "preflight",
    "request_cursor",
    "stream",
    "undecorated",
]
