"""Events this worker stored itself, delivered to its own clients at once.

Every event reaches a worker through its listener, in id order: the append
script publishes it, Redis sends it back, the listener reads and parses it.
For an event published by this worker, that is one more hop than needed
(the publisher already holds the event and its id when the script returns),
and it is most of what the Redis backend's latency adds to the memory one.

So each pipeline of appends (see the batch module) is delivered by the
caller that sent it as soon as its publishers have their replies, as far as
nothing can come before: the listener has delivered every entry up to the
one before the first (the script returns that key), is not in the middle of
delivering more, and reads the same store; and each next entry follows the
one before it. Consecutive entries of one channel go to its clients as one
run, as the listener would send them. The listener then finds those entries
behind their streams' cursors and skips them, as it skips one read twice
around a reconnect. What the shortcut cannot deliver (another process
published in between, the listener lags or is reconnecting, a new epoch, a
revocation) it leaves to the listener, as before: it never changes the
order a client sees.
"""

from __future__ import annotations

import typing as t

from ...ids import format_id
from ...ids import Record
from ...ids import Run
from ...wire import Event
from ..base import Deliver
from .batch import Sent
from .scripts import Repeated
from .state import ListenerState


class OwnEvents:
    """Delivers this worker's own appends to its clients, as far as nothing
    can come before them.

    :param state: where this worker's events stand (shared with its listener).
    :param deliver: the worker's sink for events (see :class:`.Sink`).
    """

    def __init__(self, state: ListenerState, deliver: Deliver) -> None:
        self.state = state
        self.deliver = deliver

    def deliver_own(self, sent: t.Sequence[Sent]) -> None:
        """Deliver what one pipeline of the append script stored, in id
        order, as far as nothing can come before it.
        """
        state = self.state
        runs: list[list[Record]] = []
        with state.delivering:
            with state.lock:
                if state.dispatching:
                    return
                for call, stored in sent:
                    if isinstance(stored, Repeated):
                        continue  # nothing stored
                    key, epoch, before, prev = stored
                    if before != state.seen or epoch != state.epoch:
                        break
                    stream = call.stream_key()
                    channel = state.channels.get(stream)
                    if channel is not None:
                        cursor = state.cursors.get(stream)
                        if stream == state.control or cursor is None or prev > cursor:
                            break  # the listener revokes; being set up; a gap
                        # Before delivering: a client that joins meanwhile
                        # starts after it (see RedisBackend.head_for).
                        state.cursors[stream] = key
                        event = Event(
                            call.data, call.event or None, format_id(key, epoch)
                        )
                        record = Record(channel, key, event, prev)
                        if runs and runs[-1][0].channel == channel:
                            runs[-1].append(record)
                        else:
                            runs.append([record])
                    # (A channel not listened to here: nothing to deliver.)
                    state.seen, state.seen_stream = key, stream
            # Outside the state's lock, as the listener delivers.
            for records in runs:
                self.deliver(Run(records[0].channel, records))
