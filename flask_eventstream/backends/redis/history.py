"""What a read of a channel's stored history may have missed: entries trimmed
or expired after the client's cursor. In doubt, a reset; never a silent gap.
"""

from __future__ import annotations

import typing as t

from ...ids import CursorProblem
from ...ids import Key
from .codec import key_of


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
