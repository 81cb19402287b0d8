"""A subscription: the stored events after a cursor, then live ones.

The order of work is what makes resume exact. A subscription connects to the
bus before it reads history, so an event published meanwhile is either in the
history it reads or in its queue, and often in both; it then sends only ids
above the last one it sent, which drops those duplicates (ids are one
increasing sequence per backend, across channels).
"""

from __future__ import annotations

import collections
import contextvars
import json
import threading
import typing as t

from . import signals
from .backends.base import CursorProblem
from .backends.base import format_id
from .backends.base import Key
from .backends.base import parse_id
from .backends.base import Record
from .backends.base import Run
from .event import Event

if t.TYPE_CHECKING:
    from .direct import DirectWriter
    from .extension import _State

#: The event type sent when a cursor cannot be resumed from.
RESET_EVENT = "eventstream-reset"

# A generator view runs in a thread of its own; the subscriptions it opens
# there are closed with it, so a waiting subscription never outlives its stream.
opened_here: contextvars.ContextVar[list[Subscription] | None] = contextvars.ContextVar(
    "eventstream_opened_here", default=None
)


class Subscription:
    """The events of one or more channels for one client.

    Returned by :meth:`EventStream.subscribe`. Return it from a view decorated
    with :func:`stream` to serve it with every transport, or iterate it in a
    generator view to get :class:`Event` objects: first the stored events after
    the cursor, then live ones, each once and in order.

    It keeps what it needs (channels, cursor, the app's backend) and nothing of
    the request, so an open stream costs its queue and little else.
    """

    __slots__ = (
        "channels",
        "last_event_id",
        "_state",
        "_queue",
        "_wake",
        "_high",
        "_closed",
        "_attached",
        "_on_drop",
        "_writer",
        "_armed",
        "__weakref__",
    )

    def __init__(
        self, state: _State, channels: tuple[str, ...], last_event_id: str | None
    ) -> None:
        #: The channels, in the order they were given.
        self.channels = channels
        #: The cursor this subscription resumes after, if any.
        self.last_event_id = last_event_id
        self._state = state
        self._queue: collections.deque[Record] = collections.deque()
        self._wake = threading.Event()
        self._high: Key = (0, 0)
        #: Why the subscription ended (``None`` while it is live).
        self._closed: str | None = None
        self._attached = False
        #: Set by the stream serving it: shuts the connection down if a write
        #: to it is blocked when the queue overflows.
        self._on_drop: t.Callable[[], None] | None = None
        #: Set by the stream serving it, where the publisher may write to the
        #: client's socket itself; used only while the stream waits, idle.
        self._writer: DirectWriter | None = None
        self._armed = False

    def __repr__(self) -> str:
        return f"<Subscription {', '.join(self.channels)}>"

    # -- lifecycle --------------------------------------------------------

    def open(self) -> tuple[list[Record], str | None]:
        """Connect to the bus, then read what the client missed.

        Return the records to send first (stored events after the cursor, or
        one ``eventstream-reset`` event), and the id to announce to a client
        that came without a cursor (so that it resumes from here if it
        reconnects before any event arrives).
        """
        state = self._state
        # Counted first, before any backend work: EventStream.subscribe
        # checked the limit, and nothing between there and here switches.
        state.connections += 1
        self._attached = True
        # Every channel on the bus before the first backend call, so a failure
        # in one leaves nothing for close() to miss.
        for channel in self.channels:
            state.bus.connect(channel, self._receive)
        for channel in self.channels:
            state.backend.listen(channel)
        running = opened_here.get()
        if running is not None:
            running.append(self)
        signals.client_connected.send(state.app, subscription=self)
        return self.replay()

    def replay(self) -> tuple[list[Record], str | None]:
        """Read what the client missed, without connecting to the bus (a poll
        does only this): see :meth:`open`.
        """
        state = self._state
        backend = state.backend
        cursor = self.last_event_id
        if cursor is None:
            # A poll is on no bus: it starts at the newest id of all.
            attached = self._attached
            self._high = backend.head_for(self.channels) if attached else backend.head()
            return [], format_id(self._high)
        try:
            after = parse_id(cursor)
            if after is None:
                raise CursorProblem("malformed", "The cursor is not an event id.")
            records = backend.read(self.channels, after)
        except CursorProblem as problem:
            self._high = head = backend.head()
            state.count("resets")
            state.logger.info(
                "Reset %s at cursor %r (%s): %s",
                self,
                cursor,
                problem.reason,
                problem.detail,
            )
            data = json.dumps(
                {"reason": problem.reason, "detail": problem.detail, "cursor": cursor}
            )
            reset = Event(data, RESET_EVENT, format_id(head))
            return [Record("", head, reset)], None
        self._high = records[-1].key if records else after
        state.count("replayed", len(records))
        return records, None

    def close(self, reason: str = "closed") -> bool:
        """End the subscription: disconnect it and wake whoever waits on it.

        :param reason: why, for the ``client_disconnected`` signal: ``"closed"``
            (the client left), ``"overflow"``, ``"revoked"``
            (:meth:`EventStream.close_channel`), ``"shutdown"``, ``"lifetime"``.
        :return: whether it was live until now.
        """
        live = self._closed is None
        if live:
            self._closed = reason
        self._on_drop = None  # it refers to the stream, which refers to this
        self._armed = False
        self._detach()
        self._wake.set()
        return live

    def _detach(self) -> None:
        if not self._attached:
            return
        self._attached = False
        state = self._state
        for channel in self.channels:
            if state.bus.disconnect(channel, self._receive):
                state.backend.unlisten(channel)
        state.connections -= 1
        signals.client_disconnected.send(
            state.app, subscription=self, reason=self._closed or "closed"
        )

    # -- delivery ---------------------------------------------------------

    def _receive(self, run: Run) -> None:
        # Runs inside publish (memory) or the backend's listener (Redis): it
        # must never raise and never wait.
        if self._closed is not None:
            return
        if self._armed:
            # The stream waits with nothing queued or pending: write the events
            # from here, with no wake-up (see the direct module).
            fresh = run.after(self._high)
            if fresh is None:
                return  # already sent
            writer = self._writer
            assert writer is not None
            if writer.send(fresh):
                self._high = fresh.last
                self._state.counters["delivered"] += len(fresh.records)
                if writer.pending is None:
                    return
                self._armed = False  # the rest first, then whatever comes
                self._wake.set()
                return
            self._armed = False
        queue = self._queue
        if len(queue) + len(run.records) > self._state.queue_size:
            self._closed = "overflow"
            self._state.count("dropped")
            self._state.logger.warning(
                "Dropped %s (overflow): %d events queued and unread; the client resumes"
                " from history when it reconnects.",
                self,
                len(queue) + len(run.records),
            )
            queue.clear()  # free the memory now, not when the writer wakes
            self._detach()
            if self._on_drop is not None:
                self._on_drop()
        else:
            queue.extend(run.records)
        self._wake.set()

    def wait(self, timeout: float) -> list[Record] | None:
        """Return the new records queued, waiting up to ``timeout`` seconds for
        one; an empty list when none came, ``None`` once the subscription ended.
        """
        queue = self._queue
        if not queue and self._closed is None:
            writer = self._writer
            self._armed = writer is not None and writer.pending is None
            try:
                self._wake.wait(timeout)
            finally:
                self._armed = False
        self._wake.clear()
        if self._closed is not None:
            return None
        # Only this consumer pops, so popping what was there is safe against
        # a publisher appending from another thread.
        high = self._high
        fresh: list[Record] = []
        for _ in range(len(queue)):
            record = queue.popleft()
            if record.key > high:
                fresh.append(record)
                high = record.key
        self._high = high
        return fresh

    def __iter__(self) -> t.Iterator[Event]:
        """Yield the stored events after the cursor, then live events, until
        the subscription ends (its stream closed, or its queue overflowed).
        """
        records, _ = self.open()
        try:
            for record in records:
                yield record.event
            heartbeat = self._state.heartbeat
            while True:
                fresh = self.wait(heartbeat)
                if fresh is None:
                    return
                for record in fresh:
                    yield record.event
        finally:
            self.close()
