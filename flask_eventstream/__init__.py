"""Server-Sent Events for Flask, resumable, with a polling fallback and
memory or Redis fan-out.
"""

from __future__ import annotations

from . import signals as signals
from .errors import EventStreamError as EventStreamError
from .errors import PublishError as PublishError
from .errors import PublishNotStored as PublishNotStored
from .errors import PublishOutcomeUnknown as PublishOutcomeUnknown
from .extension import EventStream as EventStream
from .http import stream as stream
from .subscription import Subscription as Subscription
from .wire import Event as Event

__version__ = "0.1.0.dev0"

__all__ = [
    "Event",
    "EventStream",
    "EventStreamError",
    "PublishError",
    "PublishNotStored",
    "PublishOutcomeUnknown",
    "Subscription",
    "signals",
    "stream",
]
