"""How events and ids are stored in Redis entries, both ways."""

from __future__ import annotations

from ...ids import Key
from ...ids import parse_id
from ...ids import Record
from ...wire import Event


def key_of(raw: bytes | str | None) -> Key:
    """The key of a stored id; ``(0, 0)`` for none."""
    if raw is None:
        return (0, 0)
    text = raw.decode() if isinstance(raw, bytes) else raw
    return parse_id(text) or (0, 0)


def record_of(channel: str, raw_id: bytes, fields: dict[bytes, bytes]) -> Record:
    """The record of one stream entry of ``channel``."""
    id = raw_id.decode()
    event = fields.get(b"e")
    stored = Event(
        fields.get(b"d", b"").decode(),
        event.decode() if event is not None else None,
        id,
    )
    return Record(channel, key_of(raw_id), stored)
