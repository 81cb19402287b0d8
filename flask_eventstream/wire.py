"""The wire format: one Server-Sent Event, its exact bytes, and the parser.

This module does no I/O and imports nothing from Flask, so the encoding can be
tested, reused and reasoned about on its own. The rules follow the WHATWG
"server-sent events" section of the HTML standard.
"""

from __future__ import annotations

import re

__all__ = ["Event", "Parser", "frame_chunk", "parse"]

#: Any of the three line breaks the standard accepts splits a data field.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _check_field(name: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(
            f"Event {name} must not contain a line break (CR or LF): {value!r}."
            f" A line break would end the {name} field and let the rest be read"
            " as other fields."
        )
    if "\0" in value:
        raise ValueError(
            f"Event {name} must not contain a NUL character: {value!r}."
            " Browsers ignore an id that contains one, and a type with one"
            " reaches no listener by its name."
        )


def frame_chunk(data: bytes) -> bytes:
    """Return ``data`` framed as one HTTP/1.1 chunk, size in upper-case hex as
    gunicorn writes it.
    """
    return b"%X\r\n%b\r\n" % (len(data), data)


class Event:
    """One Server-Sent Event.

    :param data: the text delivered as ``MessageEvent.data``. Every line break
        (``\\r\\n``, ``\\r`` or ``\\n``) starts a new ``data:`` line, so the
        client receives the text with its line breaks normalised to ``\\n``.
        An empty string still delivers one message with empty data.
    :param event: the event type (``addEventListener(type, ...)`` on the
        client); ``None`` sends an untyped ``message``.
    :param id: the id the client sends back as ``Last-Event-ID`` when it
        reconnects. ``""`` resets the client's id. Ids of published events are
        assigned by the backend.
    :param retry: the reconnection delay, in whole milliseconds, the client
        should use from now on.
    :param comment: a comment, ignored by clients. An event with only a
        comment (empty data, no type, id or retry) is sent as comment lines
        without the blank line that would dispatch an empty message.
    :raises ValueError: if ``event`` or ``id`` contains a line break or a
        NUL, or ``retry`` is not a non-negative ``int``.

    The encoded form is computed once and cached, so one event sent to many
    clients costs one encoding.

    .. versionadded:: 0.1
    """

    __slots__ = ("data", "event", "id", "retry", "comment", "_encoded", "_chunk")

    data: str
    event: str | None
    id: str | None
    retry: int | None
    comment: str | None

    def __init__(
        self,
        data: str = "",
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
        comment: str | None = None,
    ) -> None:
        if not isinstance(data, str):
            raise TypeError(
                f"Event data must be a str, not {type(data).__name__}."
                " Serialise other values first, or pass them to"
                " 'EventStream.publish', which sends them as JSON."
            )
        if event is not None:
            _check_field("event", event)
        if id is not None:
            _check_field("id", id)
        if retry is not None and (
            type(retry) is not int or retry < 0  # bool is an int: refuse it too
        ):
            raise ValueError(
                f"Event retry must be a non-negative int of milliseconds,"
                f" not {retry!r}."
            )
        if comment is not None and not isinstance(comment, str):
            raise TypeError("Event comment must be a str.")
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry
        self.comment = comment
        self._encoded: bytes | None = None
        self._chunk: bytes | None = None

    @property
    def is_comment(self) -> bool:
        """Whether this event carries only a comment, so dispatches nothing."""
        return (
            self.comment is not None
            and self.data == ""
            and self.event is None
            and self.id is None
            and self.retry is None
        )

    def encode(self) -> bytes:
        """Return the exact bytes of this event on the wire (UTF-8, no BOM)."""
        encoded = self._encoded
        if encoded is None:
            encoded = self._encoded = self._build().encode("utf-8")
        return encoded

    def encode_chunk(self) -> bytes:
        """Return :meth:`encode` framed as one HTTP/1.1 chunk, as a server
        writes it to a client with ``Transfer-Encoding: chunked``.
        """
        chunk = self._chunk
        if chunk is None:
            chunk = self._chunk = frame_chunk(self.encode())
        return chunk

    def _build(self) -> str:
        lines: list[str] = []
        if self.comment is not None:
            lines.extend(f": {line}" for line in _LINE_BREAK.split(self.comment))
            if self.is_comment:
                return "\n".join(lines) + "\n"
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.event is not None:
            lines.append(f"event: {self.event}")
        if self.retry is not None:
            lines.append(f"retry: {self.retry}")
        lines.extend(f"data: {line}" for line in _LINE_BREAK.split(self.data))
        return "\n".join(lines) + "\n\n"

    def to_dict(self) -> dict[str, str | None]:
        """Return what an ``EventSource`` would deliver: ``id``, ``event`` and
        ``data`` (line breaks normalised to ``\\n``). Used by the poll answers.
        """
        return {
            "id": self.id,
            "event": self.event or "message",
            "data": "\n".join(_LINE_BREAK.split(self.data)),
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.data, self.event, self.id, self.retry, self.comment) == (
            other.data,
            other.event,
            other.id,
            other.retry,
            other.comment,
        )

    def __hash__(self) -> int:
        return hash((self.data, self.event, self.id, self.retry, self.comment))

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in ("data", "event", "id", "retry", "comment")
            if getattr(self, name) not in (None, "") or name == "data"
        )
        return f"Event({fields})"


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
        lines = _LINE_BREAK.split(text)
        self._pending = lines.pop() + held
        events: list[Event] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def end(self) -> list[Event]:
        """The stream ended: a lone CR still held ends its line (it was no
        half of a CRLF). An event not ended by a blank line is not dispatched.
        """
        pending, self._pending = self._pending, ""
        if not pending.endswith("\r"):
            return []
        last = self._line(pending[:-1])
        return [] if last is None else [last]

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
    return parser.feed(data) + parser.end()
