"""Ids, cursors and the stored record: the core types every layer shares.

An event's id has the form ``"<milliseconds>-<sequence>-<epoch>"``. The
first two parts are its *key*, the same form as a Redis stream id: one
backend hands out a single increasing sequence of keys across all its
channels, so one id is a complete cursor even for a subscription to several
channels: everything after it, on every channel, is what the client has not
seen. The *epoch* names the store's incarnation (a memory backend's process,
a Redis database since it was last emptied): a cursor from another epoch
points into a history that is gone, and gets a reset, never a silent jump.
"""

from __future__ import annotations

import re
import secrets
import time
import typing as t

from .wire import Event
from .wire import frame_chunk

#: The event type sent when a cursor cannot be resumed from.
RESET_EVENT = "eventstream-reset"

#: An id's place in the sequence: ``(milliseconds, sequence)``.
Key = tuple[int, int]

#: The largest part of a key: Redis stream ids are two unsigned 64-bit ints.
MAX_PART = 2**64 - 1

_KEY = re.compile(r"\A(\d{1,20})-(\d{1,20})\Z")
_ID = re.compile(r"\A(\d{1,20})-(\d{1,20})(?:-([0-9a-z]{1,16}))?\Z")


class Cursor(t.NamedTuple):
    """Where a client is: the key of the last event it has, in an epoch."""

    key: Key
    epoch: str

    def __str__(self) -> str:
        return format_id(self.key, self.epoch)


def parse_key(value: str) -> Key | None:
    """Return the key of ``"<ms>-<seq>"``, or ``None`` if it is not one."""
    match = _KEY.match(value)
    if match is None:
        return None
    key = int(match[1]), int(match[2])
    return key if key[0] <= MAX_PART and key[1] <= MAX_PART else None


def format_key(key: Key) -> str:
    return f"{key[0]}-{key[1]}"


def parse_id(value: str) -> Cursor | None:
    """Return the cursor an event id names, or ``None`` if it is not an id.

    An id without an epoch (the form of earlier versions) has the epoch
    ``""``, which no store has: it resumes with a reset.
    """
    match = _ID.match(value)
    if match is None:
        return None
    key = int(match[1]), int(match[2])
    if key[0] > MAX_PART or key[1] > MAX_PART:
        return None
    return Cursor(key, match[3] or "")


def format_id(key: Key, epoch: str) -> str:
    return f"{key[0]}-{key[1]}-{epoch}"


def new_epoch() -> str:
    """A name for a new store incarnation: the clock in microseconds and a
    random part, base 36 (unique however the clock was set).
    """
    return _base36(time.time_ns() // 1000 % 36**9) + _base36(
        secrets.randbelow(36**4)
    ).rjust(4, "0")


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
        if not number:
            return digits


def now_ms() -> int:
    """The clock that the millisecond part of an id comes from."""
    return time.time_ns() // 1_000_000


def by_key(record: Record) -> Key:
    """Sort key: a record's place in the id sequence."""
    return record.key


def newest(records: list[Record], count: int) -> list[Record]:
    """The last ``count`` of ``records`` in id order (all of them if fewer
    are there): what a rewind of ``count`` sends.
    """
    records.sort(key=by_key)
    return records[-count:] if count > 0 else []


class Record:
    """A stored event as it travels inside a worker: its channel, its key for
    ordering and de-duplication, and the event whose bytes every client shares.
    """

    __slots__ = ("channel", "key", "event", "prev", "repeat")

    def __init__(
        self, channel: str, key: Key, event: Event, prev: Key | None = None
    ) -> None:
        self.channel = channel
        self.key = key
        self.event = event
        #: The key of the event before it on its channel (``(0, 0)`` for the
        #: first), where the backend knows it: a reader that has not seen
        #: that one has missed something.
        self.prev = prev
        #: Whether ``publish`` was a repeat of an earlier one (its
        #: idempotency key): this is that first event, and nothing was stored.
        self.repeat = False

    def __repr__(self) -> str:
        return f"Record({self.channel!r}, {format_key(self.key)!r}, {self.event!r})"


class Run:
    """Consecutive records of one channel, in id order, delivered together.

    A backend that receives several events at once (the Redis listener, under
    a burst) hands them to the worker's clients as one run: a client waiting
    with nothing queued gets them in one write, and the joined bytes are built
    once for all clients.
    """

    __slots__ = ("channel", "records", "first", "last", "prev", "_encoded", "_chunk")

    def __init__(self, channel: str, records: t.Sequence[Record]) -> None:
        self.channel = channel
        self.records = records
        #: The keys of the first and the last record.
        self.first = records[0].key
        self.last = records[-1].key
        #: The key of the event before the run on its channel, if known.
        self.prev = records[0].prev
        self._encoded: bytes | None = None
        self._chunk: bytes | None = None

    def encode(self) -> bytes:
        """Return the bytes of every event of the run, one after the other."""
        if len(self.records) == 1:
            return self.records[0].event.encode()
        encoded = self._encoded
        if encoded is None:
            encoded = self._encoded = b"".join(
                record.event.encode() for record in self.records
            )
        return encoded

    def encode_chunk(self) -> bytes:
        """Return :meth:`encode` framed as one HTTP/1.1 chunk."""
        if len(self.records) == 1:
            return self.records[0].event.encode_chunk()
        chunk = self._chunk
        if chunk is None:
            chunk = self._chunk = frame_chunk(self.encode())
        return chunk

    def after(self, key: Key) -> Run | None:
        """Return the run of the records after ``key``, or ``None`` if none is."""
        if self.first > key:
            return self
        if self.last <= key:
            return None
        return Run(self.channel, [r for r in self.records if r.key > key])

    def __repr__(self) -> str:
        return f"Run({self.channel!r}, {len(self.records)} records)"


class CursorProblem(Exception):
    """A cursor that cannot be resumed from; ``reason`` says why.

    ``"malformed"``: not an id; ``"epoch"``: from another incarnation of the
    store (another process's memory, a flushed or restarted Redis);
    ``"unknown"``: never assigned by this store (a future id);
    ``"expired"``: older than the history still kept for a channel.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
