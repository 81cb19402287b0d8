"""Helpers for testing streams, yours and ours.

:func:`parse` reads bytes as a browser's ``EventSource`` would, and returns
the events it would dispatch. :func:`iter_events` reads a Flask test-client
response event by event, with a timeout, so a test of a stream cannot hang::

    def test_orders(client):
        with client.get("/orders/7/events", buffered=False) as rv:
            events = iter_events(rv, timeout=5)
            publish_something()
            assert next(events).data == '{"status": "shipped"}'
"""

from __future__ import annotations

import queue
import threading
import typing as t

from .wire import Event
from .wire import parse
from .wire import Parser

__all__ = ["Parser", "iter_events", "parse"]


def iter_events(response: t.Any, timeout: float = 5.0) -> t.Iterator[Event]:
    """Yield the events of a streamed Flask test-client response.

    Open the response with ``client.get(url, buffered=False)``.

    :param timeout: the longest wait for each event, in seconds.
    :raises TimeoutError: when no event arrives within ``timeout``.
    """
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue()
    stop = threading.Event()

    def read() -> None:
        # The app's iterator blocks until the stream has something to send,
        # so it is read in a thread and waited on with a timeout here.
        try:
            for chunk in response.response:
                chunks.put(chunk)
                if stop.is_set():
                    break
            chunks.put(None)
        except BaseException as error:  # handed to the reading test
            chunks.put(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    parser = Parser()
    try:
        while True:
            try:
                chunk = chunks.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(
                    f"No event arrived within {timeout} seconds."
                ) from None
            if chunk is None:
                return
            if isinstance(chunk, BaseException):
                raise chunk
            yield from parser.feed(chunk)
    finally:
        stop.set()
