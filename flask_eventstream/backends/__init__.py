"""Backends store events with ids and history and bring them to every worker.

``EVENTSTREAM_BACKEND`` chooses one: ``"memory"`` (one process) or a Redis URL
(``redis://``, ``rediss://``, ``unix://``, or ``redis+sentinel://`` for a
primary that Redis Sentinel names) for many workers and hosts.
"""

from __future__ import annotations

from ..ids import CursorProblem
from ..ids import Record
from ..ids import Run
from .base import Backend
from .base import NOWHERE
from .base import Retention
from .base import Sink
from .memory import MemoryBackend

__all__ = [
    "Backend",
    "CursorProblem",
    "MemoryBackend",
    "Record",
    "Run",
    "Sink",
    "create_backend",
]

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://")


def create_backend(
    url: str,
    history: int,
    *,
    ttl: float | None = None,
    prefix: str = "eventstream:",
    channels: int = 10000,
    sink: Sink = NOWHERE,
    retention: Retention | None = None,
    pool_size: int = 4,
    timeout: float = 5.0,
    batch_timeout: float = 10.0,
    idle_check: float = 5.0,
) -> Backend:
    """Return the backend that ``EVENTSTREAM_BACKEND`` names, delivering to
    ``sink``. ``channels`` applies to the memory backend; ``ttl``,
    ``prefix``, ``pool_size``, ``timeout``, ``batch_timeout`` and
    ``idle_check`` to Redis (see :class:`.RedisBackend`).
    """
    if not isinstance(url, str):
        raise ValueError(f"EVENTSTREAM_BACKEND must be a str, not {url!r}.")
    if url == "memory":
        return MemoryBackend(history, channels=channels, sink=sink, retention=retention)
    if url.startswith(_REDIS_SCHEMES):
        # Imported only here: the redis package is an optional extra.
        from .redis import RedisBackend

        return RedisBackend(
            url,
            history,
            ttl=ttl,
            prefix=prefix,
            sink=sink,
            retention=retention,
            pool_size=pool_size,
            timeout=timeout,
            batch_timeout=batch_timeout,
            idle_check=idle_check,
        )
    raise ValueError(
        f"EVENTSTREAM_BACKEND {url!r} is not known. Use 'memory' or a Redis URL"
        " such as 'redis://127.0.0.1:6379/0'."
    )
