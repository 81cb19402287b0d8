"""How the HTTP layer finds the current app's hub, without importing the
extension above it.
"""

from __future__ import annotations

import typing as t

from flask import current_app

from ..hub import Hub


class HasHub(t.Protocol):
    def hub_for(self, app: t.Any = None) -> Hub: ...


def current_hub() -> Hub:
    """The hub of the app handling this request.

    :raises RuntimeError: if no ``EventStream`` is registered on the app.
    """
    extension: HasHub | None = current_app.extensions.get("eventstream")
    if extension is None:
        raise RuntimeError(
            "This Flask app has no EventStream extension. Create one with"
            " 'EventStream(app)' or call 'events.init_app(app)' before serving"
            " streams."
        )
    return extension.hub_for()
