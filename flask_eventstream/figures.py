"""The shapes of the figures the extension hands out: :class:`Stats`,
:class:`Snapshot`, :class:`WorkerReport` and :class:`Presence`, typed dicts
(plain ``dict`` objects at run time, so they print as JSON). Exported by
:mod:`flask_eventstream`; this module is internal.
"""

from __future__ import annotations

import typing as t


class Presence(t.TypedDict):
    """Who is subscribed to a channel: what
    :meth:`~flask_eventstream.EventStream.presence` returns.

    .. versionadded:: 0.1
    """

    #: Open connections: each stream counts one, and a client that polls
    #: counts one for a poll timeout.
    count: int
    #: Named members (see :meth:`~flask_eventstream.EventStream.identify`)
    #: and their connections; anonymous subscribers are counted, not listed.
    members: dict[str, int]


class WorkerReport(t.TypedDict):
    """One worker's figures, as it reports them every few seconds while it
    holds streams.

    .. versionadded:: 0.1
    """

    #: The worker's name: ``host:pid``.
    worker: str
    #: Open subscriptions (streams and waiting long-polls).
    connections: int
    #: Open subscriptions per channel.
    channels: dict[str, int]
    #: Counters since the worker started, by name: ``published``,
    #: ``delivered``, ``dropped``, ``replayed``, ``resets``, ``refused``,
    #: ``revoked``, ``errors``, ``callback_errors``, ``gaps``.
    counters: dict[str, int]


class Stats(t.TypedDict, total=False):
    """This worker's figures: what :meth:`~flask_eventstream.EventStream.stats`
    returns. ``connections``, ``channels``, ``counters`` and ``backend`` are
    always there; the rest depends on the backend.

    .. versionadded:: 0.1
    """

    #: Open subscriptions (streams and waiting long-polls).
    connections: int
    #: Open subscriptions per channel.
    channels: dict[str, int]
    #: Counters since the worker started (see :class:`WorkerReport`).
    counters: dict[str, int]
    #: The backend's kind: ``"memory"`` or ``"redis"``.
    backend: str
    #: Stored events per channel (memory backend).
    history: dict[str, int]
    #: Channels this worker's listener follows (Redis backend).
    listening: int


class Snapshot(t.TypedDict):
    """A read-only copy of an app's figures, taken at once: what
    :meth:`~flask_eventstream.EventStream.snapshot` returns, and what the
    Prometheus exporter and ``flask eventstream stats`` read. Changing it
    changes nothing in the extension.

    .. versionadded:: 0.1
    """

    #: This worker's figures.
    worker: WorkerReport
    #: The backend's own figures in this worker: ``backend`` (its kind,
    #: ``"memory"`` or ``"redis"``) and the keys :class:`Stats` lists for it.
    backend: dict[str, t.Any]
    #: The latest report of every live worker that shares one (Redis: every
    #: worker of every host), or ``None`` unless asked for with
    #: ``everywhere=True``.
    workers: list[WorkerReport] | None
    #: Stored events per channel, read from the backend, or ``None`` unless
    #: asked for with ``everywhere=True``.
    history: dict[str, int] | None
