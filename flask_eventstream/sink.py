"""The interface through which the publisher writes a waiting client's
events itself: a subscription delivers to it, and the HTTP layer provides
it (:class:`~flask_eventstream.http.direct.DirectWriter`).
"""

from __future__ import annotations

import typing as t

from .ids import Run


class Sink(t.Protocol):
    """Where the publisher may write a waiting client's events itself (see
    :mod:`flask_eventstream.http.direct`).
    """

    #: What the last write left unsent; the stream sends it first.
    pending: memoryview | None

    def send(self, run: Run) -> bool:
        """Write ``run`` without blocking; whether it was taken, wholly or in
        part (the rest is then :attr:`pending`).
        """

    def wake(self) -> None:
        """The subscription has something for its stream (events it could
        not write here, or its end): resume the stream if it waits parked.
        Never waits, and calls no user code.
        """
