"""Notes each full garbage collection of a benchmarked worker.

``channels.py`` puts this directory first on the worker's ``PYTHONPATH`` and
names a file in ``GCWATCH_LOG``; Python imports this module at start-up, and
each full collection appends a line to that file: when it ended (Unix time),
how long it took in milliseconds, and how many objects the collector tracks.
Without ``GCWATCH_LOG`` it does nothing.
"""

import gc
import os
import time

_log = os.environ.get("GCWATCH_LOG")
_started = [0.0]


def _watch(phase: str, info: dict) -> None:
    if info["generation"] != 2:
        return
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    took = (time.perf_counter() - _started[0]) * 1000
    with open(_log, "a") as log:  # type: ignore[arg-type]
        log.write(f"{time.time():.6f} {took:.3f} {len(gc.get_objects())}\n")


if _log:
    gc.callbacks.append(_watch)
