"""What a request asks of a subscription: the cursor it resumes after, how
many stored events to rewind, and whether it is a poll.
"""

from __future__ import annotations

import re

from flask import has_request_context
from flask import request
from werkzeug.exceptions import BadRequest

from ..settings import MAX_REWIND

#: Longest cursor read from a request; ids the backends assign are far shorter.
MAX_CURSOR_LENGTH = 64
#: What a cursor from a request is made of: the characters of an id (digits,
#: ``-`` and the epoch's lower-case letters).
CURSOR_PATTERN = re.compile(r"\A[0-9a-z-]+\Z")
#: The transports whose client sends back what the answer says, and reads a
#: 400: a stream's ``EventSource`` does neither.
POLLS = ("poll", "longpoll")


def short_poll() -> bool:
    """Whether this request is a poll: answered at once, it holds no
    connection, so the connection limit does not refuse it.
    """
    return has_request_context() and request.args.get("transport") == "poll"


def request_cursor() -> str | None:
    """The cursor this request resumes after: its ``Last-Event-ID`` header,
    else its ``lastEventId`` query argument; ``None`` without one.

    A stream is given one it cannot read as is: its replay answers with an
    ``eventstream-reset`` (reason ``malformed``) and goes on live. A refusal
    would end it for good: ``EventSource`` never reconnects after a status
    other than 200, and it sends the same ``Last-Event-ID`` each time.

    :raises BadRequest: on a poll or a long-poll, for a cursor that is not
        made of an id's characters.
    """
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        raw = request.args.get("lastEventId")
    if not raw:
        return None
    if len(raw) > MAX_CURSOR_LENGTH or CURSOR_PATTERN.match(raw) is None:
        if request.args.get("transport") not in POLLS:
            return raw
        raise BadRequest(
            f"The cursor (Last-Event-ID or lastEventId) must be at most"
            f" {MAX_CURSOR_LENGTH} digits, lower-case letters and '-'; send"
            " back an id this server sent."
        )
    return raw


def request_rewind() -> int | None:
    """The request's ``?rewind=N``, or ``None`` without one.

    :raises BadRequest: unless it is a whole number from 0 to ``MAX_REWIND``.
    """
    raw = request.args.get("rewind")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or int(raw) > MAX_REWIND:
        raise BadRequest(
            f"rewind must be a whole number of events from 0 to {MAX_REWIND},"
            f" not {raw[:20]!r}."
        )
    return int(raw)
