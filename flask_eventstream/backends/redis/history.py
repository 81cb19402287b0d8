"""Reading stored history: what a client's cursor may have missed (entries
trimmed or expired after it; in doubt, a reset, never a silent gap), and what
a listener missed while its connection was down.
"""

from __future__ import annotations

import typing as t

import redis

from ...ids import CursorProblem
from ...ids import format_key
from ...ids import Key
from .codec import Entry
from .codec import key_of
from .codec import record_of


def check_kept(
    channel: str, after: Key, info: t.Any, entries: t.Any, ttl: float | None
) -> None:
    """Raise if events of ``channel`` after ``after`` may be gone."""
    # Trimming keeps no record of what it removed, only that it did:
    # a cursor before the first entry kept may have missed some. (A
    # reset when in doubt, never a silent gap; a Redis too old to count
    # the entries added is in doubt.)
    length = info["length"]
    trimmed = info.get("entries-added", length + 1) > length
    first_entry = info.get("first-entry")
    first = key_of(
        info.get("recorded-first-entry-id") or (first_entry[0] if first_entry else None)
    )
    gone = trimmed and after < first
    # The first entry after the cursor says which one came before it on
    # the channel: if the client has not seen that one, it is gone.
    if entries and key_of(entries[0][1].get(b"p")) > after:
        gone = True
    # A stream that expired (EVENTSTREAM_HISTORY_TTL) and was made anew
    # by a later event looks untrimmed: the expiry took a silence of
    # the TTL before its first entry, so older cursors may have missed.
    if ttl and not trimmed and after < first:
        gone = gone or after[0] < first[0] - ttl * 1000
    if gone:
        raise CursorProblem(
            "expired",
            f"Events of channel {channel!r} after the cursor are no"
            " longer kept (EVENTSTREAM_HISTORY or EVENTSTREAM_HISTORY_TTL).",
        )


def read_after(
    client: redis.Redis,
    epoch_key: str,
    cursors: dict[bytes, Key],
    channels: t.Mapping[bytes, str],
    count: int,
) -> tuple[str, list[Entry], Key | None]:
    """Read the entries of each stream after its cursor, at most ``count``
    of each, in one transaction: the store's epoch, the entries in id order,
    and the horizon (``None`` if every stream was read to its end).
    """
    with client.pipeline(transaction=True) as pipe:
        pipe.get(epoch_key)
        for key, cursor in cursors.items():
            pipe.xrange(key, min="(" + format_key(cursor), count=count)
        raw_epoch, *replies = pipe.execute()
    epoch = raw_epoch.decode() if raw_epoch is not None else ""
    entries = []
    horizon: Key | None = None
    for key, found in zip(cursors, replies, strict=True):
        channel = channels.get(key)
        if channel is None or not found:
            continue
        if len(found) >= count:
            last = key_of(found[-1][0])
            horizon = last if horizon is None else min(horizon, last)
        for id, fields in found:
            entries.append(Entry(key, record_of(channel, id, fields, epoch)))
    entries.sort(key=lambda entry: entry.record.key)
    if horizon is not None:
        # Entries of other streams past a cut one wait for the next read,
        # so events reach subscribers in id order.
        entries = [entry for entry in entries if entry.record.key <= horizon]
    return epoch, entries, horizon
