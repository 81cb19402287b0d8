"""Subscriber tokens: signed, expiring permission to subscribe to named
channels, for clients that send no cookie (another origin, a script).

A token is an :mod:`itsdangerous` signature, with the app's ``SECRET_KEY``
(and ``SECRET_KEY_FALLBACKS``, so keys can be rotated) and a salt of its own,
of the channels and the Unix time it expires at. ``EventSource`` cannot send
headers, so a request carries it as ``?token=``, or as
``Authorization: Bearer`` where it can.
"""

from __future__ import annotations

import math
import time
import typing as t

from flask import current_app
from flask import request
from itsdangerous import BadData
from itsdangerous import BadSignature
from itsdangerous import URLSafeSerializer
from werkzeug.exceptions import Forbidden

from ..settings import check_channel

#: Keeps these signatures apart from every other use of the secret key
#: (sessions, other extensions): one cannot be passed off as the other.
SALT = "flask-eventstream.subscribe"

#: Longest token read from a request: 32 channels of 128 characters fit.
MAX_TOKEN_LENGTH = 8192


class Grant(t.NamedTuple):
    """What a valid token allows."""

    channels: frozenset[str]
    #: The Unix time it expires at.
    expires: float

    def remaining(self) -> float:
        """Seconds until it expires (``time.time()``: hosts need synced clocks)."""
        return self.expires - time.time()


def _serializer() -> URLSafeSerializer:
    app = current_app
    secret = app.config.get("SECRET_KEY")
    if not secret:
        raise RuntimeError(
            "Subscriber tokens are signed with the app's SECRET_KEY, and it is"
            " not set. Set app.config['SECRET_KEY'] (or app.secret_key)."
        )
    keys = [*(app.config.get("SECRET_KEY_FALLBACKS") or ()), secret]
    return URLSafeSerializer(keys, salt=SALT)


def make_token(channels: t.Sequence[str], expires_in: float) -> str:
    """Sign a token for ``channels`` that expires ``expires_in`` seconds
    from now.

    :raises ValueError: for no channel, an invalid one, or a lifetime that is
        not a positive number.
    """
    if not channels:
        raise ValueError("A token names at least one channel.")
    for channel in channels:
        problem = check_channel(channel)
        if problem is not None:
            raise ValueError(problem)
    if isinstance(expires_in, bool) or not (
        isinstance(expires_in, (int, float)) and 0 < expires_in < math.inf
    ):
        raise ValueError(f"expires_in must be positive seconds, not {expires_in!r}.")
    unique = list(dict.fromkeys(channels))
    payload = {"c": unique, "x": round(time.time() + expires_in, 3)}
    token: str = _serializer().dumps(payload)
    return token


def request_token() -> str | None:
    """The token this request carries (``?token=`` or a Bearer header)."""
    raw = request.args.get("token")
    if raw is None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            raw = value.strip()
    return raw


def request_grant() -> Grant | None:
    """What this request's token allows, or ``None`` without a token.

    :raises Forbidden: for a token that is malformed, tampered with, signed
        with another key, or expired; the message says which.
    """
    raw = request_token()
    if raw is None:
        return None
    if len(raw) > MAX_TOKEN_LENGTH:
        raise Forbidden(f"The token is longer than {MAX_TOKEN_LENGTH} characters.")
    try:
        payload = _serializer().loads(raw)
        grant = Grant(frozenset(payload["c"]), float(payload["x"]))
    except BadSignature:
        raise Forbidden(
            "The token is invalid: its signature does not match (tampered"
            " with, cut short, or signed with another SECRET_KEY)."
        ) from None
    except (BadData, KeyError, TypeError, ValueError):
        raise Forbidden("The token is invalid: it does not name channels.") from None
    late = -grant.remaining()
    if late >= 0:
        raise Forbidden(
            f"The token expired {late:.0f} seconds ago: ask the app for a new one."
        )
    return grant
