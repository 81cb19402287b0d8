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
import re
import threading
import typing as t

from .event import Event

__all__ = ["Parser", "iter_events", "parse"]

_LINE = re.compile(r"\r\n|\r|\n")


class Parser:
    """An incremental event-stream parser that follows the WHATWG rules.

    Feed it bytes as they arrive; it returns the events dispatched so far.
    Each event's ``id`` is the stream's last event id when it was dispatched,
    as ``MessageEvent.lastEventId`` is; ``event`` is ``None`` for ``message``.
    :attr:`last_event_id` and :attr:`retry` hold the stream's current values.

    :param last_event_id: the id a reconnecting client starts with, as a
        browser keeps it across reconnections.
    """

    def __init__(self, last_event_id: str = "") -> None:
        self._pending = ""
        self._decoder_buffer = b""
        self._first = True
        self._data: list[str] = []
        self._type = ""
        self._id_buffer = last_event_id
        self.last_event_id = last_event_id
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse ``chunk``; return the events completed by it."""
        data = self._decoder_buffer + chunk
        # Keep an incomplete UTF-8 sequence at the end for the next chunk.
        cut = len(data)
        for back in range(1, min(4, len(data)) + 1):
            byte = data[-back]
            if byte & 0xC0 == 0x80:
                continue
            if byte & 0x80 and back < _utf8_length(byte):
                cut = len(data) - back
            break
        self._decoder_buffer = data[cut:]
        text = self._pending + data[:cut].decode("utf-8", errors="replace")
        if self._first and text:
            self._first = False
            if text.startswith("\ufeff"):
                text = text[1:]
        held = ""
        if text.endswith("\r"):
            # It may be the first half of "\r\n": decide with the next chunk.
            text, held = text[:-1], "\r"
        lines = _LINE.split(text)
        self._pending = lines.pop() + held
        events: list[Event] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        self.last_event_id = self._id_buffer
        data, event_type = self._data, self._type
        self._data, self._type = [], ""
        if not data:
            return None
        return Event("\n".join(data), event_type or None, self.last_event_id)


def _utf8_length(lead: int) -> int:
    if lead >= 0xF0:
        return 4
    if lead >= 0xE0:
        return 3
    return 2


def parse(data: bytes) -> list[Event]:
    """Return the events a browser would dispatch for ``data``; an event not
    ended by a blank line is not dispatched, as at the end of a stream.
    """
    parser = Parser()
    events = parser.feed(data)
    if parser._pending.endswith("\r"):  # at the end, a lone CR ends its line
        last = parser._line(parser._pending[:-1])
        if last is not None:
            events.append(last)
    return events


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
