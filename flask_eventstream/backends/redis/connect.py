"""Where the Redis backend's connections go: one server named by its URL, or
the primary that Redis Sentinel names, followed across failovers.

``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``
names the sentinels (port 26379 by default), the service (what
``sentinel monitor`` calls the primary) and the database. The password, if
any, is the primary's; ``?sentinel_password=`` gives the sentinels' own.
"""

from __future__ import annotations

import threading
import typing as t
import urllib.parse

import redis
from redis.sentinel import Sentinel
from redis.sentinel import SentinelManagedConnection

SENTINEL_SCHEME = "redis+sentinel://"
#: Connecting, and each command a sentinel answers.
CONNECT_TIMEOUT = 2.0


class SentinelURL(t.NamedTuple):
    sentinels: list[tuple[str, int]]
    service: str
    db: int
    username: str | None
    password: str | None
    sentinel_password: str | None


def parse_sentinel_url(url: str) -> SentinelURL:
    """Read a ``redis+sentinel://`` URL; :class:`ValueError` says what is wrong."""
    parts = urllib.parse.urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "26379")
        if not name or not port.isdigit():
            raise ValueError(
                f"EVENTSTREAM_BACKEND {url!r}: {host!r} is not a sentinel's host:port."
            )
        sentinels.append((name, int(port)))
    path = [segment for segment in parts.path.split("/") if segment]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(
            f"EVENTSTREAM_BACKEND {url!r}: give the service and the database"
            " after the sentinels, as in"
            " 'redis+sentinel://h1:26379,h2:26379/mymaster/0'."
        )
    query = urllib.parse.parse_qs(parts.query)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise ValueError(
            f"EVENTSTREAM_BACKEND {url!r}: unknown option {sorted(unknown)[0]!r}"
            " (only sentinel_password is read)."
        )
    return SentinelURL(
        sentinels,
        urllib.parse.unquote(path[0]),
        int(path[1]) if len(path) == 2 else 0,
        urllib.parse.unquote(username) or None,
        urllib.parse.unquote(password) or None,
        query.get("sentinel_password", [None])[0],
    )


class _Primary:
    """What redis-py's :class:`SentinelManagedConnection` asks of its pool:
    the primary's address, asked of the sentinels at each connect. When it
    changes, idle connections to the old one are closed.
    """

    is_master = True
    check_connection = False

    def __init__(self, sentinel: Sentinel, service: str) -> None:
        self.sentinel = sentinel
        self.service_name = service
        self.address: tuple[str, int] | None = None
        self.pools: list[redis.ConnectionPool] = []
        self.lock = threading.Lock()

    def get_master_address(self) -> tuple[str, int]:
        address: tuple[str, int] = self.sentinel.discover_master(self.service_name)
        with self.lock:
            changed = address != self.address
            self.address = address
        if changed:
            for pool in self.pools:
                pool.disconnect(inuse_connections=False)
        return address

    def rotate_slaves(self) -> t.Iterator[tuple[str, int]]:  # pragma: no cover
        yield self.get_master_address()  # only ever asked for the primary


def check_url(url: str) -> None:
    """Refuse what redis-py would read silently as something else: a database
    that is not a number (``redis://host/abc`` would use database 0).

    :raises ValueError: naming the part that is wrong.
    """
    parts = urllib.parse.urlsplit(url)
    path = parts.path if parts.scheme != "unix" else ""
    databases = [path.strip("/")] if path.strip("/") else []
    databases += urllib.parse.parse_qs(parts.query).get("db", [])
    for db in databases:
        if not db.isdigit():
            raise ValueError(
                f"EVENTSTREAM_BACKEND {url!r}: the database {db!r} is not a"
                " number; use one, as in 'redis://127.0.0.1:6379/0'."
            )
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ValueError(
            f"EVENTSTREAM_BACKEND {url!r}: the port is not a number from 0 to 65535."
        ) from None


class Connector:
    """Makes the backend's pool and its listener's connections.

    :param url: ``redis://``, ``rediss://``, ``unix://`` or
        ``redis+sentinel://``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.primary: _Primary | None = None
        self.options: dict[str, t.Any] = {}
        if not url.startswith(SENTINEL_SCHEME):
            check_url(url)
        else:
            where = parse_sentinel_url(url)
            sentinel = Sentinel(
                where.sentinels,
                socket_timeout=CONNECT_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                sentinel_kwargs={
                    "socket_timeout": CONNECT_TIMEOUT,
                    "socket_connect_timeout": CONNECT_TIMEOUT,
                    "password": where.sentinel_password,
                },
            )
            self.primary = _Primary(sentinel, where.service)
            self.options = {
                "connection_class": SentinelManagedConnection,
                "connection_pool": self.primary,
                "db": where.db,
                "username": where.username,
                "password": where.password,
            }

    def pool(
        self, size: int, timeout: float, **options: t.Any
    ) -> redis.BlockingConnectionPool:
        """A pool of at most ``size`` connections; a caller waits up to
        ``timeout`` seconds for one.
        """
        options.update(
            max_connections=size,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=CONNECT_TIMEOUT,
        )
        if self.primary is None:
            return redis.BlockingConnectionPool.from_url(self.url, **options)
        pool = redis.BlockingConnectionPool(**options, **self.options)
        self.primary.pools.append(pool)
        return pool

    def connection(self, socket_timeout: float) -> redis.Connection:
        """A connection of its own (the listener's), not yet connected: it
        connects again, to the primary of the moment, after ``disconnect()``.
        """
        # RESP2: pub/sub messages are replies (RESP3 would push them to a
        # handler instead; redis-py 6 and later speak RESP3 unless told).
        pool = self.pool(1, socket_timeout, protocol=2)
        connection: redis.Connection = pool.make_connection()
        return connection

    def where(self) -> str:
        """The server connections go to now, for log messages."""
        if self.primary is None:
            return self.url
        return f"{self.primary.service_name} at {self.primary.address}"
