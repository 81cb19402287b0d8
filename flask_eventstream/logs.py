"""Where the library's log goes when the app set up none: gunicorn's error
log under gunicorn (its handlers, so its format and ``--error-logfile``),
else Flask's default handler (``flask run``'s log, with Flask's format).

Without this, Python's last-resort handler printed bare lines on standard
error: no time, no level, and none of them in gunicorn's log file.
"""

from __future__ import annotations

import logging
import sys

from flask.logging import default_handler
from flask.logging import has_level_handler

logger = logging.getLogger("flask_eventstream")


def route_log() -> None:
    """Give the library's logger the server's handlers, unless it (or an
    ancestor: the app's own ``logging`` setup) already has one for its level.
    """
    if has_level_handler(logger):
        return
    server = logging.getLogger("gunicorn.error")
    if "gunicorn" in sys.modules and server.handlers:
        for handler in server.handlers:
            logger.addHandler(handler)
        if logger.level == logging.NOTSET:
            logger.setLevel(server.level)  # --log-level applies to it too
    else:
        logger.addHandler(default_handler)
