"""Idle streams without a greenlet: parked connections.

Under gunicorn's gevent worker each request has a greenlet of its own, which
a stream keeps while it waits: the greenlet, its saved C stack, gunicorn's
request, parser and environ, about 8 KB of the 18 an idle stream cost. While
a stream waits with nothing to send, the publisher writes its events itself
(see :mod:`~flask_eventstream.http.direct`): the greenlet has nothing to do.

So it parks the stream: its writer takes the connection over from gunicorn
(a duplicate of the socket's descriptor, the response's chunk framing) and
the greenlet returns. Gunicorn closes its own descriptor; the connection
stays open on the duplicate. A parked stream costs its subscription, its
suspended body and a timer for its heartbeat.

It is resumed, in a greenlet made for the purpose, when it has something to
write that the publisher could not (the rest of a partial write, its end)
or when its heartbeat is due, and parks again once it waits.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
import typing as t

from .body import Body
from .body import jittered
from .direct import DirectWriter

logger = logging.getLogger("flask_eventstream")


class Parking:
    """The parked streams of this process, with their heartbeat timers.

    One per worker process (:meth:`here`); used only under gevent.
    """

    _current: t.ClassVar[Parking | None] = None

    def __init__(self) -> None:
        import gevent

        self._spawn = gevent.spawn
        self._loop = gevent.get_hub().loop
        #: The process it serves (a fork starts its own).
        self.pid = os.getpid()
        #: Each parked writer, with the timer of its next heartbeat.
        self.timers: dict[DirectWriter, t.Any] = {}
        #: Every stream handed over and not yet finished (parked or running).
        self.held: set[DirectWriter] = set()
        # One bound method for every timer, not one made per timer.
        self._wake = self.wake
        atexit.register(self.close_all)

    @classmethod
    def here(cls) -> Parking:
        """This process's parking, made at its first parked stream."""
        current = cls._current
        if current is None or current.pid != os.getpid():
            current = cls._current = cls()
        return current

    def take(self, writer: DirectWriter, deadline: float) -> bool:
        """Take the connection of ``writer``'s stream from the server and park
        it until ``deadline`` (``time.monotonic()``); ``False`` if it cannot.
        """
        body = writer.body
        if body is None or not writer.detach():
            return False
        body.moved(writer.raw)
        self.held.add(writer)
        self.park(writer, deadline)
        return True

    def park(self, writer: DirectWriter, deadline: float) -> None:
        """Wait, without a greenlet, for ``writer``'s stream to be woken or
        for ``deadline``.
        """
        if writer.woken:
            # Woken while it ran: what woke it may have come after its look.
            self._spawn(self._drive, writer)
            return
        # A millisecond late rather than early: the body then finds the
        # heartbeat due, instead of parking again for what is left.
        delay = max(deadline - time.monotonic(), 0.0) + 0.001
        timer = self._loop.timer(delay)
        self.timers[writer] = timer
        timer.start(self._wake, writer)

    def wake(self, writer: DirectWriter) -> None:
        """Resume ``writer``'s stream if it is parked: called by its
        subscription (from the publisher or whoever ends it) and its timer.
        Never waits.
        """
        timer = self.timers.pop(writer, None)
        if timer is None:
            writer.woken = True  # running: it parks again only after a look
            return
        timer.close()
        self._spawn(self._drive, writer)

    def _drive(self, writer: DirectWriter) -> None:
        body = writer.body
        try:
            while body is not None:
                writer.woken = False  # the body looks at its subscription now
                try:
                    chunk = body.advance()
                except StopIteration:
                    break
                if isinstance(chunk, float):
                    self.park(writer, chunk)
                    return
                writer.write(chunk)
        except OSError:
            pass  # the client is gone: its end is the same as any other
        except Exception:
            logger.exception("A parked stream failed; its connection is closed.")
        self.finish(writer, body)

    def finish(self, writer: DirectWriter, body: Body | None) -> None:
        """End the response (its last chunk, if framed) and the connection."""
        self.held.discard(writer)
        if body is not None:
            body.release()  # first: the monitor stops watching the socket
        writer.finish()

    def close_all(self) -> None:
        """At exit: the worker stopped before its streams ended (gunicorn
        does not wait for connections no greenlet serves). Each gets its last
        retry hint, if its socket takes it at once, and is closed.
        """
        if self.pid != os.getpid():
            return
        for writer in list(self.held):
            body = writer.body
            retry = body.retry if body is not None else None
            writer.finish(jittered(retry))
        self.held.clear()
        self.timers.clear()
