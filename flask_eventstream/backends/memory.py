"""The in-process backend: a ring buffer of history per channel.

It serves one process: a publish reaches the subscribers of the process that
made it. Use the Redis backend as soon as there is more than one worker.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
import typing as t

from ..ids import by_key
from ..ids import Cursor
from ..ids import CursorProblem
from ..ids import format_id
from ..ids import Key
from ..ids import new_epoch
from ..ids import newest
from ..ids import now_ms
from ..ids import Record
from ..ids import Run
from ..wire import Event
from .base import Backend
from .base import NOWHERE
from .base import Once
from .base import Retention
from .base import Sink
from .base import within

#: Idempotency keys kept at most (the oldest go first beyond it).
MAX_KEYS = 100_000


class _Channel:
    __slots__ = ("events", "trimmed")

    def __init__(self, history: int, trimmed: Key | None) -> None:
        self.events: collections.deque[Record] = collections.deque(maxlen=history)
        #: The key of the newest event pushed out of the history, if any; for
        #: a channel created after others were forgotten, the newest key
        #: forgotten (its own earlier history may have been among them).
        self.trimmed = trimmed


class MemoryBackend(Backend):
    """Keeps the last ``history`` events of each channel in this process.

    :param channels: channels whose history is kept
        (``EVENTSTREAM_HISTORY_CHANNELS``); publishing to one more forgets the
        history of the one published to least recently, so memory stays
        bounded however many channel names a site invents.
    :param sink: where this process's events go (see :class:`.Sink`).
    :param retention: how many events of a channel to keep (see
        :class:`.Backend`).
    """

    def __init__(
        self,
        history: int,
        *,
        channels: int = 10000,
        sink: Sink = NOWHERE,
        retention: Retention | None = None,
    ) -> None:
        super().__init__(history, sink=sink, retention=retention)
        self.max_channels = channels
        # Held while an id is assigned and the event stored and queued for
        # delivery; nothing inside waits, switches or calls out.
        self._lock = threading.Lock()
        # Runs stored but not yet delivered, in id order. One thread at a
        # time delivers them, outside the lock: threads publishing at once
        # still deliver in id order (a subscriber drops any id at or below
        # the last one it sent), and whatever a delivery calls may publish
        # again without deadlock (its event joins the queue).
        self._outbox: collections.deque[Run] = collections.deque()
        self._delivering = False
        # Least recently published first.
        self._channels: collections.OrderedDict[str, _Channel] = (
            collections.OrderedDict()
        )
        #: The newest key of any channel forgotten to keep within the cap.
        self._forgotten: Key | None = None
        #: This process's store: a cursor from another one gets a reset.
        self.epoch = new_epoch()
        self._last: Key = (now_ms(), 0)
        #: (channel, idempotency key) -> (when it expires, the event it
        #: stored), oldest first: every key of one app has the same window.
        #: A key is scoped to its channel: the same key on another channel is
        #: another event.
        self._once: collections.OrderedDict[tuple[str, str], tuple[float, Record]] = (
            collections.OrderedDict()
        )

    def append(self, channel: str, event: Event, once: Once | None = None) -> Record:
        with self._lock:
            if once is not None:
                first = self._repeat_of(channel, once)
                if first is not None:
                    return first
            now = now_ms()
            last = self._last
            key = (now, 0) if now > last[0] else (last[0], last[1] + 1)
            self._last = key
            stored = Event(event.data, event.event, format_id(key, self.epoch))
            channels = self._channels
            history = channels.get(channel)
            if history is None:
                if len(channels) >= self.max_channels:
                    _, oldest = channels.popitem(last=False)
                    if oldest.events:
                        newest = oldest.events[-1].key
                        self._forgotten = max(self._forgotten or newest, newest)
                history = channels[channel] = _Channel(
                    self.retention(channel)[0], self._forgotten
                )
            else:
                channels.move_to_end(channel)
            events = history.events
            record = Record(channel, key, stored, events[-1].key if events else (0, 0))
            if len(events) == events.maxlen and events:
                history.trimmed = events[0].key
            events.append(record)
            if once is not None:
                self._once[(channel, once.key)] = (
                    time.monotonic() + once.window,
                    record,
                )
            self._outbox.append(Run(channel, (record,)))
            if self._delivering:
                return record  # the thread delivering takes it in turn
            self._delivering = True
        self._deliver_queued()
        return record

    def _repeat_of(self, channel: str, once: Once) -> Record | None:
        now = time.monotonic()
        seen = self._once
        while seen:  # forget what expired (the oldest first)
            expires, _ = next(iter(seen.values()))
            if expires > now and len(seen) < MAX_KEYS:
                break
            seen.popitem(last=False)
        found = seen.get((channel, once.key))
        if found is None:
            return None
        first = found[1]
        repeat = Record(first.channel, first.key, first.event, first.prev)
        repeat.repeat = True
        return repeat

    def _deliver_queued(self) -> None:
        outbox = self._outbox
        try:
            # Publishers ready to run (requests publishing at once) queue
            # their events first; consecutive events of a channel then
            # reach each client in one write, as the Redis listener's do.
            time.sleep(0)
            while True:
                with self._lock:
                    if not outbox:
                        self._delivering = False
                        return
                    runs = list(outbox)
                    outbox.clear()
                for channel, group in itertools.groupby(runs, key=_channel_of):
                    records = [r for run in group for r in run.records]
                    self.sink.deliver(Run(channel, records))
        except BaseException:
            # The events are stored; hand the rest to the next publisher
            # rather than leave them queued for ever.
            with self._lock:
                self._delivering = False
            raise

    def head(self) -> Cursor:
        return Cursor(self._last, self.epoch)

    def read(
        self, channels: t.Sequence[str], cursor: Cursor, limit: int
    ) -> list[Record]:
        if cursor.epoch != self.epoch:
            raise CursorProblem(
                "epoch",
                "The cursor is from another process: the history it points"
                " into was kept in that process's memory.",
            )
        after = cursor.key
        if after > self._last:
            raise CursorProblem("unknown", "The cursor was never assigned here.")
        found: list[Record] = []
        with self._lock:
            for channel in channels:
                history = self._channels.get(channel)
                if history is None:
                    if self._forgotten is not None and after < self._forgotten:
                        raise CursorProblem(
                            "expired",
                            f"The history of channel {channel!r} may have been"
                            " forgotten (EVENTSTREAM_HISTORY_CHANNELS).",
                        )
                    continue
                if history.trimmed is not None and after < history.trimmed:
                    raise CursorProblem(
                        "expired",
                        f"Events of channel {channel!r} after the cursor are no"
                        " longer kept (EVENTSTREAM_HISTORY).",
                    )
                for record in reversed(history.events):
                    if record.key <= after:
                        break
                    found.append(record)
        found.sort(key=by_key)
        return within(found, limit, self.read_bytes)

    def latest(
        self, channels: t.Sequence[str], count: int
    ) -> tuple[Cursor, list[Record]]:
        found: list[Record] = []
        with self._lock:
            head = Cursor(self._last, self.epoch)
            for channel in channels:
                history = self._channels.get(channel)
                if history is not None:
                    found.extend(list(history.events)[-count:])
        return head, newest(found, count)

    def stats(self) -> dict[str, t.Any]:
        return {"backend": "memory", "history": self.history_sizes()}

    def history_sizes(self) -> dict[str, int]:
        return {name: len(c.events) for name, c in self._channels.items()}


def _channel_of(run: Run) -> str:
    return run.channel
