"""Who may subscribe: the channel names, the limits, and ``authorize`` run
as a guest. Each refusal is an HTTP error with a message, logged and counted.
"""

from __future__ import annotations

import typing as t

from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import Forbidden
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import ServiceUnavailable

from ..hub import Hub
from ..settings import check_channel
from .request import short_poll

Authorizer = t.Callable[[str], bool]


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
    limit = settings.max_connections
    if hub.connections >= limit and not short_poll():
        error = ServiceUnavailable(
            "This worker serves its most streams"
            f" (EVENTSTREAM_MAX_CONNECTIONS = {limit})."
        )
        error.retry_after = 5
        refuse(hub, error, "the worker holds %d streams.", hub.connections)
    return unique


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
