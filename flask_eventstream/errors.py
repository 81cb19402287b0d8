"""Exceptions raised by flask-eventstream.

::

    EventStreamError
     ├── PublishError              the event may not have been published
     │    ├── PublishNotStored     it was not stored: retrying cannot duplicate it
     │    └── PublishOutcomeUnknown  sent, no answer: it may have been stored
     ├── BackendUnavailable        the backend could not be read (history, cursor)
     └── StreamRefused             the Python client: a stream it cannot read
          └── EventTooLarge        a line or an event passed its max_event_bytes

Invalid input raises ``ValueError`` (at ``publish``) or an HTTP error with a
message (400, 403, 503 at an endpoint); those are not listed here. Every
class here is exported by :mod:`flask_eventstream`; the two of the client
also by :mod:`flask_eventstream.client`, which raises them.
"""

from __future__ import annotations


class EventStreamError(Exception):
    """The base of the exceptions this library raises."""


class PublishError(EventStreamError):
    """The backend did not confirm that it stored the event.

    Catch it for both of its cases; tell them apart with its subclasses
    (:class:`PublishNotStored`, :class:`PublishOutcomeUnknown`). The cause
    (for example a Redis connection error) is chained as ``__cause__``. A
    retry with the same ``idempotency_key`` is safe in either case.
    """


class PublishNotStored(PublishError):
    """The event was not stored: the command never reached the backend (it
    could not connect) or the backend refused it before writing anything.
    Nothing was delivered, so retrying cannot duplicate it.

    .. versionadded:: 0.1
    """


class PublishOutcomeUnknown(PublishError):
    """The command was sent but no answer came (a timeout, a connection lost
    while waiting), or the backend answered an error that may have come
    after it stored the event: it may have been stored and delivered. Retry
    with the same ``idempotency_key`` to store it at most once; without one,
    a retry may store it twice.

    .. versionadded:: 0.1
    """


class BackendUnavailable(EventStreamError):
    """The backend could not be reached to read history or the newest id.

    A stream answers it with a ``retry:`` hint and ends, so the client comes
    back; a poll answers 503 with ``Retry-After``.
    """


class StreamRefused(EventStreamError):
    """The stream cannot be read and reconnecting would not help: the server
    refused it with a 4xx status, or answered ``200`` with something other
    than ``text/event-stream`` (a login page a redirect led to, say).
    Raised by :class:`flask_eventstream.client.EventSource`.

    .. attribute:: status
        :type: int

        The HTTP status of the answer.

    .. attribute:: message
        :type: str

        The server's reason (the start of its answer), or what was wrong
        with it.
    """

    def __init__(self, url: str, status: int, message: str) -> None:
        super().__init__(f"{url} answered {status}: {message}")
        self.status = status
        self.message = message


class EventTooLarge(StreamRefused):
    """A line, or the data of one event, passed the client's
    ``max_event_bytes`` (:attr:`limit`). The stream is left: reading on
    would drop that event silently, and reconnecting would get it again.

    .. attribute:: limit
        :type: int

        The client's ``max_event_bytes``.
    """

    def __init__(self, url: str, limit: int) -> None:
        super().__init__(
            url,
            200,
            f"a line or an event passed {limit} bytes (raise max_event_bytes"
            " if the server sends events that large)",
        )
        self.limit = limit
