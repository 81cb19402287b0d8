"""The Redis backend: history in Redis Streams, one listener per worker.

Each channel is a stream, ``{prefix}stream:{channel}``, trimmed to about
``EVENTSTREAM_HISTORY`` entries (:mod:`.store`) and published as it is
stored; each worker subscribes to the channels its clients listen to
(:mod:`.listener`), and reads the streams only to catch up after a lost
connection. :mod:`.connect` follows a Sentinel-named primary. A worker holds
a constant number of connections, whatever its client count: one for its
listener and a small bounded pool for publishing and replay.
"""

from __future__ import annotations

try:
    import redis as _redis  # noqa: F401 - the check below, nothing else
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "EVENTSTREAM_BACKEND names a Redis URL, but the 'redis' package is not"
        " installed. Install it with: pip install 'flask-eventstream[redis]'"
    ) from error

from .store import RedisBackend

__all__ = ["RedisBackend"]
