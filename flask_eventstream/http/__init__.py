"""HTTP: the bodies that serve subscriptions and generator views (streams,
polls, long-polls), the :func:`stream` decorator, CORS and direct writes.

Nothing here keeps a request context past the view: bodies keep the app's
:class:`~flask_eventstream.hub.Hub` and what the view read.
"""

from __future__ import annotations

from .admission import admit
from .cors import preflight
from .direct import capture_start_response
from .endpoint import blueprint
from .request import request_cursor
from .request import request_rewind
from .request import short_poll
from .tokens import make_token
from .tokens import request_grant
from .views import stream
from .views import undecorated

__all__ = [
    "admit",
    "blueprint",
    "capture_start_response",
    "preflight",
    "request_cursor",
    "request_rewind",
    "short_poll",
    "make_token",
    "request_grant",
    "stream",
    "undecorated",
]
