"""Signals sent by flask-eventstream, for logging, metrics and auditing.

Connect receivers as with Flask's own signals::

    from flask_eventstream import signals

    @signals.event_published.connect_via(app)
    def log_event(app, channel, event):
        app.logger.debug("published %s on %s", event.id, channel)

Receivers run in the publishing or streaming code path, never under a lock
of this library: keep them quick. One that raises is logged (with its name)
and counted in the ``callback_errors`` figure, and the others still run; the
publish, stream or listener that sent the signal goes on.
"""

from __future__ import annotations

import enum
import logging
import typing as t

from blinker import Namespace
from blinker import Signal

logger = logging.getLogger("flask_eventstream")

_signals = Namespace()


class EndReason(str, enum.Enum):
    """Why a subscription or a stream ended: the ``reason`` of
    :data:`client_disconnected`. A ``str``, so ``reason == "closed"`` holds.
    """

    #: The client left, or the stream ended by itself.
    CLOSED = "closed"
    #: Its queue filled: the client fell too far behind.
    OVERFLOW = "overflow"
    #: :meth:`~flask_eventstream.EventStream.close_channel`.
    REVOKED = "revoked"
    #: The worker is stopping.
    SHUTDOWN = "shutdown"
    #: ``EVENTSTREAM_MAX_LIFETIME``.
    LIFETIME = "lifetime"
    #: The subscriber token it was admitted with expired.
    EXPIRED = "expired"
    #: A write to its client was blocked past ``EVENTSTREAM_SEND_TIMEOUT``.
    STALLED = "stalled"
    #: The backend could not be reached.
    UNAVAILABLE = "unavailable"
    #: Opening it failed otherwise; the error is raised where it was opened.
    ERROR = "error"
    #: This worker fell behind the channel's history.
    LAGGED = "lagged"
    #: This worker missed control messages.
    CONTROL = "control"
    #: The store was emptied.
    EPOCH = "epoch"

    def __str__(self) -> str:
        return self.value

    @property
    def hinted(self) -> bool:
        """Whether a stream so ended sends a last, jittered ``retry:`` hint:
        its clients come back spread out, not in one burst.
        """
        return self.value in _HINTED


_HINTED = frozenset({"shutdown", "lifetime", "expired"})

#: Sent after an event is stored and handed to this worker's subscribers.
#: Sender: the app. Keyword arguments: ``channel`` (str), ``event``
#: (:class:`~flask_eventstream.Event`, with the id the backend gave it).
event_published = _signals.signal("event-published")

#: Sent when a subscription starts to receive (a stream opened, a long-poll
#: began to wait). Sender: the app. Keyword argument: ``subscription``.
client_connected = _signals.signal("client-connected")

#: Sent when a subscription ends. Sender: the app. Keyword arguments:
#: ``subscription``, ``reason``: an :class:`EndReason` (a ``str``: ``"closed"``,
#: ``"overflow"``, ``"revoked"``, ``"shutdown"``, ``"lifetime"``,
#: ``"expired"``, ``"stalled"``, ``"unavailable"``, ``"error"``, or, when
#: events may have been missed and the client must resume or reset,
#: ``"lagged"``, ``"control"`` or ``"epoch"``).
client_disconnected = _signals.signal("client-disconnected")


def send(signal: Signal, sender: t.Any, **kwargs: t.Any) -> int:
    """Call each receiver of ``signal`` for ``sender`` in turn, as a guest:
    an exception is logged and the next receiver runs. Return how many raised.
    """
    if not signal.receivers:
        return 0
    failed = 0
    for receiver in signal.receivers_for(sender):
        try:
            receiver(sender, **kwargs)
        except Exception:
            failed += 1
            logger.exception(
                "The %r receiver %s raised; the library goes on.",
                getattr(signal, "name", "?"),
                getattr(receiver, "__qualname__", repr(receiver)),
            )
    return failed
