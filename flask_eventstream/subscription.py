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
import enum
import threading
import typing as t

from . import signals
from .errors import BackendUnavailable
from .hub import Hub
from .ids import Key
from .ids import Record
from .ids import Run
from .replay import Replay
from .signals import EndReason
from .wire import Event


class Delivery(enum.Enum):
    """What :meth:`Subscription.deliver` did with a run of events."""

    #: Written to the client by its stream, at once (see :meth:`Consumer.offer`).
    DELIVERED = "delivered"
    #: Queued for its stream to send.
    QUEUED = "queued"
    #: The queue was full: the subscription ended, its client resumes later.
    OVERFLOWED = "overflowed"
    #: Nothing to do: already sent, or the subscription has ended.
    IGNORED = "ignored"


# The hot path reads these as globals: an enum's attribute costs more.
_DELIVERED = Delivery.DELIVERED
_QUEUED = Delivery.QUEUED
_IGNORED = Delivery.IGNORED


class Consumer(t.Protocol):
    """What serves a subscription: its stream. Called from the publisher (or
    the backend's listener): none of these waits or calls user code.
    """

    def offer(self, run: Run) -> bool:
        """Write ``run`` to the client now, without waiting, while the stream
        waits with nothing to send; whether it was taken (the stream sends
        any rest itself). ``False`` leaves it to the queue.
        """

    def wake(self) -> None:
        """Something was queued, or the subscription ended: resume."""

    def drop(self) -> None:
        """The queue overflowed: free the stream's write if it is blocked."""


class Owner(t.Protocol):
    """What runs code that may open subscriptions (a generator view), and
    must close them when it stops.
    """

    def adopt(self, subscription: Subscription, announce: str | None) -> None:
        """``subscription`` opened; ``announce`` is the id a client without
        a cursor would resume from (see :meth:`Subscription.open`).
        """


#: The owner of the subscriptions opened in this context, if any.
owner: contextvars.ContextVar[Owner | None] = contextvars.ContextVar(
    "eventstream_owner", default=None
)


class Subscription:
    """The events of one or more channels for one client.

    Returned by :meth:`EventStream.subscribe`. Return it from a view decorated
    with :func:`stream` to serve it with every transport, or iterate it in a
    generator view to get :class:`Event` objects: first the stored events after
    the cursor, then live ones, each once and in order.

    It is the delivery engine: a cursor, a bounded queue, no duplicate, no
    gap. It keeps nothing of the request, and knows nothing of sockets: an
    open stream costs its queue and little else.
    """

    __slots__ = (
        "channels",
        "last_event_id",
        "hub",
        "member",
        "expires",
        "present",
        "_queue",
        "_signal",
        "_high",
        "_ended",
        "_attached",
        "_consumer",
        "_armed",
        "_replay",
        "_mark",
        "_rewind",
        "__weakref__",
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
        self._signal = threading.Event()
        self._high: Key = (0, 0)
        self._ended: EndReason | None = None
        self._attached = False
        self._consumer: Consumer | None = None
        #: Deliveries go to the consumer's offer (it waits, nothing queued).
        self._armed = False
        self._replay: Replay | None = Replay(hub, channels, last_event_id)
        #: The hub's revocation count before ``authorize`` ran for it.
        self._mark = hub.revocation_mark() if mark is None else mark
        #: Without a cursor, first the last this many stored events.
        self._rewind = rewind
        #: Who subscribes, as ``identify`` named them (``None``: anonymous).
        self.member = member
        #: When the subscriber token it was admitted with expires (Unix
        #: time): it ends then, with the reason ``"expired"``.
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

    def attach(self, consumer: Consumer) -> None:
        """Serve this subscription with ``consumer`` (its stream)."""
        self._consumer = consumer

    @property
    def ended(self) -> EndReason | None:
        """Why it ended, or ``None`` while it is live."""
        return self._ended

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
                hub.bus.connect(channel, self.deliver)
            for channel in self.channels:
                hub.backend.listen(channel)
            if self.expires is not None:
                hub.monitor.expire(self.close, self.expires)
            hub.send(signals.client_connected, subscription=self)
            records, announce = self.replay(limit)
            if self.present is None:  # after the replay: it hears its own join
                self.present = True
                hub.presence.enter(self.channels, self.member)
            # A close_channel that came while authorize ran (or before this
            # joined the bus) ended nothing here: end it now.
            if hub.revoked_since(self._mark, self.channels) and self.close(
                EndReason.REVOKED
            ):
                hub.count("revoked")
            running = owner.get()
            if running is not None:
                running.adopt(self, announce)
            return records, announce
        except BaseException as error:
            # Whatever failed, the slot and the bus receivers are released.
            unavailable = isinstance(error, BackendUnavailable)
            self.close(EndReason.UNAVAILABLE if unavailable else EndReason.ERROR)
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
        live events follow through :meth:`take` and :meth:`wait`).
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

    def close(self, reason: str = EndReason.CLOSED) -> bool:
        """End the subscription: disconnect it and wake whoever waits on it.

        :param reason: why, an :class:`~flask_eventstream.signals.EndReason`
            (sent with the ``client_disconnected`` signal).
        :return: whether it was live until now.
        """
        live = self._ended is None
        if live:
            self._ended = EndReason(reason)
        consumer = self._consumer
        self._consumer = None  # the stream refers to this: no cycle is left
        self._armed = False
        self._detach()
        self._signal.set()
        if consumer is not None:
            consumer.wake()
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
            if hub.bus.disconnect(channel, self.deliver):
                hub.backend.unlisten(channel)
                if hub.bus.receivers(channel):
                    # One joined between the two (the unlisten waited for a
                    # lock, as a Redis listener's does while it connects): it
                    # may have found the channel listened to and gone live,
                    # and the backend listens no more. It ends, and its client
                    # resumes from its cursor, rather than wait in silence.
                    hub.lose(channel, EndReason.LAGGED)
        hub.send(
            signals.client_disconnected,
            subscription=self,
            reason=self._ended or EndReason.CLOSED,
        )

    # -- delivery ---------------------------------------------------------

    def deliver(self, run: Run) -> Delivery:
        """Take a run of one channel's events, from the publisher or the
        backend's listener: never raises, never waits.
        """
        if self._ended is not None:
            return _IGNORED
        consumer = self._consumer
        if self._armed and consumer is not None:
            # The stream waits with nothing queued: it writes the events now,
            # with no wake-up (see the stream module).
            fresh = run.after(self._high)
            if fresh is None:
                return _IGNORED  # already sent
            follows = fresh.prev is None or fresh.prev <= self._high
            if follows and consumer.offer(fresh):
                self._high = fresh.last
                self.hub.counters["delivered"] += len(fresh.records)
                return _DELIVERED
            self._armed = False  # the queue from here: order is kept
        queue = self._queue
        hub = self.hub
        if len(queue) + len(run.records) > hub.settings.queue_size:
            self._ended = EndReason.OVERFLOW
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
            if consumer is not None:
                consumer.drop()
            self._wake()
            return Delivery.OVERFLOWED
        queue.extend(run.records)
        self._wake()
        return _QUEUED

    def _wake(self) -> None:
        self._signal.set()
        consumer = self._consumer
        if consumer is not None:
            consumer.wake()  # a parked stream has no thread to wake

    def arm(self) -> bool:
        """Let :meth:`deliver` hand runs to the consumer's ``offer`` while it
        waits parked; ``False`` if there is something to take first.
        """
        self._armed = (
            not self._queue and self._ended is None and self._consumer is not None
        )
        return self._armed

    def wait(self, timeout: float) -> list[Record] | None:
        """Wait up to ``timeout`` seconds for a record, then :meth:`take`.

        Deliveries go to the consumer's ``offer`` meanwhile if it was armed.
        """
        if not self._queue and self._ended is None and timeout > 0:
            self._signal.wait(timeout)  # (an exception here ends it: close disarms)
        return self.take()

    def interrupt(self) -> None:
        """Make a :meth:`wait` in progress return now."""
        self._signal.set()

    def take(self) -> list[Record] | None:
        """Return the new records queued, at once: an empty list when none
        came, ``None`` once the subscription ended.
        """
        self._armed = False
        self._signal.clear()
        if self._ended is not None:
            return None
        # Only this consumer pops, so popping what was there is safe against
        # a publisher appending from another thread.
        queue = self._queue
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

    def _gap(self, record: Record) -> None:
        self._ended = EndReason.LAGGED
        self._queue.clear()
        self.hub.lagged(repr(self), record.channel, record.event.id)

    def __iter__(self) -> t.Iterator[Event]:
        """Yield the stored events after the cursor, then live events, until
        the subscription ends (its stream closed, its queue overflowed, its
        channel closed, its token expired).
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
