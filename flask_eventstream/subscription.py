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
import threading
import typing as t

from . import signals
from .errors import BackendUnavailable
from .hub import Hub
from .ids import Key
from .ids import Record
from .ids import Run
from .replay import Replay
from .sink import Sink
from .wire import Event

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

    It keeps nothing of the request: an open stream costs its queue and little
    else.
    """

    __slots__ = (  # fmt: skip
        "channels", "last_event_id", "hub", "member", "expires", "present",
        "_queue", "_wake", "_high", "_closed", "_attached", "_on_drop", "_sink",
        "_armed", "_replay", "_mark", "_rewind", "__weakref__",
    )

    def __init__(
        self,
        hub: Hub,
        channels: tuple[str, ...],
        last_event_id: str | None,
        *,
        mark: int | None = None,
        rewind: int = 0,
        member: str | None = None,
        expires: float | None = None,
    ) -> None:
        #: The channels, in the order they were given.
        self.channels = channels
        #: The cursor this subscription resumes after, if any.
        self.last_event_id = last_event_id
        #: The app's live parts in this worker.
        self.hub = hub
        self._queue: collections.deque[Record] = collections.deque()
        self._wake = threading.Event()
        self._high: Key = (0, 0)
        #: Why the subscription ended (``None`` while it is live).
        self._closed: str | None = None
        self._attached = False
        self._on_drop: t.Callable[[], None] | None = None
        self._sink: Sink | None = None
        self._armed = False
        self._replay: Replay | None = Replay(hub, channels, last_event_id)
        #: The hub's revocation count before ``authorize`` ran for it.
        self._mark = hub.revocation_mark() if mark is None else mark
        #: Without a cursor, first the last this many stored events.
        self._rewind = rewind
        #: Who subscribes, as ``identify`` named them (``None``: anonymous).
        self.member = member
        #: When the subscriber token it was admitted with expires (Unix time).
        self.expires = expires
        #: In presence: ``None`` from open, ``True`` now, ``False`` not (a lease).
        self.present: bool | None = None

    def __repr__(self) -> str:
        return f"<Subscription {', '.join(self.channels)}>"

    def __call__(self, environ: object, start_response: object) -> t.NoReturn:
        # Flask calls a view's unknown return value as a WSGI app.
        raise TypeError(
            f"The view returned {self!r} without serving it: decorate the view"
            " with @stream (below the route decorator, so that the route"
            " registers the decorated view)."
        )

    # -- lifecycle --------------------------------------------------------

    def serve(
        self, sink: Sink | None = None, on_drop: t.Callable[[], None] | None = None
    ) -> None:
        """Called by the body that serves this subscription.

        :param sink: where the publisher may write events itself while the
            body waits with nothing queued.
        :param on_drop: called when the queue overflows: shuts the connection
            down if a write to it is blocked. It must not call user code.
        """
        self._sink = sink
        self._on_drop = on_drop

    @property
    def dropped(self) -> bool:
        """Whether it ended because its queue overflowed (its client is cut off)."""
        return self._closed == "overflow"

    @property
    def sink(self) -> Sink | None:
        """The sink set by :meth:`serve`, until the subscription ends."""
        return self._sink

    def open(self, limit: int | None = None) -> tuple[list[Record], str | None]:
        """Connect to the bus, then read what the client missed.

        Return the records to send first (stored events after the cursor, or
        one ``eventstream-reset`` event), and the id to announce to a client
        that came without a cursor (so that it resumes from here if it
        reconnects before any event arrives).
        """
        hub = self.hub
        # Counted first, before any backend work: EventStream.subscribe
        # checked the limit, and nothing between there and here switches.
        hub.connections += 1
        hub.served = True
        self._attached = True
        try:
            # All on the bus before a backend call: close() misses nothing.
            for channel in self.channels:
                hub.bus.connect(channel, self._receive)
            for channel in self.channels:
                hub.backend.listen(channel)
            running = opened_here.get()
            if running is not None:
                running.append(self)
            hub.send(signals.client_connected, subscription=self)
            records = self.replay(limit)
            if self.present is None:  # after the replay: it hears its own join
                self.present = True
                hub.presence.enter(self.channels, self.member)
            # A close_channel that came while authorize ran (or before this
            # joined the bus) ended nothing here: end it now.
            if hub.revoked_since(self._mark, self.channels) and self.close("revoked"):
                hub.count("revoked")
            return records
        except BaseException as error:
            # Whatever failed, the slot and the bus receivers are released.
            unavailable = isinstance(error, BackendUnavailable)
            self.close("unavailable" if unavailable else "error")
            raise

    def replay(self, limit: int | None = None) -> tuple[list[Record], str | None]:
        """Read what the client missed, without connecting to the bus (a poll
        does only this): see :meth:`open`. At most ``limit`` records (default:
        a page, bounded in bytes); :meth:`more` reads the next page.
        """
        replay = self._replay
        assert replay is not None, "a subscription replays once"
        records, announce = replay.start(
            live=self._attached,
            limit=limit or self.hub.settings.replay_page,
            rewind=self._rewind,
        )
        self._high = replay.position.key
        if not replay.more:
            self._replay = None  # caught up: an idle stream keeps nothing of it
        return records, announce

    def more(self) -> list[Record]:
        """Return the next page of the replay; ``[]`` once caught up (then
        live events follow through :meth:`wait`).
        """
        replay = self._replay
        if replay is None:
            return []
        records = replay.next_page(self.hub.settings.replay_page)
        if records:
            self._high = max(self._high, records[-1].key)
        if not replay.more:
            self._replay = None
        return records

    def close(self, reason: str = "closed") -> bool:
        """End the subscription: disconnect it and wake whoever waits on it.

        :param reason: why, for the ``client_disconnected`` signal (its
            documentation lists them).
        :return: whether it was live until now.
        """
        live = self._closed is None
        if live:
            self._closed = reason
        sink = self._sink
        # Both refer to the stream, which refers to this.
        self._on_drop = None
        self._sink = None
        self._armed = False
        self._detach()
        self._wake.set()
        if sink is not None:
            sink.wake()
        return live

    def _detach(self) -> None:
        if not self._attached:
            return
        self._attached = False
        hub = self.hub
        hub.connections -= 1
        if self.present:
            self.present = False
            hub.presence.leave(self.channels, self.member)
        for channel in self.channels:
            if hub.bus.disconnect(channel, self._receive):
                hub.backend.unlisten(channel)
        hub.send(
            signals.client_disconnected,
            subscription=self,
            reason=self._closed or "closed",
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
            sink = self._sink
            follows = fresh.prev is None or fresh.prev <= self._high
            if follows and sink is not None and sink.send(fresh):
                self._high = fresh.last
                self.hub.counters["delivered"] += len(fresh.records)
                if sink.pending is None:
                    return
                self._armed = False  # the rest first, then whatever comes
                self._signal()
                return
            self._armed = False
        queue = self._queue
        hub = self.hub
        if len(queue) + len(run.records) > hub.settings.queue_size:
            self._closed = "overflow"
            hub.count("dropped")
            hub.logger.warning(
                "Dropped %s (overflow): %d events queued and unread; the client resumes"
                " from history when it reconnects.",
                self,
                len(queue) + len(run.records),
            )
            queue.clear()  # free the memory now, not when the writer wakes
            # Detached (and client_disconnected sent) by whoever consumes it,
            # in its own thread: never here, inside a publish or the listener.
            if self._on_drop is not None:
                self._on_drop()
        else:
            queue.extend(run.records)
        self._signal()

    def _signal(self) -> None:
        self._wake.set()
        if self._sink is not None:
            self._sink.wake()  # a parked stream has no thread to wake

    def wait(self, timeout: float) -> list[Record] | None:
        """Return the new records queued, waiting up to ``timeout`` seconds for
        one; an empty list when none came, ``None`` once the subscription ended.
        """
        queue = self._queue
        if not queue and self._closed is None and timeout > 0:
            sink = self._sink
            self._armed = sink is not None and sink.pending is None
            self._wake.wait(timeout)  # (an exception here ends it: close disarms)
        self._armed = False  # after the wait, or parked until now (see park)
        self._wake.clear()
        if self._closed is not None:
            return None
        # Only this consumer pops, so popping what was there is safe against
        # a publisher appending from another thread.
        high = self._high
        fresh: list[Record] = []
        for _ in range(len(queue)):
            record = queue.popleft()
            if record.key <= high:
                continue  # already sent (replayed, or written directly)
            if record.prev is not None and record.prev > high:
                # The event before it on its channel never reached this
                # subscription: end here (what came before goes out), and
                # the client resumes from history or gets a reset.
                self._gap(record)
                break
            fresh.append(record)
            high = record.key
        self._high = high
        return fresh

    def park(self) -> bool:
        """Arm the sink while the stream waits parked, with no thread in
        :meth:`wait` (which disarms it); ``False`` if there is work."""
        sink = self._sink
        if self._queue or self._closed is not None or sink is None:
            return False
        self._armed = sink.pending is None
        return self._armed

    def _gap(self, record: Record) -> None:
        self._closed = "lagged"
        self._queue.clear()
        self.hub.lagged(repr(self), record.channel, record.event.id)

    def __iter__(self) -> t.Iterator[Event]:
        """Yield the stored events after the cursor, then live events, until
        the subscription ends (its stream closed, or its queue overflowed).
        """
        records, _ = self.open()
        try:
            while records:
                for record in records:
                    yield record.event
                records = self.more()
            heartbeat = self.hub.settings.heartbeat
            while True:
                fresh = self.wait(heartbeat)
                if fresh is None:
                    return
                for record in fresh:
                    yield record.event
        finally:
            self.close()
