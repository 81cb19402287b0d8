"""Signals sent by flask-eventstream, for logging, metrics and auditing.

Connect receivers as with Flask's own signals::

    from flask_eventstream import signals

    @signals.event_published.connect_via(app)
    def log_event(app, channel, event):
        app.logger.debug("published %s on %s", event.id, channel)

Receivers run in the publishing or streaming code path: keep them quick and do
not raise from them.
"""

from __future__ import annotations

from blinker import Namespace

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
#: worker is stopping), ``"lifetime"`` (``EVENTSTREAM_MAX_LIFETIME``) or
#: ``"unavailable"`` (the backend could not be reached).
client_disconnected = _signals.signal("client-disconnected")
