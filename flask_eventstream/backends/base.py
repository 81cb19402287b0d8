"""What every backend provides: ids, history and delivery to this worker."""

from __future__ import annotations

import typing as t
from abc import ABC
from abc import abstractmethod

from ..ids import Key
from ..ids import Record
from ..ids import Run
from ..wire import Event

#: Called by a backend with the events that reach this worker, a run at a time.
Deliver = t.Callable[[Run], None]
#: Called by a backend when a channel's streams must end on this worker.
Revoke = t.Callable[[str], None]


class Backend(ABC):
    """Stores events with ids and history, and delivers them to this worker.

    The extension sets :attr:`deliver` before the first publish; a backend
    calls it with every event that reaches this worker, in id order, in runs
    of one or more events of one channel. It
    calls :attr:`revoke` on every worker for each :meth:`close_channel`.
    """

    deliver: Deliver
    revoke: Revoke

    def __init__(self, history: int) -> None:
        self.history = history
        self.deliver = _nowhere
        self.revoke = _nowhere

    @abstractmethod
    def append(self, channel: str, event: Event) -> Record:
        """Store ``event`` on ``channel`` with a new id and return it. The
        stored event is also delivered to every worker's listeners.
        """

    @abstractmethod
    def head(self) -> Key:
        """Return the newest id assigned, on any channel (a cursor that
        resumes with the next event).
        """

    def head_for(self, channels: t.Sequence[str]) -> Key:
        """Return the cursor a new subscriber to ``channels`` starts from:
        every later event reaches it live, none before. It is on the bus and
        :meth:`listen` was called for each channel.
        """
        return self.head()

    @abstractmethod
    def read(self, channels: t.Sequence[str], after: Key) -> list[Record]:
        """Return the stored events of ``channels`` after ``after``, in id
        order.

        :raises CursorProblem: if ``after`` cannot be resumed from.
        """

    def close_channel(self, channel: str) -> None:
        """End the live streams of ``channel`` on every worker this backend
        reaches (here: this one), through :attr:`revoke`.
        """
        self.revoke(channel)

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


def _nowhere(_: object) -> None:
    return None
