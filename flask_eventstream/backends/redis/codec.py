"""How events and ids are stored in Redis entries, both ways."""

from __future__ import annotations

import typing as t

from ...ids import format_id
from ...ids import Key
from ...ids import parse_key
from ...ids import Record
from ...wire import Event


def key_of(raw: bytes | str | None) -> Key:
    """The key of a stored id; ``(0, 0)`` for none."""
    if raw is None:
        return (0, 0)
    text = raw.decode() if isinstance(raw, bytes) else raw
    return parse_key(text) or (0, 0)


def record_of(
    channel: str, raw_id: bytes, fields: dict[bytes, bytes], epoch: str
) -> Record:
    """The record of one stream entry of ``channel``, in ``epoch``."""
    key = key_of(raw_id)
    event = fields.get(b"e")
    prev = fields.get(b"p")
    stored = Event(
        fields.get(b"d", b"").decode(),
        event.decode() if event is not None else None,
        format_id(key, epoch),
    )
    # Entries stored by earlier versions name no previous entry.
    return Record(channel, key, stored, key_of(prev) if prev is not None else None)


class Entry(t.NamedTuple):
    """A stored event as the listener receives it."""

    stream: bytes
    record: Record
