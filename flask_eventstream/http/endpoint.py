"""The ``eventstream`` blueprint: the browser client's static files and,
unless ``EVENTSTREAM_URL_PREFIX`` is ``None``, the built-in endpoint
``GET {prefix}/<channel>`` (or ``<channel>,<channel>,...``) on every transport.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

from flask import Blueprint
from flask import current_app
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import Forbidden

from ..hub import Hub
from ..settings import check_channel
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


def check_grant(hub: Hub, channels: list[str]) -> None:
    """Without an ``authorize`` function, admit only what the request's
    subscriber token names (every channel of it), not closed since.

    :raises Forbidden: with the reason, for the first channel refused.
    """
    grant = request_grant(hub.backend)
    if grant is None:
        raise Forbidden(
            "The built-in endpoint serves no channel until an authorize"
            " function is registered with '@events.authorize', or the request"
            " carries a token."
        )
    for name in channels:
        if name in grant.revoked:
            raise Forbidden(
                f"Channel {name!r} was closed after the token was issued: ask"
                " the app for a new one."
            )
        if name not in grant.channels:
            raise Forbidden(f"The token does not name channel {name!r}.")


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
            # Several channels comma-separated: one stream, one cursor.
            channels = channel.split(",")
            events: Extension = current_app.extensions["eventstream"]
            if events.authorizer is None:
                for name in channels:  # a bad name is a 400 before the token
                    problem = check_channel(name)
                    if problem is not None:
                        raise BadRequest(problem)
                check_grant(events.hub_for(), channels)
            return events.subscribe(*channels)

    return bp
