"""Helpers for testing streams, yours and ours.

:func:`parse` reads bytes as a browser's ``EventSource`` would, and returns
the events it would dispatch. :func:`check_delivery` checks what a client
received against what was published: every event once, in order, or a reset.
:func:`iter_events` reads a Flask test-client response event by event, with a
timeout, so a test of a stream cannot hang::

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

from .ids import RESET_EVENT
from .wire import Event
from .wire import parse
from .wire import Parser

__all__ = ["DeliveryError", "Parser", "check_delivery", "iter_events", "parse"]


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


class DeliveryError(AssertionError):
    """What a client received breaks the delivery promise: a gap with no
    reset before it, a duplicate, or events out of order.
    """


def check_delivery(
    published: t.Sequence[str | Event],
    received: t.Sequence[Event],
    *,
    complete: bool = True,
) -> None:
    """Check one client's events against what was published: every event
    once, in order, or an ``eventstream-reset`` before any jump.

    :param published: the events (or their ids) of the client's channels, in
        the order they were published.
    :param received: what the client received, resets included (as
        :func:`parse` or :class:`~flask_eventstream.client.EventSource` give
        them).
    :param complete: also require every event published after the client's
        last reset (or from the start) to have arrived.
    :raises DeliveryError: naming the first event that breaks the promise.
    """
    position = {
        (item.id if isinstance(item, Event) else item): n
        for n, item in enumerate(published)
    }
    expected = 0  # the index of the next event the client must get
    reset = False
    for count, event in enumerate(received):
        if event.event == RESET_EVENT:
            reset = True
            continue
        index = position.get(event.id or "")
        if index is None:
            raise DeliveryError(f"event {count} ({event.id!r}) was never published")
        if index < expected:
            raise DeliveryError(
                f"event {count} ({event.id!r}) is a duplicate or out of order:"
                f" the client already had {_id(published[expected - 1])!r}"
            )
        if index > expected and not reset:
            raise DeliveryError(
                f"{index - expected} events were skipped without a reset before"
                f" {event.id!r}, from {_id(published[expected])!r}"
            )
        expected, reset = index + 1, False
    if complete and not reset and expected < len(published):
        raise DeliveryError(
            f"the last {len(published) - expected} published events never arrived,"
            f" from {_id(published[expected])!r}"
        )


def _id(item: str | Event) -> str | None:
    return item.id if isinstance(item, Event) else item
