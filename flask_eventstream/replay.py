"""What a subscription sends first: the stored events after the client's
cursor, a page at a time, or one ``eventstream-reset`` when they cannot be
had. Every read is bounded: a page holds at most ``limit`` events (the
settings bound it in bytes too), and a backend reads no more than that.
"""

from __future__ import annotations

import json

from .backends.base import within
from .hub import Hub
from .ids import Cursor
from .ids import CursorProblem
from .ids import parse_id
from .ids import Record
from .ids import RESET_EVENT
from .wire import Event

#: The most characters of a cursor a reset echoes back.
MAX_ECHO = 64


class Replay:
    """The replay of one subscription, and where it has got to.

    :param hub: the app's live parts.
    :param channels: the subscription's channels.
    :param last_event_id: the client's cursor, or ``None``.
    """

    __slots__ = ("hub", "channels", "last_event_id", "position", "more", "_rewound")

    def __init__(
        self, hub: Hub, channels: tuple[str, ...], last_event_id: str | None
    ) -> None:
        self.hub = hub
        self.channels = channels
        self.last_event_id = last_event_id
        #: The last event sent (or the cursor to start after).
        self.position = Cursor((0, 0), "")
        #: Whether the last page was full: more may be stored after it.
        self.more = False
        #: The rewound events not sent yet: a rewind is read at once (its
        #: start is only known from the newest end) and sent a page at a time.
        self._rewound: list[Record] = []

    def start(
        self, *, live: bool, limit: int, rewind: int = 0
    ) -> tuple[list[Record], str | None]:
        """Return the first page and the id to announce to a client that came
        without a cursor (so that it resumes from here if it reconnects
        before any event arrives).

        :param live: the subscription is on the bus (a stream, a long-poll):
            it may start where this worker's live events begin.
        :param rewind: a client without a cursor first gets the last this
            many stored events, ``limit`` a page.
        """
        backend = self.hub.backend
        cursor = self.last_event_id
        if cursor is None and rewind > 0:
            head, records = backend.latest(self.channels, rewind)
            self.position = head  # what is older than the rewind is skipped
            self._rewound = records
            return self._rewind_page(limit), None if records else str(head)
        if cursor is None:
            head = backend.head_for(self.channels) if live else backend.head()
            self.position = head
            return [], str(head)
        parsed = parse_id(cursor)
        if parsed is None:
            return self._reset(
                CursorProblem("malformed", "The cursor is not an event id.")
            ), None
        self.position = parsed
        return self._read(limit), None

    def next_page(self, limit: int) -> list[Record]:
        """Return the next page after a full one; ``[]`` once caught up."""
        if not self.more:
            return []
        if self._rewound:
            return self._rewind_page(limit)
        return self._read(limit)

    def _rewind_page(self, limit: int) -> list[Record]:
        # Bounded in bytes as a read is: a poll's answer holds about a read.
        page = within(self._rewound, limit, self.hub.backend.read_bytes)
        self._rewound = self._rewound[len(page) :]
        self.more = bool(self._rewound)
        self.hub.count("replayed", len(page))
        return page

    def _read(self, limit: int) -> list[Record]:
        try:
            records = self.hub.backend.read(self.channels, self.position, limit)
        except CursorProblem as problem:
            return self._reset(problem)
        self.more = len(records) >= limit
        if records:
            self.position = Cursor(records[-1].key, self.position.epoch)
        self.hub.count("replayed", len(records))
        return records

    def _reset(self, problem: CursorProblem) -> list[Record]:
        hub = self.hub
        head = hub.backend.head()
        self.position = head
        self.more = False
        hub.count("resets")
        hub.logger.info(
            "Reset <Subscription %s> at cursor %r (%s): %s",
            ", ".join(self.channels),
            self.last_event_id,
            problem.reason,
            problem.detail,
        )
        data = json.dumps(
            {
                "reason": problem.reason,
                "detail": problem.detail,
                # Echoed for whoever debugs it, not whole: it may be anything.
                "cursor": (self.last_event_id or "")[:MAX_ECHO] or None,
            }
        )
        return [Record("", head.key, Event(data, RESET_EVENT, str(head)))]
