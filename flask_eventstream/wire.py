"""The wire format: one Server-Sent Event, its exact bytes, and the parser.

This module does no I/O and imports nothing from Flask, so the encoding can be
tested, reused and reasoned about on its own. The rules follow the WHATWG
"server-sent events" section of the HTML standard.
"""

from __future__ import annotations

import re

__all__ = ["Event", "Parser", "Published", "frame_chunk", "parse"]

#: Any of the three line breaks the standard accepts splits a data field.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BYTE_LINE_BREAK = re.compile(rb"\r\n|\r|\n")

#: What :class:`Parser` keeps of a ``retry:`` of more than 15 digits.
_HUGE_RETRY = 10**15


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


class Published(Event):
    """An event :meth:`~flask_eventstream.EventStream.publish` stored: an
    :class:`Event` whose ``id`` is the one the backend assigned, a
    ``str``, never ``None``.

    .. versionadded:: 0.1
    """

    __slots__ = ()

    id: str

    @classmethod
    def of(cls, event: Event) -> Published:
        """Return the stored ``event`` as a :class:`Published`.

        :raises ValueError: if ``event`` has no id: it was not stored.
        """
        if event.id is None:
            raise ValueError(f"{event!r} has no id: it was not stored.")
        return cls(event.data, event.event, event.id, event.retry, event.comment)


class Parser:
    """An incremental event-stream parser that follows the WHATWG rules.

    Feed it bytes as they arrive; it returns the events dispatched so far.
    Each event's ``id`` is the stream's last event id when it was dispatched,
    as ``MessageEvent.lastEventId`` is; ``event`` is ``None`` for ``message``.
    :attr:`last_event_id` and :attr:`retry` hold the stream's current values:
    an id-only block (``id: 5`` and a blank line) sets :attr:`last_event_id`
    though it dispatches nothing, as in a browser.

    The work is linear in the bytes fed, however they are cut: lines are
    split on the raw bytes (CR and LF never occur inside a UTF-8 sequence),
    and only the unfinished line is kept between chunks.

    :param last_event_id: the id a reconnecting client starts with, as a
        browser keeps it across reconnections.
    :param max_bytes: the longest line, and the most ``data`` bytes one event
        may gather, before :meth:`feed` raises; ``None`` for no bound (the
        test kit's default: it reads the servers it is pointed at).
    :raises ValueError: from :meth:`feed`, when a line or an event passes
        ``max_bytes``. The stream cannot be read on from there.
    """

    def __init__(self, last_event_id: str = "", max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        #: The start of a line whose end has not arrived yet.
        self._partial = bytearray()
        #: The last chunk ended with CR: a LF opening the next one is its pair.
        self._after_cr = False
        self._first = True
        self._data: list[str] = []
        self._data_bytes = 0
        self._type = ""
        self._id_buffer = last_event_id
        #: The stream's last event id, as a browser keeps it for a reconnect.
        self.last_event_id = last_event_id
        #: The last ``retry:`` value (milliseconds), or ``None`` if none came.
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse ``chunk``; return the events completed by it.

        :raises ValueError: when a line or an event passes ``max_bytes``.
        """
        start = 0
        if self._after_cr and chunk:
            self._after_cr = False
            if chunk[:1] == b"\n":
                start = 1
        events: list[Event] = []
        for brk in _BYTE_LINE_BREAK.finditer(chunk, start):
            if self._partial:
                self._partial += chunk[start : brk.start()]
                raw = bytes(self._partial)
                self._partial.clear()
            else:
                raw = chunk[start : brk.start()]
            start = brk.end()
            self._check("A line", len(raw))
            event = self._line(self._decode(raw), len(raw))
            if event is not None:
                events.append(event)
        if start < len(chunk):
            self._partial += chunk[start:]
            self._check("A line", len(self._partial))
        elif chunk.endswith(b"\r"):
            # It may be the first half of "\r\n": its line is already ended
            # (an event is not held back waiting for the next bytes).
            self._after_cr = True
        return events

    def end(self) -> list[Event]:
        """The stream ended. An unfinished line is dropped, and an event not
        ended by a blank line is not dispatched.
        """
        self._partial.clear()
        self._after_cr = False
        return []

    def _check(self, what: str, size: int) -> None:
        if self.max_bytes is not None and size > self.max_bytes:
            # The buffers are dropped: what is held is what was refused.
            self._partial.clear()
            self._data, self._data_bytes = [], 0
            raise ValueError(
                f"{what} of the event stream passed {self.max_bytes} bytes"
                " (the parser's max_bytes)."
            )

    def _decode(self, raw: bytes) -> str:
        if self._first:
            self._first = False
            if raw.startswith(b"\xef\xbb\xbf"):  # one leading BOM is ignored
                raw = raw[3:]
        return raw.decode("utf-8", errors="replace")

    def _line(self, line: str, size: int) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data_bytes += size + 1  # the line's bytes: a bound, not a count
            self._check("An event's data", self._data_bytes)
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                # int() of thousands of digits raises: nobody waits that long.
                self.retry = int(value) if len(value) <= 15 else _HUGE_RETRY
        return None

    def _dispatch(self) -> Event | None:
        self.last_event_id = self._id_buffer
        data, event_type = self._data, self._type
        self._data, self._data_bytes, self._type = [], 0, ""
        if not data:
            return None
        event = Event("\n".join(data), None, self.last_event_id)
        # Set past Event's checks: a type with a NUL is what the server sent
        # (a browser dispatches it too), not an error to raise here.
        event.event = event_type or None
        return event


def parse(data: bytes) -> list[Event]:
    """Return the events a browser would dispatch for ``data``; an event not
    ended by a blank line is not dispatched, as at the end of a stream.
    """
    parser = Parser()
    return parser.feed(data) + parser.end()
