"""Exceptions raised by flask-eventstream.

::

    EventStreamError
     ├── PublishError          the backend could not store an event
     └── BackendUnavailable    the backend could not be read (history, cursor)

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


class BackendUnavailable(EventStreamError):
    """The backend could not be reached to read history or the newest id.

    A stream answers it with a ``retry:`` hint and ends, so the client comes
    back; a poll answers 503 with ``Retry-After``.
    """
