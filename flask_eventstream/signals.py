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

import logging
import typing as t

from blinker import Namespace
from blinker import Signal

logger = logging.getLogger("flask_eventstream")

_signals = Namespace()

#: Sent after an event is stored and handed to this worker's subscribers.
#: Sender: the app. Keyword arguments: ``channel`` (str), ``event``
#: (:class:`~flask_eventstream.Event`, with the id the backend gave it).
event_published = _signals.signal("event-published")

#: Sent when a subscription starts to receive (a stream opened, a long-poll
#: began to wait). Sender: the app. Keyword argument: ``subscription``.
client_connected = _signals.signal("client-connected")

#: Sent when a subscription ends. Sender: the app. Keyword arguments:
#: ``subscription``, ``reason``: ``"closed"`` (the client left or the stream
#: ended), ``"overflow"`` (its queue filled), ``"revoked"``
#: (:meth:`~flask_eventstream.EventStream.close_channel`), ``"shutdown"`` (the
#: worker is stopping), ``"lifetime"`` (``EVENTSTREAM_MAX_LIFETIME``),
#: ``"unavailable"`` (the backend could not be reached), ``"error"`` (opening
#: it failed otherwise; the error is raised where it was opened), or, when
#: events may have been missed and the client must resume or reset,
#: ``"lagged"`` (this worker fell behind the channel's history), ``"control"``
#: (it missed control messages) or ``"epoch"`` (the store was emptied).
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
