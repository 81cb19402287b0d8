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
import re
import threading
import types
import typing as t

try:
    import httpx
except ImportError as error:  # pragma: no cover - said, not hidden
    raise ImportError(
        "flask_eventstream.client needs httpx: pip install 'flask-eventstream[client]'"
    ) from error

from .errors import EventStreamError
from .ids import RESET_EVENT
from .wire import Event
from .wire import Parser

__all__ = ["RESET_EVENT", "EventSource", "StreamRefused"]

#: The reconnection delay, in milliseconds, until the server sends one.
DEFAULT_RETRY = 3000

#: Statuses after which a client must not reconnect on its own: the request
#: itself is refused (403: not allowed or a token expired; 404; 400).
#: 408 and 429 say "later", and 5xx "not now": those reconnect.
RETRYABLE = frozenset({408, 429})


class StreamRefused(EventStreamError):
    """The server refused the stream with a 4xx status: reconnecting would
    not help. :attr:`status` is the status, :attr:`message` the server's
    reason (the start of its answer).
    """

    def __init__(self, url: str, status: int, message: str) -> None:
        super().__init__(f"{url} answered {status}: {message}")
        self.status = status
        self.message = message


class EventSource:
    """The events of the stream at ``url``, as an iterator that reconnects.

    Iterate it for :class:`~flask_eventstream.Event` objects: those of the
    stream, across reconnections, each with its ``id`` (the last id seen, as
    a browser's ``lastEventId``). The iteration ends when :meth:`close` is
    called or the server answers 204 (no more events for this client).

    An ``eventstream-reset`` event (:data:`RESET_EVENT`) says the server could
    not resume after the last id: events were lost, so what the client built
    from them is stale. It is yielded like the others; test ``event.event``.

    :param last_event_id: resume after this id (as ``Last-Event-ID``).
    :param headers: extra request headers (``Authorization``, say).
    :param timeout: seconds without a byte (the server sends heartbeats)
        before the connection is taken for dead and made again.
    :param client: an ``httpx.Client`` to use (its own is made otherwise,
        and closed by :meth:`close`).
    :raises StreamRefused: while iterating, on a 4xx answer other than 408
        and 429 (403 for a refused or expired token, 404, 400).
    """

    def __init__(
        self,
        url: str,
        *,
        last_event_id: str | None = None,
        headers: t.Mapping[str, str] | None = None,
        timeout: float | None = 60.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url
        #: The id to resume after: the last one received.
        self.last_event_id = last_event_id or ""
        self.headers = dict(headers or {})
        #: The reconnection delay in milliseconds (the server's ``retry:``).
        self.retry = DEFAULT_RETRY
        #: The status of the latest answer, ``None`` before the first.
        self.status: int | None = None
        #: Connections made after the first.
        self.reconnects = 0
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
                delay = yield from self._connection()
                if self._closed.wait(delay):
                    return
        finally:
            self._response = None
            if self._own_client:
                self._client.close()

    def _connection(self) -> t.Generator[Event, None, float]:
        """One connection: yield its events; return the seconds to wait
        before the next.
        """
        headers = {"Accept": "text/event-stream", **self.headers}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        try:
            with self._client.stream("GET", self.url, headers=headers) as response:
                self._response = response
                self.status = status = response.status_code
                if status == 204:
                    self._closed.set()
                    return 0.0
                kind = response.headers.get("content-type", "")
                if status == 200 and kind.startswith("text/event-stream"):
                    parser = Parser(self.last_event_id)
                    for chunk in response.iter_bytes():
                        for event in parser.feed(chunk):
                            self.last_event_id = parser.last_event_id
                            yield event
                        if parser.retry is not None:
                            self.retry = parser.retry
                        if self._closed.is_set():
                            return 0.0
                elif 400 <= status < 500 and status not in RETRYABLE:
                    message = response.read()[:500].decode("utf-8", "replace")
                    self._closed.set()
                    raise StreamRefused(self.url, status, _reason(message))
                else:
                    return _retry_after(response) or self.retry / 1000
        except httpx.TransportError:
            pass  # dropped, refused or silent too long: reconnect
        except httpx.StreamClosed:
            pass  # closed from another thread
        finally:
            self._response = None
        return self.retry / 1000


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after", "")
    return float(raw) if raw.isdigit() else None


def _reason(body: str) -> str:
    """The message of an error page (Werkzeug's HTML, or plain text)."""
    found = re.search(r"<p>(.*?)</p>", body, re.S)
    return html.unescape(found[1] if found else body).strip()
