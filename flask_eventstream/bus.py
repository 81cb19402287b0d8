"""Fan-out inside one worker: a blinker signal per channel.

Each subscription connects its receiver to the signal of each of its
channels, so a publish calls only the receivers of that channel, however many
other channels and clients the worker serves. A channel's signal is dropped
with its last receiver: channel names that come and go (one per user, say)
leave nothing behind.

One signal per channel rather than one signal with the channel as sender:
blinker keeps a receiver connected to one sender until it is disconnected
from all of them, and that costs a pass over every sender ever seen.
"""

from __future__ import annotations

import logging
import typing as t

from blinker import Signal

from .ids import Run

logger = logging.getLogger("flask_eventstream")

#: What a subscription connects: called with each run of the channel's events.
Receiver = t.Callable[[Run], object]


class Bus:
    """One per app and worker; the backend's :meth:`deliver` feeds it."""

    def __init__(self) -> None:
        # Anonymous signals, not named ones: two apps in one process must not
        # see each other's channels.
        self._signals: dict[str, Signal] = {}

    def deliver(self, run: Run) -> None:
        signal = self._signals.get(run.channel)
        if signal is not None:
            # Not signal.send, which checks every receiver for a coroutine
            # function and looks each one up again: costly in a fan-out.
            # Every receiver here is connected strongly, to any sender; the
            # copy lets one disconnect itself (an overflow) meanwhile.
            receivers = t.cast("list[Receiver]", list(signal.receivers.values()))
            for receiver in receivers:
                try:
                    receiver(run)
                except Exception:
                    # A receiver must not raise; if one does, the others of
                    # the channel still get the run.
                    logger.exception("A receiver of %r failed.", run.channel)

    def connect(self, channel: str, receiver: Receiver) -> None:
        """Connect ``receiver`` to ``channel``."""
        signal = self._signals.get(channel)
        if signal is None:
            signal = self._signals[channel] = Signal(channel)
        signal.connect(receiver, weak=False)

    def disconnect(self, channel: str, receiver: Receiver) -> bool:
        """Disconnect ``receiver``; return whether ``channel`` has no receiver
        left in this worker.
        """
        signal = self._signals.get(channel)
        if signal is None:
            return True
        signal.disconnect(receiver)
        if signal.receivers:
            return False
        del self._signals[channel]
        return True

    def receivers(self, channel: str) -> list[Receiver]:
        """Return the receivers connected to ``channel``."""
        signal = self._signals.get(channel)
        return [] if signal is None else list(signal.receivers_for(channel))

    def subscribers(self) -> dict[str, int]:
        """Return the number of live subscriptions of each channel."""
        return {name: len(s.receivers) for name, s in self._signals.items()}
