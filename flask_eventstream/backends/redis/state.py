"""Where this worker's events stand: what the listener, the catch-up and a
worker's own events read and advance together, under one lock.

Three objects deliver to the worker's clients: the listener (what Redis
sends), the catch-up (what it missed), and a publisher of this worker (its
own events, see :mod:`.own`). Each hands a client an event only after every
event before it; this state is how they agree on "before".
"""

from __future__ import annotations

import threading

from ...ids import Cursor
from ...ids import Key


class ListenerState:
    """The store's epoch, the newest key delivered, and where each listened
    stream stands, for one worker.

    :param control: the control stream's key (``close_channel`` entries).
    """

    def __init__(self, control: bytes) -> None:
        self.control = control
        #: Guards every attribute below; nothing inside waits or calls out.
        self.lock = threading.Lock()
        #: Held by whoever delivers, listener or publisher: runs reach the
        #: worker's clients one at a time, in id order.
        self.delivering = threading.Lock()
        #: The listener is between taking entries and delivering them, or
        #: changes epoch: what it holds may come before a publisher's event.
        self.dispatching = False
        #: The store's epoch, as the listener last read it.
        self.epoch: str | None = None
        #: The newest key received: a store whose newest is below lost writes.
        self.seen: Key = (0, 0)
        #: The stream of that entry (``None``: not an entry, a head read).
        self.seen_stream: bytes | None = None
        #: stream key -> channel, for every stream subscribed or to be
        self.channels: dict[bytes, str] = {}
        #: stream key -> the key after which its events reach the worker
        self.cursors: dict[bytes, Key] = {}

    def cursor(self, key: bytes) -> Cursor | None:
        """Where this worker's live events of stream ``key`` begin, if known."""
        with self.lock:
            cursor = self.cursors.get(key)
            epoch = self.epoch
        if cursor is None or epoch is None:
            return None
        return Cursor(cursor, epoch)
