"""The publish loop's pace, shared by the Flask benchmark apps."""

from __future__ import annotations

import time
import typing as t


def paced(count: int, rate: float) -> t.Iterator[int]:
    """Yield ``0`` to ``count - 1``, each at its time at ``rate`` a second,
    or at once with a ``rate`` of 0.
    """
    start = time.monotonic()
    for n in range(count):
        if rate:
            time.sleep(max(start + n / rate - time.monotonic(), 0))
        yield n
