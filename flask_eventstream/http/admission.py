"""Who may subscribe: the channel names, the limits, and ``authorize`` run
as a guest. Each refusal is an HTTP error with a message, logged and counted.
"""

from __future__ import annotations

import typing as t

from flask import has_request_context
from flask import request
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import Forbidden
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import ServiceUnavailable

from ..hub import Hub
from ..server import close_after
from ..settings import check_channel
from ..settings import MAX_REWIND
from ..subscription import Subscription
from .request import request_rewind
from .request import short_poll
from .tokens import request_grant

Authorizer = t.Callable[[str], bool]
Identifier = t.Callable[[], "str | None"]

#: The longest member name ``identify`` may return.
MAX_MEMBER_LENGTH = 200


def open_subscription(
    hub: Hub,
    channels: tuple[str, ...],
    authorizer: Authorizer | None,
    identifier: Identifier | None,
    last_event_id: str | None,
    rewind: int | None,
) -> Subscription:
    """What :meth:`EventStream.subscribe` returns, if this request may
    subscribe (see :func:`admit`): with its token's expiry, its member as
    ``identifier`` names it, and how far it rewinds.
    """
    # Before authorize: a revocation while it runs ends the subscription. A
    # poll answers at once and never joins the bus: it follows nothing.
    mark = -1 if short_poll() else hub.revocation_mark()
    in_request = has_request_context()
    grant = request_grant(hub.backend) if in_request else None
    granted = grant.channels if grant is not None else frozenset()
    unique = admit(hub, channels, authorizer, granted)
    # A stream the token let in ends when the token expires.
    expires = grant.expires if grant and granted.intersection(unique) else None
    if rewind is None and in_request:
        rewind = request_rewind()
    if rewind is None:  # the namespaces' default
        rewind = max(hub.settings.channel(name).rewind for name in unique)
    member = identify(hub, identifier) if identifier and in_request else None
    return Subscription(
        hub,
        unique,
        last_event_id,
        mark=mark,
        rewind=min(rewind, MAX_REWIND),
        member=member,
        expires=expires,
    )


def identify(hub: Hub, identifier: Identifier) -> str | None:
    """Run ``identify`` as a guest: a name it cannot give (it raised, or
    returned something else than a short ``str`` or ``None``) is logged and
    counted, and the subscriber is anonymous; the stream is served anyway.
    """
    try:
        member = identifier()
        if member is None or (
            isinstance(member, str) and 0 < len(member) <= MAX_MEMBER_LENGTH
        ):
            return member
        raise TypeError(
            f"identify must return a str of 1 to {MAX_MEMBER_LENGTH} characters"
            f" or None, not {member!r:.60}."
        )
    except Exception:
        hub.count("callback_errors")
        hub.logger.exception(
            "The identify function failed: the subscriber is anonymous."
        )
        return None


def admit(
    hub: Hub,
    channels: tuple[str, ...],
    authorizer: Authorizer | None,
    granted: t.AbstractSet[str] = frozenset(),
) -> tuple[str, ...]:
    """Return ``channels`` without repeats, if this request may subscribe.

    :param granted: the channels a valid subscriber token names: not put to
        ``authorizer``.

    :raises BadRequest: for no channel, too many, or an invalid one.
    :raises Forbidden: when ``authorizer`` refuses one.
    :raises ServiceUnavailable: when the worker holds its most subscriptions,
        or ``authorizer`` raised.
    """
    settings = hub.settings
    if not channels:
        refuse(hub, BadRequest("Subscribe to at least one channel."), "none")
    if len(channels) > settings.max_channels:
        message = (
            f"{len(channels)} channels in one subscription, more than"
            f" EVENTSTREAM_MAX_CHANNELS ({settings.max_channels})."
        )
        refuse(hub, BadRequest(message), "%s", message)
    unique = tuple(dict.fromkeys(channels))
    for channel in unique:
        problem = check_channel(channel)
        if problem is not None:
            refuse(hub, BadRequest(problem), "%s", problem)
    if authorizer is not None:
        for channel in unique:
            if channel not in granted and not _allowed(hub, authorizer, channel):
                message = f"Not allowed to subscribe to {channel!r}."
                refuse(hub, Forbidden(message), "authorize refused %r.", channel)
    if not short_poll():
        limit = hub.limit()
        if hub.connections >= limit.streams:
            setting = f"EVENTSTREAM_MAX_CONNECTIONS = {settings.max_connections}"
            if limit.warning is not None:
                setting = f"{limit.streams}: {setting}, lowered to what it can hold"
            message = f"This worker serves its most streams ({setting})."
            refuse(hub, full(message), "the worker holds %d streams.", hub.connections)
        if has_request_context() and request.args.get("transport") == "longpoll":
            admit_held(hub)
    return unique


def admit_generator(hub: Hub) -> None:
    """Refuse a generator view's stream when this worker is full: it holds
    a descriptor like any stream, and keeps a greenlet or thread.

    :raises ServiceUnavailable: then.
    """
    limit = hub.limit()
    streams = len(hub.monitor.bodies)
    if streams >= limit.streams:
        message = f"This worker serves its most streams ({limit.streams})."
        refuse(hub, full(message), "the worker holds %d streams.", streams)
    admit_held(hub)


def admit_held(hub: Hub) -> None:
    """Refuse a stream that will keep a greenlet or thread of the server (a
    generator view, a long-poll) when those are all taken: the server's
    other requests need some.

    :raises ServiceUnavailable: then.
    """
    limit = hub.limit()
    if limit.held is not None and hub.held >= limit.held:
        message = (
            f"This worker serves its most streams that keep a greenlet or a"
            f" thread ({limit.held}, below gunicorn's worker_connections or"
            " threads)."
        )
        refuse(hub, full(message), "the worker holds %d greenlets.", hub.held)


def full(message: str) -> ServiceUnavailable:
    """A 503 for a full worker: retried later, on a new connection (a
    refused client that kept this one would keep its descriptor too).
    """
    error = ServiceUnavailable(f"{message} Try again later.")
    error.retry_after = 5
    if has_request_context():
        close_after(request.environ)
    return error


def refuse(hub: Hub, error: HTTPException, reason: str, *args: t.Any) -> t.NoReturn:
    """Count, log and raise a refused subscription."""
    hub.count("refused")
    hub.logger.info("Refused a subscription: " + reason, *args)
    raise error


def _allowed(hub: Hub, authorizer: Authorizer, channel: str) -> bool:
    # The user's function is a guest: an HTTP error it raises (abort(401)) is
    # its answer; anything else is logged and counted, and the request gets a
    # 503 to retry, not a 500 or an open door.
    try:
        return bool(authorizer(channel))
    except HTTPException:
        raise
    except Exception:
        hub.count("callback_errors")
        hub.logger.exception("The authorize function raised for %r.", channel)
        error = ServiceUnavailable("The authorization check failed; try again later.")
        error.retry_after = 5
        raise error from None
