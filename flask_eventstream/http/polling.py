"""Poll and long-poll answers: the same events as a stream, as JSON.

A poll answers at once with the stored events after the cursor. A long-poll
waits, up to ``EVENTSTREAM_POLL_TIMEOUT`` seconds or the smaller ``timeout=``,
for at least one, and answers as soon as one arrives with everything that
came with it. The answer carries the ``lastEventId`` to send back, so no
server-side session is kept: any worker can answer any poll.

While a long-poll waits, its body sends a space at once and then every
heartbeat: JSON allows white space before a value, the first one sends the
response head (so the client knows it is connected), and each write finds a
client that has gone.
"""

from __future__ import annotations

import json
import math
import re
import time
import typing as t

from flask import request
from flask import Response
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import ServiceUnavailable

from ..errors import BackendUnavailable
from ..hub import Hub
from ..ids import Record
from ..ids import RESET_EVENT
from ..server import client_socket
from ..server import shut_down
from ..signals import EndReason
from ..subscription import Subscription
from .cors import cors_headers
from .scope import subscriber_scope
from .sse import Options


def poll_response(sub: Subscription, options: Options, *, longpoll: bool) -> Response:
    """Answer a poll (at once) or a long-poll (when an event comes)."""
    hub = sub.hub
    timeout = _timeout(hub.settings.poll_timeout) if longpoll else 0.0
    sub.present = False  # counted by the lease below, not by the stream's way
    try:
        # Read no more than one answer holds.
        limit = hub.settings.poll_batch
        records, announce = sub.open(limit) if longpoll else sub.replay(limit)
    except BackendUnavailable as error:
        sub.close("unavailable")
        refuse_poll(hub, sub, error)
    # A client that polls is present until one poll timeout after this
    # answer (a long-poll's answer comes within its timeout), where presence
    # is on. Taken after the read, as a stream's: the client's position is
    # before its own join.
    # A shared tab asking whom it may share a connection with (scope=ask)
    # subscribes to nothing yet: it is not counted (a closed tab stayed
    # online for a poll timeout).
    asked = request.args.get("scope")
    if asked != "ask":
        lease = timeout + hub.settings.poll_timeout
        hub.presence.poll(sub.channels, sub.member, lease)
    scope = subscriber_scope(sub.member) if asked is not None else None
    if longpoll:
        gen = _longpoll_body(sub, options, timeout, records, announce, scope)
        body: t.Iterable[bytes] = LongPoll(hub, sub, gen)
    else:
        body = [_answer(sub, records, announce, options, scope)]
    response = Response(body, mimetype="application/json", direct_passthrough=True)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    cors_headers(response, hub.settings)
    return response


def refuse_poll(hub: Hub, what: object, error: BackendUnavailable) -> t.NoReturn:
    """A poll the backend cannot answer now: a 503 that says when to retry,
    counted and logged.
    """
    hub.count("errors")
    hub.logger.warning("Poll of %s not answered: %s", what, error)
    unavailable = ServiceUnavailable(f"Events cannot be read now: {error}")
    unavailable.retry_after = 2
    raise unavailable from None


class LongPoll:
    """A long-poll's body, which the worker's monitor watches: ended at
    shutdown, cut when its write stalls. It can be closed from another
    thread than the one that iterates it (a test client read with a timeout).
    """

    __slots__ = (
        "hub",
        "sub",
        "socket",
        "started",
        "writing_since",
        "sse",
        "_gen",
        "_busy",
        "_holds",
        "__weakref__",
    )

    def __init__(
        self, hub: Hub, sub: Subscription, gen: t.Generator[bytes, None, None]
    ) -> None:
        self.hub = hub
        self.sub = sub
        self.socket = client_socket(request.environ, hub.settings.send_buffer)
        self.started = time.monotonic()
        self.writing_since: float | None = None
        #: Not an event stream: no lifetime, no last hint.
        self.sse = False
        self._gen = gen
        self._busy = False
        self._holds = True  # a greenlet or thread of the server, until closed
        hub.held += 1
        hub.monitor.add(self)

    def __iter__(self) -> LongPoll:
        return self

    def __next__(self) -> bytes:
        self.writing_since = None
        self._busy = True
        try:
            chunk = next(self._gen)
        finally:
            self._busy = False
        self.writing_since = time.monotonic()
        return chunk

    def close(self) -> None:
        if self._holds:
            self._holds = False
            self.hub.held -= 1
        self.hub.monitor.discard(self)
        self.writing_since = None
        if not self._busy:
            self._gen.close()
        self.sub.close()

    def end(self, reason: EndReason) -> None:
        """Answer now with what it has."""
        self.sub.close(reason)

    def abort(self, reason: EndReason) -> None:
        """Its write is blocked: end it and cut its connection."""
        self.end(reason)
        if self.socket is not None:
            shut_down(self.socket)


_SECONDS = re.compile(r"\A[0-9]{1,12}(\.[0-9]{1,9})?\Z")


def _timeout(limit: float) -> float:
    raw = request.args.get("timeout")
    if raw is None:
        return limit
    # Plain decimal seconds only: no exponent, sign, "_" or "inf" that
    # float() would take, and nothing long.
    value = float(raw) if _SECONDS.match(raw) else math.nan
    if not math.isfinite(value) or value < 0:
        raise BadRequest(
            f"timeout must be a number of seconds from 0 to {limit:g}, not"
            f" {raw[:32]!r}."
        )
    return min(value, limit)


def _longpoll_body(
    sub: Subscription,
    options: Options,
    timeout: float,
    records: list[Record],
    announce: str | None,
    scope: str | None,
) -> t.Generator[bytes, None, None]:
    hub = sub.hub
    try:
        if not records:
            yield b" "  # the head goes out now: the client knows it is connected
        deadline = time.monotonic() + timeout
        while not records:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            fresh = sub.wait(min(remaining, options.heartbeat))
            if fresh is None:
                break
            if fresh:
                records = fresh
            elif time.monotonic() < deadline:
                yield b" "
        hub.count("delivered", len(records))
        yield _answer(sub, records, announce, options, scope)
    finally:
        sub.close()


def _answer(
    sub: Subscription,
    records: list[Record],
    announce: str | None,
    options: Options,
    scope: str | None,
) -> bytes:
    records = records[: sub.hub.settings.poll_batch]
    events = [record.event.to_dict() for record in records]
    if records:
        last: str | None = records[-1].event.id
    else:
        last = announce if announce is not None else sub.last_event_id
    answer: dict[str, t.Any] = {
        "events": events,
        "lastEventId": last,
        "retry": options.retry,
    }
    if scope is not None:
        answer["scope"] = scope
    if events and events[0]["event"] == RESET_EVENT:
        answer["reset"] = True
    return json.dumps(answer, separators=(",", ":")).encode()
