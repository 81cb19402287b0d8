"""Fan-out inside one worker: a blinker signal whose sender is the channel.

Every subscription connects its receiver once per channel, so a publish calls
only the receivers of that channel, however many other channels and clients
the worker serves.
"""

from __future__ import annotations

import typing as t

from blinker import Signal

from .backends.base import Record

#: What a subscription connects: called with the channel and ``record=``.
Receiver = t.Callable[..., None]


class Bus:
    """One per app and worker; the backend's :meth:`deliver` feeds it."""

    def __init__(self) -> None:
        # An anonymous signal, not a named one: two apps in one process
        # must not see each other's channels.
        self._signal = Signal("eventstream-bus")
        self._counts: dict[str, int] = {}

    def deliver(self, record: Record) -> None:
        self._signal.send(record.channel, record=record)

    def connect(self, channel: str, receiver: Receiver) -> None:
        """Connect ``receiver`` to ``channel``."""
        self._signal.connect(receiver, sender=channel, weak=False)
        self._counts[channel] = self._counts.get(channel, 0) + 1

    def disconnect(self, channel: str, receiver: Receiver) -> bool:
        """Disconnect ``receiver``; return whether ``channel`` has no receiver
        left in this worker.
        """
        self._signal.disconnect(receiver, sender=channel)
        count = self._counts.get(channel, 0) - 1
        if count > 0:
            self._counts[channel] = count
            return False
        self._counts.pop(channel, None)
        return True

    def receivers(self, channel: str) -> list[Receiver]:
        """Return the receivers connected to ``channel``."""
        return list(self._signal.receivers_for(channel))

    def subscribers(self) -> dict[str, int]:
        """Return the number of live subscriptions of each channel."""
        return dict(self._counts)
