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
from .memory import MemoryBackend

__all__ = [
    "Backend",
    "CursorProblem",
    "MemoryBackend",
    "Record",
    "Run",
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
) -> Backend:
    """Return the backend that ``EVENTSTREAM_BACKEND`` names. ``ttl`` and
    ``prefix`` apply to Redis, ``channels`` to the memory backend.
    """
    if not isinstance(url, str):
        raise ValueError(f"EVENTSTREAM_BACKEND must be a str, not {url!r}.")
    if url == "memory":
        return MemoryBackend(history, channels=channels)
    if url.startswith(_REDIS_SCHEMES):
        # Imported only here: the redis package is an optional extra.
        from .redis import RedisBackend

        return RedisBackend(url, history, ttl=ttl, prefix=prefix)
    raise ValueError(
        f"EVENTSTREAM_BACKEND {url!r} is not known. Use 'memory' or a Redis URL"
        " such as 'redis://127.0.0.1:6379/0'."
    )
