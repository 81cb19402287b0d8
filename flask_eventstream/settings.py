"""The configuration keys, their defaults, and the checked settings of one app.

This module reads a plain mapping (``app.config``) and imports nothing from
Flask, so every layer below the extension can use what it checked.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import typing as t
import warnings

#: Every configuration key with its default; ``init_app`` sets each one with
#: ``app.config.setdefault``.
DEFAULTS: dict[str, t.Any] = {
    "EVENTSTREAM_BACKEND": "memory",
    "EVENTSTREAM_HISTORY": 1000,
    "EVENTSTREAM_HEARTBEAT": 15.0,
    "EVENTSTREAM_RETRY": 3.0,
    "EVENTSTREAM_URL_PREFIX": "/events",
    "EVENTSTREAM_QUEUE_SIZE": 1000,
    "EVENTSTREAM_MAX_CONNECTIONS": 10000,
    "EVENTSTREAM_MAX_CHANNELS": 32,
    "EVENTSTREAM_MAX_EVENT_BYTES": 1024 * 1024,
    "EVENTSTREAM_POLL_TIMEOUT": 25.0,
    "EVENTSTREAM_POLL_BATCH": 500,
    "EVENTSTREAM_CORS_ORIGINS": None,
    "EVENTSTREAM_CORS_CREDENTIALS": False,
    "EVENTSTREAM_HISTORY_TTL": None,
    "EVENTSTREAM_REDIS_PREFIX": "eventstream:",
    "EVENTSTREAM_REDIS_POOL_SIZE": 4,
    "EVENTSTREAM_REDIS_TIMEOUT": 5.0,
    "EVENTSTREAM_REDIS_BATCH_TIMEOUT": 10.0,
    "EVENTSTREAM_REDIS_IDLE_CHECK": 5.0,
    "EVENTSTREAM_MAX_LIFETIME": None,
    "EVENTSTREAM_SEND_TIMEOUT": 30.0,
    "EVENTSTREAM_SEND_BUFFER": None,
    "EVENTSTREAM_HISTORY_CHANNELS": 10000,
    "EVENTSTREAM_DIRECT_WRITES": True,
    "EVENTSTREAM_IDEMPOTENCY_WINDOW": 300.0,
    "EVENTSTREAM_PRESENCE": False,
    "EVENTSTREAM_REWIND": 0,
    "EVENTSTREAM_NAMESPACES": None,
}

logger = logging.getLogger("flask_eventstream")


def unknown_keys(config: t.Mapping[str, t.Any]) -> list[str]:
    """A warning for each ``EVENTSTREAM_*`` key of ``config`` that is not
    one of :data:`DEFAULTS` (a typo is otherwise silently ignored), naming
    the closest known key.
    """
    prefix = "EVENTSTREAM_"
    # Compared without the prefix they all share, which would match anything.
    names = [key.removeprefix(prefix) for key in DEFAULTS]
    found = []
    for key in config:
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        if key in DEFAULTS:
            continue
        close = difflib.get_close_matches(key.removeprefix(prefix), names, n=1)
        hint = f": did you mean {prefix}{close[0]}?" if close else "."
        found.append(f"Unknown configuration key {key} (ignored){hint}")
    return found


#: A ``retry`` of this or more is read as milliseconds, the old unit of
#: ``EVENTSTREAM_RETRY`` and ``@stream(retry=...)``, for one release.
LEGACY_RETRY = 100


def retry_milliseconds(value: object, name: str, stacklevel: int = 2) -> int | None:
    """The ``retry:`` delay, in whole milliseconds, for ``value`` in seconds;
    ``None`` (no ``retry:`` line) for ``None``.

    For one release a value of :data:`LEGACY_RETRY` or more is read as
    milliseconds, with a :class:`DeprecationWarning` and a logged warning.

    :param name: what ``value`` is, for the messages.
    :raises ValueError: for anything but a finite number of seconds ``>= 0``.
    """
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"{name} must be a non-negative number of seconds or None, not {value!r}."
        )
    seconds = value
    if value >= LEGACY_RETRY:
        seconds = value / 1000
        message = (
            f"{name} is in seconds now: {value!r} read as {seconds} s; set {seconds}"
        )
        warnings.warn(message, DeprecationWarning, stacklevel=stacklevel + 1)
        logger.warning(message)
    return round(seconds * 1000)


#: The most stored events a subscription rewinds (a page bounds it in bytes).
MAX_REWIND = 1000

#: The most bytes of events one replay read brings into a worker.
REPLAY_BYTES = 8 * 1024 * 1024

#: Channel names: letters, digits and ``_ . : -``, 1 to 128 characters. They
#: appear in URLs, Redis keys and logs, where anything else needs escaping.
CHANNEL_PATTERN = re.compile(r"\A[A-Za-z0-9_.:-]{1,128}\Z")


def check_channel(channel: object) -> str | None:
    """Return why ``channel`` is not a valid channel name, or ``None``."""
    if not isinstance(channel, str):
        return f"A channel name must be a str, not {type(channel).__name__}."
    if CHANNEL_PATTERN.match(channel) is None or channel in (".", ".."):
        return (
            f"Invalid channel name {channel[:140]!r}: use 1 to 128 letters,"
            " digits, '_', '.', ':' or '-' (not '.' or '..' alone: they are"
            " path segments in a URL)."
        )
    return None


#: Event types the library sends itself; ``publish`` refuses them.
RESERVED_PREFIX = "eventstream-"

#: An idempotency key: printable, 1 to 200 characters.
IDEMPOTENCY_KEY = re.compile(r"\A[!-~]{1,200}\Z")


def check_publish(event: object, idempotency_key: object) -> str | None:
    """Return why ``publish`` refuses this event type or idempotency key."""
    if isinstance(event, str) and event.startswith(RESERVED_PREFIX):
        return (
            f"Event types starting with {RESERVED_PREFIX!r} are reserved for"
            f" the library's own events (such as 'eventstream-reset'), not"
            f" {event[:60]!r}."
        )
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str)
        or IDEMPOTENCY_KEY.match(idempotency_key) is None
    ):
        return (
            "An idempotency key is a str of 1 to 200 printable ASCII characters"
            f" without spaces, not {idempotency_key!r:.60}."
        )
    return None


def _positive(
    config: t.Mapping[str, t.Any], key: str, kind: type, where: str = ""
) -> t.Any:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{where}{key} must be a positive number, not {value!r}.")
    return kind(value)


def _optional(
    config: t.Mapping[str, t.Any], key: str, kind: type, where: str = ""
) -> t.Any:
    return None if config[key] is None else _positive(config, key, kind, where)


#: The most connections ``EVENTSTREAM_REDIS_POOL_SIZE`` gives a worker.
MAX_REDIS_POOL = 1000


def _redis_pool(config: t.Mapping[str, t.Any], key: str) -> int:
    value = config[key]
    if type(value) is not int or not 1 <= value <= MAX_REDIS_POOL:
        raise ValueError(
            f"{key} must be a whole number from 1 to {MAX_REDIS_POOL}, not {value!r}."
        )
    return value


def _seconds(config: t.Mapping[str, t.Any], key: str) -> float:
    value = config[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 < value < float("inf")
    ):
        raise ValueError(f"{key} must be a positive number of seconds, not {value!r}.")
    return float(value)


def _flag(config: t.Mapping[str, t.Any], key: str, where: str = "") -> bool:
    value = config[key]
    if not isinstance(value, bool):
        raise ValueError(f"{where}{key} must be True or False, not {value!r}.")
    return value


def _rewind(config: t.Mapping[str, t.Any], key: str, where: str = "") -> int:
    value = config[key]
    if type(value) is not int or not 0 <= value <= MAX_REWIND:
        raise ValueError(
            f"{where}{key} must be a whole number from 0 to {MAX_REWIND},"
            f" not {value!r}."
        )
    return value


class ChannelSettings(t.NamedTuple):
    """What applies to one channel: its namespace's settings, else the app's."""

    history: int
    history_ttl: float | None
    max_event_bytes: int
    #: Whether ``eventstream-join`` and ``eventstream-leave`` are sent.
    presence: bool
    #: Stored events sent first to a subscriber without a cursor.
    rewind: int


#: What a namespace of ``EVENTSTREAM_NAMESPACES`` may set.
NAMESPACE_KEYS = ("history", "history_ttl", "max_event_bytes", "presence", "rewind")

#: A namespace: the start of channel names (see :data:`CHANNEL_PATTERN`).
NAMESPACE_PATTERN = re.compile(r"\A[A-Za-z0-9_.:-]{1,127}\Z")


def _namespace(
    prefix: object, options: object, base: ChannelSettings
) -> ChannelSettings:
    where = f"EVENTSTREAM_NAMESPACES[{prefix!r:.60}]"
    if not isinstance(prefix, str) or NAMESPACE_PATTERN.match(prefix) is None:
        raise ValueError(
            f"{where}: a namespace is the start of channel names, 1 to 127"
            " letters, digits, '_', '.', ':' or '-' (such as 'user.')."
        )
    if not isinstance(options, t.Mapping):
        raise ValueError(f"{where} must be a dict of settings, not {options!r:.60}.")
    unknown = sorted(str(key) for key in options if key not in NAMESPACE_KEYS)
    if unknown:
        raise ValueError(
            f"{where}: unknown setting {unknown[0]!r}; a namespace may set"
            f" {', '.join(NAMESPACE_KEYS)}."
        )
    merged = {**dict(zip(NAMESPACE_KEYS, base, strict=True)), **options}
    where += "."
    return ChannelSettings(
        _positive(merged, "history", int, where),
        _optional(merged, "history_ttl", float, where),
        _positive(merged, "max_event_bytes", int, where),
        _flag(merged, "presence", where),
        _rewind(merged, "rewind", where),
    )


class Settings:
    """The checked ``EVENTSTREAM_*`` values of one app.

    :raises ValueError: for a value out of range, naming the key.
    """

    def __init__(self, config: t.Mapping[str, t.Any]) -> None:
        self.backend_url: str = config["EVENTSTREAM_BACKEND"]
        self.history: int = _positive(config, "EVENTSTREAM_HISTORY", int)
        self.history_ttl: float | None = _optional(
            config, "EVENTSTREAM_HISTORY_TTL", float
        )
        self.history_channels: int = _positive(
            config, "EVENTSTREAM_HISTORY_CHANNELS", int
        )
        self.redis_prefix: str = config["EVENTSTREAM_REDIS_PREFIX"]
        #: Redis only: the pooled connections of a worker, and the seconds a
        #: caller waits for one and for its answer.
        self.redis_pool_size = _redis_pool(config, "EVENTSTREAM_REDIS_POOL_SIZE")
        self.redis_timeout = _seconds(config, "EVENTSTREAM_REDIS_TIMEOUT")
        #: Redis only: seconds a publish waits for its pipeline and answer.
        self.redis_batch_timeout = _seconds(config, "EVENTSTREAM_REDIS_BATCH_TIMEOUT")
        #: Redis only: seconds of silence before the listener checks the store.
        self.redis_idle_check = _seconds(config, "EVENTSTREAM_REDIS_IDLE_CHECK")
        self.heartbeat: float = _positive(config, "EVENTSTREAM_HEARTBEAT", float)
        self.queue_size: int = _positive(config, "EVENTSTREAM_QUEUE_SIZE", int)
        self.max_connections: int = _positive(
            config, "EVENTSTREAM_MAX_CONNECTIONS", int
        )
        self.max_channels: int = _positive(config, "EVENTSTREAM_MAX_CHANNELS", int)
        self.max_event_bytes: int = _positive(
            config, "EVENTSTREAM_MAX_EVENT_BYTES", int
        )
        #: What applies to a channel in no namespace, and what a namespace
        #: leaves out.
        self.default = ChannelSettings(
            self.history,
            self.history_ttl,
            self.max_event_bytes,
            _flag(config, "EVENTSTREAM_PRESENCE"),
            _rewind(config, "EVENTSTREAM_REWIND"),
        )
        namespaces = config.get("EVENTSTREAM_NAMESPACES") or {}
        if not isinstance(namespaces, t.Mapping):
            raise ValueError(
                "EVENTSTREAM_NAMESPACES must be a dict of channel-name prefix to"
                " settings, such as {'user.': {'history': 50}}, not"
                f" {namespaces!r:.60}."
            )
        #: Longest prefix first: the first that matches a channel wins.
        self.namespaces = sorted(
            ((p, _namespace(p, o, self.default)) for p, o in namespaces.items()),
            key=lambda item: -len(item[0]),
        )
        largest = max(
            [self.max_event_bytes] + [n.max_event_bytes for _, n in self.namespaces]
        )
        #: Events read from the store at a time for a replay: at most about
        #: REPLAY_BYTES, whatever the events' size.
        self.replay_page = max(1, min(1000, REPLAY_BYTES // largest))
        self.poll_timeout: float = _positive(config, "EVENTSTREAM_POLL_TIMEOUT", float)
        self.poll_batch: int = _positive(config, "EVENTSTREAM_POLL_BATCH", int)
        self.send_timeout: float = _positive(config, "EVENTSTREAM_SEND_TIMEOUT", float)
        self.send_buffer: int | None = _optional(config, "EVENTSTREAM_SEND_BUFFER", int)
        self.max_lifetime: float | None = _optional(
            config, "EVENTSTREAM_MAX_LIFETIME", float
        )
        #: The ``retry:`` delay in milliseconds, as sent; ``None``: not sent.
        self.retry: int | None = retry_milliseconds(
            config["EVENTSTREAM_RETRY"], "EVENTSTREAM_RETRY", stacklevel=4
        )
        origins = config["EVENTSTREAM_CORS_ORIGINS"]
        if isinstance(origins, str):
            origins = [origins]
        self.cors_origins: frozenset[str] = frozenset(origins or ())
        self.cors_credentials = bool(config["EVENTSTREAM_CORS_CREDENTIALS"])
        self.direct_writes = bool(config["EVENTSTREAM_DIRECT_WRITES"])
        self.idempotency_window: float = _positive(
            config, "EVENTSTREAM_IDEMPOTENCY_WINDOW", float
        )

    def channel(self, name: str) -> ChannelSettings:
        """The settings of channel ``name``: those of the longest namespace
        it starts with, else the app's.
        """
        for prefix, found in self.namespaces:
            if name.startswith(prefix):
                return found
        return self.default

    def retention(self, channel: str) -> tuple[int, float | None]:
        """The events kept of ``channel``, and for how long (for backends)."""
        found = self.channel(channel)
        return found.history, found.history_ttl
