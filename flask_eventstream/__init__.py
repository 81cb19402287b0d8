"""Server-Sent Events for Flask, resumable, with a polling fallback and
memory or Redis fan-out.

The public API is exactly what ``docs/api.rst`` lists: the names of this
module's ``__all__``, and the modules :mod:`flask_eventstream.signals`,
:mod:`flask_eventstream.testing`, :mod:`flask_eventstream.client`,
:mod:`flask_eventstream.metrics` and :mod:`flask_eventstream.gunicorn`. Every
other module of the package is internal and may change in any release,
whatever its name; import from those.
"""

from __future__ import annotations

from . import signals as signals
from .errors import BackendUnavailable as BackendUnavailable
from .errors import EventStreamError as EventStreamError
from .errors import EventTooLarge as EventTooLarge
from .errors import PublishError as PublishError
from .errors import PublishNotStored as PublishNotStored
from .errors import PublishOutcomeUnknown as PublishOutcomeUnknown
from .errors import StreamRefused as StreamRefused
from .extension import EventStream as EventStream
from .figures import Presence as Presence
from .figures import Snapshot as Snapshot
from .figures import Stats as Stats
from .figures import WorkerReport as WorkerReport
from .http import stream as stream
from .subscription import Subscription as Subscription
from .wire import Event as Event
from .wire import Published as Published

__version__ = "0.1.0.dev0"

__all__ = [
    "BackendUnavailable",
    "Event",
    "EventStream",
    "EventStreamError",
    "EventTooLarge",
    "Presence",
    "PublishError",
    "PublishNotStored",
    "PublishOutcomeUnknown",
    "Published",
    "Snapshot",
    "Stats",
    "StreamRefused",
    "Subscription",
    "WorkerReport",
    "signals",
    "stream",
]
