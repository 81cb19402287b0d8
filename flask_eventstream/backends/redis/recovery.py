"""What the listener does when it may have missed something: it never
skips silently.

Each message names the entry before it on its channel. When the connection
breaks (Redis restarted, a failover, the worker too slow for Redis's pub/sub
buffer), the listener subscribes again and reads what it missed from the
streams, where an entry whose predecessor it never read means entries were
trimmed meanwhile: that channel's local streams end (their clients resume
from history, or get a reset). A gap in the control stream may have lost a
revocation: every local stream ends, so every client passes ``authorize``
again. A new store epoch (Redis emptied, or a failover that lost writes this
worker saw) ends them all too.
"""

from __future__ import annotations

import logging
import typing as t

from ...ids import format_key
from ...ids import Key
from ...ids import Record
from ..base import Lost
from .codec import Entry
from .codec import key_of
from .history import read_after
from .state import ListenerState
from .store import Store

logger = logging.getLogger("flask_eventstream")

#: Most entries read per stream per catch-up read, and most messages the
#: listener takes from its connection at once.
COUNT = 1000


class Recovery:
    """The listener's checks of the store and its catch-up after a gap.

    :param store: the store, for its head, its epoch and the streams.
    :param state: where this worker's events stand (shared with its listener).
    :param lost: the worker's sink for what it may have missed (see
        :class:`.Sink`).
    """

    def __init__(self, store: Store, state: ListenerState, lost: Lost) -> None:
        self.store = store
        self.client = store.client
        self.state = state
        self.lost = lost

    def check_store(self, reconnected: bool = False) -> None:
        """While quiet, and after a reconnect: a store emptied, or one that
        lost what this worker saw, shows within the listener's idle check.
        """
        state = self.state
        # What was known before the read. The first listen names the store's
        # epoch meanwhile, and a read from before that names none. And a
        # publisher of this worker advances ``seen`` meanwhile (see the own
        # module), past the newest key this read found: only a store that
        # is behind what was seen before the read has lost writes.
        with state.lock:
            known, seen, seen_stream = state.epoch, state.seen, state.seen_stream
        if known is None:
            return  # nothing to compare with yet
        last, epoch = self.store.newest()
        if epoch is not None and epoch == known:
            behind = last < seen
            gone = not behind and reconnected and self.seen_lost(seen, seen_stream)
            if behind or gone:
                # Either is a loss: the newest key only grows otherwise, and
                # it was read after ``seen``. So the new epoch is forced, even
                # if new writes take the store past ``seen`` meanwhile.
                epoch = self.store.renew_epoch(epoch, seen, True) or None
                if epoch != known:
                    logger.error(
                        "The Redis store lost events this worker had seen (up"
                        " to %s): a failover to a replica that never got them,"
                        " or a restart from an old snapshot. It has a new epoch"
                        " now: clients resume with a reset, not a gap.",
                        format_key(seen),
                    )
        if epoch != known:
            self.new_epoch(epoch)

    def seen_lost(self, seen: Key, stream: bytes | None) -> bool:
        """Whether entry ``seen`` (the newest this listener received, of
        ``stream``) is gone from its stream, and not by trimming: the store
        lost writes, even if new ones have since taken the sequence past it.
        (A replica holds a prefix of its primary's writes: if that entry is
        there, all it saw is.)
        """
        if stream is None:
            return False
        at = format_key(seen)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.xrange(stream, min=at, max=at)
            pipe.xinfo_stream(stream)
            found, info = pipe.execute(raise_on_error=False)
        if found or isinstance(found, Exception) or isinstance(info, Exception):
            return False  # there; or the stream expired (a quiet channel)
        # Trimming takes the oldest first: an older entry kept means this one
        # was not trimmed (nor deleted, as far as Redis counts).
        first_entry = info.get("first-entry")
        first = key_of(
            info.get("recorded-first-entry-id")
            or (first_entry[0] if first_entry else None)
        )
        deleted = key_of(info.get("max-deleted-entry-id"))
        return bool(first_entry) and first < seen and deleted < seen

    def catch_up(self) -> t.Iterator[list[Entry]]:
        """Read from the streams what the listener missed: yields entries in
        id order, a read at a time, for the listener to deliver before the
        next read.
        """
        state = self.state
        epoch = state.epoch
        self.check_store(reconnected=True)
        if epoch != state.epoch:
            return  # started over from the new store's head
        while True:
            with state.lock:
                cursors = dict(state.cursors)
            if not cursors:
                self.check_store()
                return
            epoch, entries, horizon = read_after(
                self.client, self.store.keys.epoch, cursors, state.channels, COUNT
            )
            self.check_store()
            if epoch != state.epoch:
                return  # check_store started over from the new store's head
            yield entries
            if horizon is None:
                return

    def new_epoch(self, epoch: str | None) -> None:
        """The store is not the one the listener read: end every local
        stream, and go on from the new store's head.
        """
        state = self.state
        logger.warning(
            "The Redis store changed (epoch %r, was %r): it was emptied,"
            " restarted without persistence, replaced, or failed over to a"
            " replica that lacks writes this worker saw; ending this worker's"
            " streams so their clients resume or reset.",
            epoch,
            state.epoch,
        )
        # The new head first, then the streams end: a client that comes back
        # (reset to a head of its own) once they ended read that head after
        # this one, so every event after it reaches the client from here. The
        # other way round, one that came back between the two reads started
        # below this cursor, and the events in between, skipped here, ended
        # it as lagged. Meanwhile this worker's publishers leave their events
        # to the listener (see the own module): none reaches a stream of the
        # old epoch before it ends.
        with state.lock:
            state.dispatching = True
        try:
            head = self.store.head()  # names an epoch if the store has none
            with state.lock:
                state.epoch = head.epoch
                state.seen = head.key
                state.seen_stream = None
                for key in state.cursors:
                    state.cursors[key] = head.key
            self.lost(None, "epoch")  # user code may run: no lock held
        finally:
            with state.lock:
                state.dispatching = False

    def missed(self, stream: bytes, cursor: Key, first: Record) -> None:
        """Call ``lost`` if ``first`` does not follow the last entry the
        listener read from ``stream``: entries between were trimmed unread.
        """
        if first.prev is None or first.prev <= cursor:
            return
        if stream == self.state.control:
            logger.warning(
                "This worker missed control messages (revocations) while it"
                " lagged; ending all its streams so every client is authorized"
                " again."
            )
            self.lost(None, "control")
        else:
            logger.warning(
                "This worker missed events of %r while it lagged (trimmed"
                " before it read them); ending its streams so their clients"
                " resume from history or reset.",
                first.channel,
            )
            self.lost(first.channel, "lagged")
