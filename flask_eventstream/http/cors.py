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
        response.headers["Access-Control-Allow-Headers"] = "Last-Event-ID"
        response.headers["Access-Control-Max-Age"] = "600"


#: The attribute :func:`~flask_eventstream.stream` sets on the views it wraps.
STREAM_VIEW = "_eventstream"


def preflight(response: BaseResponse) -> BaseResponse:
    """``after_request``: CORS headers on the automatic ``OPTIONS`` answer of
    a :func:`stream` view (Flask answers it without calling the view).
    """
    if request.method == "OPTIONS" and request.endpoint is not None:
        view = current_app.view_functions.get(request.endpoint)
        if getattr(view, STREAM_VIEW, False):
            cors_headers(response, current_hub().settings)
    return response
