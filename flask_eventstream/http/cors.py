"""CORS for streams and polls: off unless ``EVENTSTREAM_CORS_ORIGINS`` names
the origins that may read them.
"""

from __future__ import annotations

from flask import current_app
from flask import request
from werkzeug.wrappers import Response as BaseResponse

from ..settings import Settings
from .context import current_hub


def cors_headers(response: BaseResponse, settings: Settings) -> None:
    """Let the request's origin read the answer, if it is configured; and
    answer a preflight, which asks whether ``Last-Event-ID`` may be sent.
    """
    origin = request.headers.get("Origin")
    if origin is None or not settings.cors_origins:
        return
    response.vary.add("Origin")
    if "*" in settings.cors_origins:
        response.headers["Access-Control-Allow-Origin"] = "*"
    elif origin in settings.cors_origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        if settings.cors_credentials:
            response.headers["Access-Control-Allow-Credentials"] = "true"
    else:
        return
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "GET"
        response.headers["Access-Control-Allow-Headers"] = (
            "Last-Event-ID, Authorization"
        )
        response.headers["Access-Control-Max-Age"] = "600"


#: The attribute :func:`~flask_eventstream.stream` sets on the views it wraps.
STREAM_VIEW = "_eventstream"


def preflight(response: BaseResponse) -> BaseResponse:
    """``after_request``: CORS headers on what a :func:`stream` view answers
    without a body of its own: the automatic ``OPTIONS`` answer (Flask gives
    it without calling the view), and errors (a 403 for an expired token),
    so that a page on another origin can read why it was refused.
    """
    # Cheapest tests first: this runs after every request of the app.
    if (
        "Origin" in request.headers
        and request.endpoint is not None
        and "Access-Control-Allow-Origin" not in response.headers
    ):
        view = current_app.view_functions.get(request.endpoint)
        if getattr(view, STREAM_VIEW, False):
            cors_headers(response, current_hub().settings)
    return response
