"""The Redis backend: history in Redis Streams, one listener per worker.

Each channel is a stream, ``{prefix}stream:{channel}``, trimmed to about
``EVENTSTREAM_HISTORY`` entries and published as it is stored; each worker
subscribes to the channels its clients listen to, and reads the streams only
to catch up after a lost connection. A worker holds a constant number of
connections, whatever its client count: one for its listener and a small
bounded pool (``EVENTSTREAM_REDIS_POOL_SIZE``) for publishing and replay.

Which object owns what (each made with its inputs, none calls back):

- :mod:`.backend`: ``RedisBackend``, the :class:`.Backend`; composes the rest.
- :mod:`.store`: ``Store``, appends, reads, the head and the pool.
- :mod:`.listener`: ``Listener``, the worker's one pub/sub connection:
  receives and delivers to the sink.
- :mod:`.recovery`: ``Recovery``, the checks of the store and the catch-up
  after a gap.
- :mod:`.own`: ``OwnEvents``, this worker's own appends, delivered at once.
- :mod:`.state`: ``ListenerState``, where this worker's events stand, shared
  by the listener, the catch-up and the own events.
- :mod:`.presence`: ``RedisPresence``, every worker's connections by member.
- :mod:`.scripts`: the Lua scripts; the append script's arguments, reply and
  message, typed, defined once.
- :mod:`.batch`: ``Batcher``, concurrent appends in one pipeline.
- :mod:`.codec`: stored entries to records.
- :mod:`.history`: what a cursor may have missed; reads after cursors.
- :mod:`.keys`: every key the backend writes, and ``Keys`` that names them.
- :mod:`.connect`: ``Connector``, one server or a Sentinel-named primary.
"""

from __future__ import annotations

try:
    import redis as _redis  # noqa: F401 - the check below, nothing else
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "EVENTSTREAM_BACKEND names a Redis URL, but the 'redis' package is not"
        " installed. Install it with: pip install 'flask-eventstream[redis]'"
    ) from error

from .backend import RedisBackend

__all__ = ["RedisBackend"]
