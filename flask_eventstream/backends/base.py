"""What every backend provides: ids, history and delivery to this worker."""

from __future__ import annotations

import collections
import time
import typing as t
from abc import ABC
from abc import abstractmethod

from ..ids import Cursor
from ..ids import Record
from ..ids import Run
from ..wire import Event

#: The most bytes of events (their data and type) one :meth:`Backend.read`
#: returns past its first event, whatever its count: a read brings into a
#: worker about what its caller may send (a stream's page holds less, see
#: the settings' ``REPLAY_BYTES``; a poll's answer is bounded by it).
READ_BYTES = 8 * 1024 * 1024

#: Seconds a :meth:`Backend.close_channel` is remembered: the longest a
#: subscriber token may live (a token issued before the close admits the
#: channel no more).
CLOSED_KEPT = 30 * 24 * 3600


def within(records: t.Sequence[Record], limit: int, max_bytes: int) -> list[Record]:
    """The first of ``records``, at most ``limit`` of them and, past the
    first, ``max_bytes`` of data and type.
    """
    taken = 0
    for count, record in enumerate(records[:limit]):
        if count and taken >= max_bytes:
            return list(records[:count])
        taken += len(record.event.data.encode()) + len(record.event.event or "")
    return list(records[:limit])


class Once(t.NamedTuple):
    """An idempotency key, and the seconds a repeat of it stores nothing."""

    key: str
    window: float


#: Called by a backend with the events that reach this worker, a run at a time.
Deliver = t.Callable[[Run], None]
#: Called by a backend when a channel's streams must end on this worker.
Revoke = t.Callable[[str], None]
#: Called by a backend that found it missed events of ``channel`` (``None``:
#: of any channel, or a control message) for this worker, with why: the
#: streams concerned end, and their clients resume or get a reset.
Lost = t.Callable[[str | None, str], None]
#: Returns how many events of a channel to keep, and for how long (seconds,
#: or ``None``).
Retention = t.Callable[[str], tuple[int, float | None]]


class Sink(t.NamedTuple):
    """Where a backend hands what reaches this worker; given to the backend
    when it is made (the hub's is its bus and its revoke and lose methods).
    """

    #: Every event that reaches this worker, in id order, in runs of one or
    #: more events of one channel.
    deliver: Deliver
    #: The channel of each :meth:`Backend.close_channel`, on every worker.
    revoke: Revoke
    #: A channel (``None``: every channel) whose events or control messages
    #: this worker may have missed, and why: a backend never skips silently.
    lost: Lost


def _nowhere(_: object) -> None:
    return None


def _nowhere2(_: object, __: object) -> None:
    return None


#: The sink of a backend that only publishes (a script, a task worker):
#: nothing of what reaches it is used.
NOWHERE = Sink(_nowhere, _nowhere, _nowhere2)


class Backend(ABC):
    """Stores events with ids and history, and delivers them to this worker
    through its :class:`Sink`.

    :param history: events kept per channel.
    :param ttl: seconds a channel's history is kept after its last event
        (``None``: kept).
    :param sink: where the events that reach this worker go, and its
        revocations and losses.
    :param retention: how many events of a channel to keep, and for how
        long; by default ``history`` and ``ttl`` for every channel.
    """

    def __init__(
        self,
        history: int,
        ttl: float | None = None,
        sink: Sink = NOWHERE,
        retention: Retention | None = None,
    ) -> None:
        self.history = history
        #: See :class:`Sink`.
        self.sink = sink
        #: Returns how many events of a channel to keep, and for how long
        #: (seconds, or ``None``); the extension's follows its namespaces.
        self.retention: Retention = retention or (lambda _: (history, ttl))
        #: See :data:`READ_BYTES`.
        self.read_bytes = READ_BYTES
        # channel -> member -> connections (the in-process presence).
        self._present: dict[str, dict[str, int]] = {}
        # channel -> when it was last closed, the oldest first.
        self._closed: collections.OrderedDict[str, float] = collections.OrderedDict()

    @abstractmethod
    def append(self, channel: str, event: Event, once: Once | None = None) -> Record:
        """Store ``event`` on ``channel`` with a new id and return it. The
        stored event is also delivered to every worker's listeners.

        :param once: an idempotency key and how long it holds: if an event
            was stored on ``channel`` with that key within the window, store
            nothing and return that one (with ``repeat`` set). A key is
            scoped to its channel: the same key on another channel stores
            another event.
        """

    @abstractmethod
    def head(self) -> Cursor:
        """Return the newest id assigned, on any channel (a cursor that
        resumes with the next event).
        """

    def head_for(self, channels: t.Sequence[str]) -> Cursor:
        """Return the cursor a new subscriber to ``channels`` starts from:
        every later event reaches it live, none before. It is on the bus and
        :meth:`listen` was called for each channel.
        """
        return self.head()

    @abstractmethod
    def read(
        self, channels: t.Sequence[str], after: Cursor, limit: int
    ) -> list[Record]:
        """Return the first ``limit`` stored events of ``channels`` after
        ``after``, in id order, and past the first no more than
        :attr:`read_bytes` of data and type (read about that much, however
        many channels: not ``limit`` of each).

        :raises CursorProblem: if ``after`` cannot be resumed from: another
            epoch, a key never assigned, or events after it no longer kept.
        """

    @abstractmethod
    def latest(
        self, channels: t.Sequence[str], count: int
    ) -> tuple[Cursor, list[Record]]:
        """Return the newest id and, read with it, the last ``count`` stored
        events of ``channels`` (in id order, across channels).
        """

    def close_channel(self, channel: str) -> None:
        """End the live streams of ``channel`` on every worker this backend
        reaches (here: this one), through its sink's ``revoke``, and remember
        when (see :meth:`closed_at`).
        """
        now = time.time()
        closed = self._closed
        closed[channel] = now
        closed.move_to_end(channel)
        while next(iter(closed.values())) < now - CLOSED_KEPT:
            closed.popitem(last=False)  # no token issued before it lives on
        self.sink.revoke(channel)

    def closed_at(self, channels: t.Sequence[str]) -> dict[str, float]:
        """When each of ``channels`` that was closed in the last
        :data:`CLOSED_KEPT` seconds was last closed (Unix time): a subscriber
        token issued before that admits it no more.
        """
        closed = self._closed
        return {channel: closed[channel] for channel in channels if channel in closed}

    def follow_closes(self) -> None:  # noqa: B027 - optional hook
        """From now on, hear every :meth:`close_channel` (through the
        sink's ``revoke``), whichever worker calls it: called before
        ``authorize`` runs, so a close while it runs is not missed.
        """

    def listen(self, channel: str) -> None:  # noqa: B027 - optional hook
        """A subscriber of ``channel`` is on this worker's bus and is about to
        read its history: from now on, deliver the channel's new events here
        (called for every subscriber; the first call does the work).
        """

    def unlisten(self, channel: str) -> None:  # noqa: B027 - optional hook
        """This worker has lost its last subscriber of ``channel``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and stop listeners."""

    def stats(self) -> dict[str, t.Any]:
        """Return backend figures for :meth:`EventStream.stats`."""
        return {}

    def report(self, worker: str, figures: dict[str, t.Any], ttl: float) -> None:  # noqa: B027 - optional hook
        """Share this worker's figures with ``flask eventstream stats`` for
        ``ttl`` seconds (a backend that reaches no other process keeps none).
        """

    def reports(self) -> list[dict[str, t.Any]]:
        """Return the figures every live worker shared with :meth:`report`."""
        return []

    def history_sizes(self) -> dict[str, int]:
        """Return the number of stored events of every channel."""
        return {}

    # -- presence: who is connected, by channel -------------------------
    #
    # A worker tells the backend how many connections each member (a field:
    # an opaque name) has on a channel in this worker; the backend adds up
    # every worker's and says when a member's total leaves or reaches zero.
    # This in-process version serves the memory backend: one worker.

    def presence_set(
        self, worker: str, channel: str, counts: t.Mapping[str, int], full: bool
    ) -> list[tuple[str, str]] | None:
        """Set ``worker``'s connections of ``channel`` by member (0 removes;
        with ``full`` a member left out is 0). Return the changes of the
        members' totals: ``("join", member)`` from zero, ``("leave",
        member)`` to zero; ``None`` if ``worker`` must call
        :meth:`presence_tick` first (its entries were lost).
        """
        table = self._present.setdefault(channel, {})
        wanted = dict(counts)
        if full:
            wanted = {member: 0 for member in table} | wanted
        changes = []
        for member, count in wanted.items():
            before = table.pop(member, 0)
            if count > 0:
                table[member] = count
            if (before > 0) != (count > 0):
                changes.append(("join" if count > 0 else "leave", member))
        if not table:
            del self._present[channel]
        return changes

    def presence_tick(
        self, worker: str, ttl: float
    ) -> tuple[bool, list[tuple[str, str]]]:
        """Keep ``worker``'s entries (``""``: none) for ``ttl`` more seconds,
        and remove those of workers that stopped renewing theirs. Return
        whether ``worker``'s own were lost (it must set them all again), and
        the ``(channel, member)`` whose total went to zero with them.
        """
        return False, []

    def presence_read(self, channel: str) -> dict[str, int]:
        """Return every member's connections of ``channel``, all workers'."""
        return dict(self._present.get(channel, {}))
