"""Ids, cursors and the stored record: the core types every layer shares.

Ids have the form ``"<milliseconds>-<sequence>"``, the same form as Redis
stream ids. One backend hands out a single increasing sequence of ids across
all its channels, so one id is a complete cursor even for a subscription to
several channels: everything after it, on every channel, is what the client
has not seen. The millisecond part comes from the clock, so a cursor kept from
an earlier process is older than anything a new process assigns and never
hides new events.
"""

from __future__ import annotations

import re
import time
import typing as t

from .wire import Event
from .wire import frame_chunk

#: The event type sent when a cursor cannot be resumed from.
RESET_EVENT = "eventstream-reset"

#: An id in comparable form: ``(milliseconds, sequence)``.
Key = tuple[int, int]

_ID = re.compile(r"\A(\d{1,20})-(\d{1,20})\Z")


def parse_id(value: str) -> Key | None:
    """Return the key of an id string, or ``None`` if it is not one."""
    match = _ID.match(value)
    if match is None:
        return None
    return int(match[1]), int(match[2])


def format_id(key: Key) -> str:
    return f"{key[0]}-{key[1]}"


def now_ms() -> int:
    """The clock that the millisecond part of an id comes from."""
    return time.time_ns() // 1_000_000


def by_key(record: Record) -> Key:
    """Sort key: a record's place in the id sequence."""
    return record.key


class Record:
    """A stored event as it travels inside a worker: its channel, its key for
    ordering and de-duplication, and the event whose bytes every client shares.
    """

    __slots__ = ("channel", "key", "event")

    def __init__(self, channel: str, key: Key, event: Event) -> None:
        self.channel = channel
        self.key = key
        self.event = event

    def __repr__(self) -> str:
        return f"Record({self.channel!r}, {format_id(self.key)!r}, {self.event!r})"


class Run:
    """Consecutive records of one channel, in id order, delivered together.

    A backend that receives several events at once (the Redis listener, under
    a burst) hands them to the worker's clients as one run: a client waiting
    with nothing queued gets them in one write, and the joined bytes are built
    once for all clients.
    """

    __slots__ = ("channel", "records", "first", "last", "_encoded", "_chunk")

    def __init__(self, channel: str, records: t.Sequence[Record]) -> None:
        self.channel = channel
        self.records = records
        #: The keys of the first and the last record.
        self.first = records[0].key
        self.last = records[-1].key
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

    ``"malformed"``: not an id; ``"unknown"``: never assigned by this backend
    (another process's memory, a flushed Redis, or a future id);
    ``"expired"``: older than the history still kept for a channel.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
