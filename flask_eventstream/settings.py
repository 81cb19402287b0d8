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
    """A warning for each key of ``config`` that reads ``EVENTSTREAM_*`` in
    any case but is not one of :data:`DEFAULTS` (a typo is otherwise
    silently ignored), naming the closest known key.
    """
    prefix = "EVENTSTREAM_"
    # Compared without the prefix they all share, which would match anything.
    names = [key.removeprefix(prefix) for key in DEFAULTS]
    found = []
    for key in config:
        if not isinstance(key, str) or key in DEFAULTS:
            continue
        upper = key.upper()
        if not upper.startswith(prefix):
            continue
        close = difflib.get_close_matches(upper.removeprefix(prefix), names, n=1)
        hint = f": did you mean {prefix}{close[0]}?" if close else "."
        found.append(f"Unknown configuration key {key} (ignored){hint}")
    return found


#: A ``retry`` of this or more is read as milliseconds, the old unit of
#: ``EVENTSTREAM_RETRY`` and ``@stream(retry=...)``, for one release.
LEGACY_RETRY = 100

#: The longest ``retry`` delay, in seconds: a day.
MAX_RETRY = 24 * 3600


def retry_milliseconds(value: object, name: str, stacklevel: int = 2) -> int | None:
    """The ``retry:`` delay, in whole milliseconds, for ``value`` in seconds;
    ``None`` (no ``retry:`` line) for ``None``.

    For one release a value of :data:`LEGACY_RETRY` or more is read as
    milliseconds, with a :class:`DeprecationWarning` and a logged warning;
    a smaller one is seconds.

    :param name: what ``value`` is, for the messages.
    :raises ValueError: for anything but a number of seconds from 0 to
        :data:`MAX_RETRY`.
    """
    if value is None:
        return None
    seconds = _number(value)
    legacy = seconds is not None and seconds >= LEGACY_RETRY
    if seconds is not None and legacy:
        seconds /= 1000
    if seconds is None or not 0 <= seconds <= MAX_RETRY:
        note = f" ({LEGACY_RETRY} or more is read as milliseconds)" if legacy else ""
        raise ValueError(
            f"{name} must be None or a number of seconds from 0 to {MAX_RETRY}"
            f" (a day), not {value!r:.60}{note}."
        )
    if legacy:
        message = (
            f"{name} is in seconds now: {value!r} read as {seconds} s; set"
            f" {seconds} (a value under {LEGACY_RETRY} is read as seconds)"
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


#: The longest duration a key takes, in seconds: ten years. Redis refuses
#: a longer expiry (about 2**63 milliseconds), and a timeout overflows.
MAX_SECONDS = 10 * 365 * 24 * 3600

#: The largest count or size a key takes: a C ``int``, as socket options
#: and Redis's counts take.
MAX_COUNT = 2**31 - 1

#: The most connections ``EVENTSTREAM_REDIS_POOL_SIZE`` gives a worker.
MAX_REDIS_POOL = 1000

_T = t.TypeVar("_T")

#: A checker: ``config[key]`` checked, for the key named ``where + key``.
_Check = t.Callable[[t.Mapping[str, t.Any], str, str], _T]


def _number(value: object) -> float | None:
    """``value`` as a finite ``float``; ``None`` if it is no number (a
    ``bool``, a ``str``, NaN or infinity).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int past a float's range
        return None
    return number if math.isfinite(number) else None


def _duration(config: t.Mapping[str, t.Any], key: str, where: str = "") -> float:
    """A number of seconds above 0 and at most :data:`MAX_SECONDS`."""
    value = config[key]
    seconds = _number(value)
    if seconds is None or not 0 < seconds <= MAX_SECONDS:
        raise ValueError(
            f"{where}{key} must be a positive number of seconds, at most"
            f" {MAX_SECONDS} (ten years), not {value!r:.60}."
        )
    return seconds


def _whole(
    config: t.Mapping[str, t.Any], key: str, where: str, low: int, high: int
) -> int:
    """An ``int`` from ``low`` to ``high``, or a ``float`` that is one."""
    value = config[key]
    number = _number(value)
    if number is None or not number.is_integer() or not low <= number <= high:
        raise ValueError(
            f"{where}{key} must be a whole number from {low} to {high},"
            f" not {value!r:.60}."
        )
    return int(value)


def _count(config: t.Mapping[str, t.Any], key: str, where: str = "") -> int:
    """A count or size: a whole number from 1 to :data:`MAX_COUNT`."""
    return _whole(config, key, where, 1, MAX_COUNT)


def _redis_pool(config: t.Mapping[str, t.Any], key: str, where: str = "") -> int:
    return _whole(config, key, where, 1, MAX_REDIS_POOL)


def _rewind(config: t.Mapping[str, t.Any], key: str, where: str = "") -> int:
    return _whole(config, key, where, 0, MAX_REWIND)


def _optional(
    config: t.Mapping[str, t.Any], key: str, check: _Check[_T], where: str = ""
) -> _T | None:
    """``None``, or what ``check`` accepts."""
    return None if config[key] is None else check(config, key, where)


def _flag(config: t.Mapping[str, t.Any], key: str, where: str = "") -> bool:
    """``True`` or ``False``: a ``str`` such as ``"False"`` is refused, as
    ``bool()`` would read it as true.
    """
    value = config[key]
    if not isinstance(value, bool):
        hint = ""
        if isinstance(value, str):
            hint = (
                " (in an environment variable read by from_prefixed_env,"
                " write true or false: it is read as JSON)"
            )
        raise ValueError(
            f"{where}{key} must be True or False, not {value!r:.60}{hint}."
        )
    return value


def _text(config: t.Mapping[str, t.Any], key: str, example: str) -> str:
    value = config[key]
    if not isinstance(value, str):
        raise ValueError(
            f"{key} must be a str, such as {example!r}, not {value!r:.60}."
        )
    return value


def _url_prefix(config: t.Mapping[str, t.Any], key: str) -> str | None:
    value = config[key]
    if value is not None and (not isinstance(value, str) or value[:1] != "/"):
        raise ValueError(
            f"{key} must be a path starting with '/', such as '/events', or"
            f" None (no endpoint), not {value!r:.60}."
        )
    return value


def _origins(config: t.Mapping[str, t.Any], key: str) -> frozenset[str]:
    value = config[key]
    if value is None:
        return frozenset()
    origins = [value] if isinstance(value, str) else value
    if not isinstance(origins, (list, tuple, set, frozenset)) or not all(
        isinstance(origin, str) for origin in origins
    ):
        raise ValueError(
            f"{key} must be None, '*', an origin such as 'https://app.example',"
            f" or a list of them, not {value!r:.60}."
        )
    return frozenset(origins)


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
        _count(merged, "history", where),
        _optional(merged, "history_ttl", _duration, where),
        _count(merged, "max_event_bytes", where),
        _flag(merged, "presence", where),
        _rewind(merged, "rewind", where),
    )


class Settings:
    """The checked ``EVENTSTREAM_*`` values of one app.

    :raises ValueError: for a value out of range, naming the key.
    """

    def __init__(self, config: t.Mapping[str, t.Any]) -> None:
        #: Checked by ``create_backend``, which knows the schemes.
        self.backend_url: str = config["EVENTSTREAM_BACKEND"]
        self.history = _count(config, "EVENTSTREAM_HISTORY")
        self.history_ttl = _optional(config, "EVENTSTREAM_HISTORY_TTL", _duration)
        self.history_channels = _count(config, "EVENTSTREAM_HISTORY_CHANNELS")
        self.redis_prefix = _text(config, "EVENTSTREAM_REDIS_PREFIX", "eventstream:")
        #: Redis only: the pooled connections of a worker, and the seconds a
        #: caller waits for one and for its answer.
        self.redis_pool_size = _redis_pool(config, "EVENTSTREAM_REDIS_POOL_SIZE")
        self.redis_timeout = _duration(config, "EVENTSTREAM_REDIS_TIMEOUT")
        #: Redis only: seconds a publish waits for its pipeline and answer.
        self.redis_batch_timeout = _duration(config, "EVENTSTREAM_REDIS_BATCH_TIMEOUT")
        #: Redis only: seconds of silence before the listener checks the store.
        self.redis_idle_check = _duration(config, "EVENTSTREAM_REDIS_IDLE_CHECK")
        self.heartbeat = _duration(config, "EVENTSTREAM_HEARTBEAT")
        self.queue_size = _count(config, "EVENTSTREAM_QUEUE_SIZE")
        self.max_connections = _count(config, "EVENTSTREAM_MAX_CONNECTIONS")
        self.max_channels = _count(config, "EVENTSTREAM_MAX_CHANNELS")
        self.max_event_bytes = _count(config, "EVENTSTREAM_MAX_EVENT_BYTES")
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
        self.poll_timeout = _duration(config, "EVENTSTREAM_POLL_TIMEOUT")
        self.poll_batch = _count(config, "EVENTSTREAM_POLL_BATCH")
        self.send_timeout = _duration(config, "EVENTSTREAM_SEND_TIMEOUT")
        self.send_buffer = _optional(config, "EVENTSTREAM_SEND_BUFFER", _count)
        self.max_lifetime = _optional(config, "EVENTSTREAM_MAX_LIFETIME", _duration)
        #: The ``retry:`` delay in milliseconds, as sent; ``None``: not sent.
        self.retry: int | None = retry_milliseconds(
            config["EVENTSTREAM_RETRY"], "EVENTSTREAM_RETRY", stacklevel=4
        )
        #: The built-in endpoint's prefix; ``None``: no endpoint.
        self.url_prefix = _url_prefix(config, "EVENTSTREAM_URL_PREFIX")
        self.cors_origins = _origins(config, "EVENTSTREAM_CORS_ORIGINS")
        self.cors_credentials = _flag(config, "EVENTSTREAM_CORS_CREDENTIALS")
        self.direct_writes = _flag(config, "EVENTSTREAM_DIRECT_WRITES")
        self.idempotency_window = _duration(config, "EVENTSTREAM_IDEMPOTENCY_WINDOW")

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
