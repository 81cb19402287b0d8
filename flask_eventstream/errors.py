"""Exceptions raised by flask-eventstream.

::

    EventStreamError
     └── PublishError      the backend could not store an event

Invalid input raises ``ValueError`` (at ``publish``) or an HTTP error with a
message (400, 403, 503 at an endpoint); those are not listed here.
"""

from __future__ import annotations


class EventStreamError(Exception):
    """The base of the exceptions this library raises."""


class PublishError(EventStreamError):
    """The backend could not store the event: it was not published.

    The cause (for example a Redis connection error) is chained as
    ``__cause__``. Nothing was delivered, so retrying cannot duplicate it.
    """
