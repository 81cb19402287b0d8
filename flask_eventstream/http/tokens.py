"""Subscriber tokens: signed, expiring permission to subscribe to named
channels, for clients that send no cookie (another origin, a script).

A token is :data:`PREFIX` and an :mod:`itsdangerous` signature, with the
app's ``SECRET_KEY`` (and ``SECRET_KEY_FALLBACKS``, so keys can be rotated)
and a salt of its own, of the channels, the Unix time it was issued at and
the one it expires at. ``EventSource`` cannot send headers, so a request
carries it as ``?token=``, or as ``Authorization: Bearer`` where it can.

A value there without the prefix is the app's own (its API tokens, another
extension's): this module leaves it alone, for ``authorize`` to judge.
"""

from __future__ import annotations

import time
import typing as t

from flask import current_app
from flask import request
from itsdangerous import BadData
from itsdangerous import BadSignature
from itsdangerous import URLSafeSerializer
from werkzeug.exceptions import Forbidden

from ..backends.base import Backend
from ..backends.base import CLOSED_KEPT
from ..settings import check_channel

#: Keeps these signatures apart from every other use of the secret key
#: (sessions, other extensions): one cannot be passed off as the other.
SALT = "flask-eventstream.subscribe"

#: What every subscriber token starts with: how a request's token is told
#: from the app's own bearer tokens.
PREFIX = "eventstream-1."

#: Longest token read from a request: 32 channels of 128 characters fit.
MAX_TOKEN_LENGTH = 8192

#: The longest a token may live: as long as a ``close_channel`` is
#: remembered (see :meth:`~flask_eventstream.backends.base.Backend.closed_at`).
MAX_LIFETIME = CLOSED_KEPT

#: Shorter secret keys make a warning: a token signed with one can be forged
#: by trying keys.
MIN_SECRET_LENGTH = 32


class Grant(t.NamedTuple):
    """What a valid token allows."""

    channels: frozenset[str]
    #: The Unix time it expires at.
    expires: float
    #: Channels it names that were closed (``close_channel``) after it was
    #: issued: it admits them no more.
    revoked: frozenset[str] = frozenset()


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
        not a positive number of seconds up to :data:`MAX_LIFETIME`.
    """
    if not channels:
        raise ValueError("A token names at least one channel.")
    for channel in channels:
        problem = check_channel(channel)
        if problem is not None:
            raise ValueError(problem)
    if isinstance(expires_in, bool) or not (
        isinstance(expires_in, (int, float)) and 0 < expires_in <= MAX_LIFETIME
    ):
        raise ValueError(
            f"expires_in must be positive seconds, at most {MAX_LIFETIME:,} (30"
            f" days), not {expires_in!r}."
        )
    unique = list(dict.fromkeys(channels))
    now = time.time()
    payload = {"c": unique, "i": round(now, 6), "x": round(now + expires_in, 3)}
    token: str = _serializer().dumps(payload)
    return PREFIX + token


def check_secret(secret: str | bytes | None) -> str | None:
    """What is wrong with ``secret`` as the key that signs tokens, if
    anything: a warning to log at start.
    """
    if secret and len(secret) < MIN_SECRET_LENGTH:
        return (
            f"SECRET_KEY is {len(secret)} characters long: a subscriber token"
            " signed with it can be forged by trying keys. Use at least"
            f" {MIN_SECRET_LENGTH} random bytes: python -c 'import secrets;"
            " print(secrets.token_hex(32))'."
        )
    return None


def request_token() -> str | None:
    """The subscriber token this request carries (``?token=`` or a Bearer
    header), without its prefix; ``None`` for none, or one that is not this
    library's.
    """
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    bearer = value.strip() if scheme.lower() == "bearer" else None
    # The first of the two that is ours: the other may be the app's own.
    for raw in (request.args.get("token"), bearer):
        if raw is not None and raw.startswith(PREFIX):
            return raw[len(PREFIX) :]
    return None


def request_grant(backend: Backend) -> Grant | None:
    """What this request's token allows, or ``None`` without a token of this
    library (or without ``SECRET_KEY``: then none can be).

    :param backend: knows which channels were closed after the token was
        issued: it admits those no more.
    :raises Forbidden: for a token that is malformed, tampered with, signed
        with another key, or expired; the message says which.
    :raises BackendUnavailable: if the backend cannot say which channels
        were closed.
    """
    raw = request_token()
    if raw is None or not current_app.config.get("SECRET_KEY"):
        return None
    if len(raw) > MAX_TOKEN_LENGTH:
        raise Forbidden(f"The token is longer than {MAX_TOKEN_LENGTH} characters.")
    try:
        payload = _serializer().loads(raw)
        channels = frozenset(payload["c"])
        issued, expires = float(payload["i"]), float(payload["x"])
    except BadSignature:
        raise Forbidden(
            "The token is invalid: its signature does not match (tampered"
            " with, cut short, or signed with another SECRET_KEY)."
        ) from None
    except (BadData, KeyError, TypeError, ValueError):
        raise Forbidden("The token is invalid: it does not name channels.") from None
    late = time.time() - expires
    if late >= 0:
        raise Forbidden(
            f"The token expired {late:.0f} seconds ago: ask the app for a new one."
        )
    closed = backend.closed_at(sorted(channels))
    # Closed in the same millisecond as issued: revoked (the safe side).
    revoked = frozenset(c for c, at in closed.items() if at >= issued)
    return Grant(channels - revoked, expires, revoked)
