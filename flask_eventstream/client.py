"""A Python client for event streams, for services, scripts and tests.

:class:`EventSource` reads a stream as a browser does, and resumes as one:
after the connection drops (or the server ends the stream) it waits the
server's ``retry:`` delay and reconnects with ``Last-Event-ID``, so with a
server that keeps history it gets every event once, in order::

    from flask_eventstream.client import EventSource

    with EventSource("https://example.com/events/orders") as source:
        for event in source:
            if event.event == "eventstream-reset":
                reload_everything()  # events were lost: start afresh
                continue
            handle(json.loads(event.data))

It needs the ``client`` extra (``pip install 'flask-eventstream[client]'``),
which brings httpx.
"""

from __future__ import annotations

import html
import random
import re
import threading
import time
import types
import typing as t

try:
    import httpx
except ImportError as error:  # pragma: no cover - said, not hidden
    raise ImportError(
        "flask_eventstream.client needs httpx: pip install 'flask-eventstream[client]'"
    ) from error

from .errors import EventTooLarge
from .errors import StreamRefused
from .ids import RESET_EVENT
from .wire import Event
from .wire import Parser

__all__ = ["RESET_EVENT", "EventSource", "EventTooLarge", "StreamRefused"]

#: The reconnection delay, in milliseconds, until the server sends one.
DEFAULT_RETRY = 3000

#: The bounds, in milliseconds, of any reconnection delay, whatever the
#: server's ``retry:`` or ``Retry-After`` says: ``retry: 0`` must not make a
#: hot loop, and a huge value must neither stop the client for good nor
#: overflow a timer.
MIN_RETRY = 100
#: The upper bound, in milliseconds, of any reconnection delay (see
#: :data:`MIN_RETRY`).
MAX_RETRY = 300_000

#: The longest delay, in milliseconds, that back-off grows to after
#: consecutive failed connections (a longer ``retry:`` still counts).
MAX_BACKOFF = 30_000

#: The default bound of one line, and of the ``data`` of one event, in
#: bytes: eight times the largest event a server publishes by default
#: (``EVENTSTREAM_MAX_EVENT_BYTES``).
MAX_EVENT_BYTES = 8 * 1024 * 1024

#: Seconds a connection must stay open to count as healthy, though it
#: brought no event (a quiet stream cut by a proxy is not a failure).
HEALTHY_AFTER = 30.0

#: Statuses after which a client must not reconnect on its own: the request
#: itself is refused (403: not allowed or a token expired; 404; 400).
#: 408 and 429 say "later", and 5xx "not now": those reconnect.
RETRYABLE = frozenset({408, 429})


class EventSource:
    """The events of the stream at ``url``, as an iterator that reconnects.

    Iterate it for :class:`~flask_eventstream.Event` objects: those of the
    stream, across reconnections, each with its ``id`` (the last id seen, as
    a browser's ``lastEventId``). The iteration ends when :meth:`close` is
    called or the server answers 204 (no more events for this client).

    It trusts nothing it reads: the reconnection delay is the server's
    ``retry:`` kept between :data:`MIN_RETRY` and :data:`MAX_RETRY`
    milliseconds, doubled (with jitter, up to :data:`MAX_BACKOFF`) for each
    connection in a row that fails or brings no event; a line or an event
    larger than ``max_event_bytes`` ends the iteration with
    :exc:`~flask_eventstream.EventTooLarge`; any field value is read as a
    browser reads it, never raised on.

    An ``eventstream-reset`` event (:data:`RESET_EVENT`) says the server could
    not resume after the last id: events were lost, so what the client built
    from them is stale. It is yielded like the others; test ``event.event``.

    :param last_event_id: resume after this id (as ``Last-Event-ID``).
    :param headers: extra request headers (``Authorization``, say).
    :param timeout: seconds without a byte (the server sends heartbeats)
        before the connection is taken for dead and made again.
    :param client: an ``httpx.Client`` to use (its own is made otherwise,
        and closed by :meth:`close`).
    :param max_event_bytes: the longest line, and the most data one event
        may carry, in bytes (default :data:`MAX_EVENT_BYTES`, 8 MiB): what
        the client holds in memory for a stream.
    :raises ~flask_eventstream.StreamRefused: while iterating, on a 4xx
        answer other than 408 and 429 (403 for a refused or expired token,
        404, 400), or a 200 that is not ``text/event-stream``.
    :raises ~flask_eventstream.EventTooLarge: while iterating, when a line
        or an event passes ``max_event_bytes``.
    """

    def __init__(
        self,
        url: str,
        *,
        last_event_id: str | None = None,
        headers: t.Mapping[str, str] | None = None,
        timeout: float | None = 60.0,
        client: httpx.Client | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        if type(max_event_bytes) is not int or max_event_bytes < 1:
            raise ValueError(
                f"max_event_bytes must be a positive int, not {max_event_bytes!r}."
            )
        self.url = url
        self.max_event_bytes = max_event_bytes
        #: The id to resume after: the last one received.
        self.last_event_id = last_event_id or ""
        self.headers = dict(headers or {})
        #: The reconnection delay in milliseconds (the server's ``retry:``).
        self.retry = DEFAULT_RETRY
        #: The status of the latest answer, ``None`` before the first.
        self.status: int | None = None
        #: Connections made after the first.
        self.reconnects = 0
        #: Connections in a row that failed or brought no event: the
        #: back-off's exponent.
        self.failures = 0
        self._own_client = client is None
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(10.0, read=timeout), follow_redirects=True
        )
        self._closed = threading.Event()
        self._response: httpx.Response | None = None

    def __enter__(self) -> EventSource:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Stop: the iteration ends (at once from its own thread; from
        another, with the next bytes or the timeout), and the connection is
        closed.
        """
        self._closed.set()
        response = self._response
        if response is not None:
            try:
                response.close()
            except Exception:  # closing from another thread: best effort
                pass
        if self._own_client and self._response is None:
            self._client.close()

    def __iter__(self) -> t.Iterator[Event]:
        first = True
        try:
            while not self._closed.is_set():
                if not first:
                    self.reconnects += 1
                first = False
                hint = yield from self._connection()
                if self._closed.wait(self._delay(hint)):
                    return
        finally:
            self._response = None
            if self._own_client:
                self._client.close()

    def _delay(self, hint: float | None) -> float:
        """The seconds to wait before the next connection: the server's
        ``retry:`` (or ``Retry-After``, ``hint``, if longer) within the
        bounds, grown with jitter for each failure in a row.
        """
        retry = min(max(float(self.retry), MIN_RETRY), MAX_RETRY)
        if hint is not None:
            retry = min(max(hint * 1000, retry), MAX_RETRY)
        if self.failures:
            ceiling = max(float(MAX_BACKOFF), retry)
            grown = min(retry * 2.0 ** min(self.failures, 32), ceiling)
            # Jitter: clients dropped together do not all come back together.
            retry = max(retry, grown * random.uniform(0.5, 1.0))
        return retry / 1000

    def _connection(self) -> t.Generator[Event, None, float | None]:
        """One connection: yield its events; return the server's
        ``Retry-After`` in seconds, if it sent one. Counts it in
        :attr:`failures` unless it brought an event or lasted.
        """
        # The id as UTF-8, as a browser sends it (httpx would take a str
        # header for ASCII and raise on an id with an accent).
        # Identity: an event stream is not compressed, and a compressed one
        # would be inflated past max_event_bytes before the parser bounds it.
        headers = httpx.Headers(
            {
                "Accept": "text/event-stream",
                "Accept-Encoding": "identity",
                **self.headers,
            }
        )
        raw = list(headers.raw)
        if self.last_event_id:
            raw.append((b"Last-Event-ID", self.last_event_id.encode("utf-8")))
        opened = time.monotonic()
        healthy = False
        hint: float | None = None
        try:
            with self._client.stream("GET", self.url, headers=raw) as response:
                self._response = response
                self.status = status = response.status_code
                if status == 204:
                    self._closed.set()
                    return None
                kind = response.headers.get("content-type", "")
                if status == 200 and kind.lower().startswith("text/event-stream"):
                    parser = Parser(self.last_event_id, self.max_event_bytes)
                    for chunk in response.iter_bytes():
                        try:
                            events = parser.feed(chunk)
                        except ValueError:
                            self._closed.set()
                            raise EventTooLarge(
                                self.url, self.max_event_bytes
                            ) from None
                        if parser.retry is not None:
                            self.retry = parser.retry
                        for event in events:
                            healthy = True
                            self.failures = 0
                            # Per event: a reader that stops here resumes
                            # after this one, not after the chunk's last.
                            self.last_event_id = event.id or ""
                            yield event
                        # Set by an id-only block too: the cursor the server
                        # announced is the one to resume from.
                        self.last_event_id = parser.last_event_id
                        if self._closed.is_set():
                            return None
                elif status == 200:
                    self._closed.set()
                    raise StreamRefused(
                        self.url,
                        status,
                        f"{kind or 'no content type'}, not an"
                        " event stream (text/event-stream)",
                    )
                elif 400 <= status < 500 and status not in RETRYABLE:
                    message = response.read()[:500].decode("utf-8", "replace")
                    self._closed.set()
                    raise StreamRefused(self.url, status, _reason(message))
                else:
                    hint = _retry_after(response)
        except (httpx.TransportError, httpx.DecodingError):
            pass  # dropped, refused, silent too long or garbled: reconnect
        except httpx.StreamClosed:
            pass  # closed from another thread
        finally:
            self._response = None
        if healthy or time.monotonic() - opened >= HEALTHY_AFTER:
            self.failures = 0
        else:
            self.failures += 1
        return hint


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after", "")
    # isdigit() alone takes "²", which float() refuses; an HTTP date is
    # ignored (the back-off applies).
    return float(raw) if raw.isascii() and raw.isdigit() else None


def _reason(body: str) -> str:
    """The message of an error page (Werkzeug's HTML, or plain text)."""
    found = re.search(r"<p>(.*?)</p>", body, re.S)
    return html.unescape(found[1] if found else body).strip()
