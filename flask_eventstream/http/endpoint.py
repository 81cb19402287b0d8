"""The ``eventstream`` blueprint: the browser client's static files and,
unless ``EVENTSTREAM_URL_PREFIX`` is ``None``, the built-in endpoint
``GET {prefix}/<channel>`` on every transport.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

from flask import Blueprint
from flask import current_app
from werkzeug.exceptions import Forbidden

from ..hub import Hub
from ..subscription import Subscription
from .tokens import request_grant
from .views import stream

STATIC = Path(__file__).resolve().parent.parent / "static"


class Extension(t.Protocol):
    """What the endpoint uses of the app's ``EventStream``."""

    @property
    def authorizer(self) -> t.Callable[[str], bool] | None: ...

    def subscribe(self, *channels: str) -> Subscription: ...

    def hub_for(self) -> Hub: ...


def blueprint(prefix: str | None) -> Blueprint:
    """The blueprint ``init_app`` registers."""
    bp = Blueprint(
        "eventstream",
        __name__,
        static_folder=str(STATIC),
        url_prefix=prefix if prefix is not None else "/_eventstream",
    )
    if prefix is not None:

        @bp.get("/<channel>")
        @stream
        def channel(channel: str) -> t.Any:
            events: Extension = current_app.extensions["eventstream"]
            if events.authorizer is None:
                grant = request_grant(events.hub_for().backend)
                if grant is None:
                    raise Forbidden(
                        "The built-in endpoint serves no channel until an"
                        " authorize function is registered with"
                        " '@events.authorize', or the request carries a token."
                    )
                if channel in grant.revoked:
                    raise Forbidden(
                        f"Channel {channel!r} was closed after the token was"
                        " issued: ask the app for a new one."
                    )
                if channel not in grant.channels:
                    raise Forbidden(f"The token does not name channel {channel!r}.")
            return events.subscribe(channel)

    return bp
