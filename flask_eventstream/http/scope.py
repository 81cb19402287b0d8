"""The scope of a subscriber: who the browser client may share a connection
with.

Tabs that share one connection (``new EventStreamClient(url, {shared:
true})``) must all be the same subscriber, or one session's events reach
another session's tab (alice logs out, bob logs in: bob's new tab must not
join the connection opened with alice's cookie). Every poll answer carries
``"scope"``, and the client names its Web Lock and ``BroadcastChannel``
after it.

The scope is a keyed hash (HMAC-SHA256 with the app's ``SECRET_KEY`` when
set, else plain SHA-256: the same on every worker and host) of who the
request is: the value of ``identify`` when it names the subscriber, else the
request's cookies and ``Authorization`` header. The session cookie counts by
the session's content, not its bytes: Flask signs it again with a new
timestamp on each request of a permanent session
(``SESSION_REFRESH_EACH_REQUEST``), and two tabs of one login must still
share.
"""

from __future__ import annotations

import hashlib
import hmac
import typing as t

from flask import current_app
from flask import request
from flask import session
from flask.json.tag import TaggedJSONSerializer


def subscriber_scope(member: str | None) -> str:
    """Return the scope of the current request's subscriber, 32 hex digits.

    :param member: what ``identify`` named the subscriber, ``None`` when it
        is anonymous or no ``identify`` is registered.
    """
    if member is not None:
        identity = "identify\0" + member
    else:
        identity = "request\0" + _credentials()
    secret = current_app.config.get("SECRET_KEY")
    if isinstance(secret, str):
        secret = secret.encode()
    data = identity.encode("utf-8", "surrogateescape")
    if isinstance(secret, bytes) and secret:
        digest = hmac.new(secret, data, hashlib.sha256).hexdigest()
    else:
        digest = hashlib.sha256(b"flask-eventstream scope\0" + data).hexdigest()
    return digest[:32]


def _credentials() -> str:
    """The request's cookies (the session cookie by its content) and its
    ``Authorization`` header, in one string.
    """
    name = current_app.config.get("SESSION_COOKIE_NAME") or "session"
    parts = [f"authorization\0{request.headers.get('Authorization', '')}"]
    for key, value in sorted(request.cookies.items(multi=True)):
        if key == name:
            value = "session\0" + _session_content(value)
        parts.append(f"{key}\0{value}")
    return "\0\0".join(parts)


def _session_content(raw: str) -> str:
    """The content of the request's session, as the session cookie ``raw``
    gave it; ``raw`` itself when the session cannot be read.
    """
    if current_app.session_interface.is_null_session(session):
        return "cookie\0" + raw  # not a Flask session (no SECRET_KEY)
    try:
        content: dict[str, t.Any] = dict(session)
        return "content\0" + TaggedJSONSerializer().dumps(content)
    except Exception:  # noqa: BLE001 - an app's own session class: fall back
        return "cookie\0" + raw
