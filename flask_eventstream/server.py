"""The server adapter: everything this package knows of gunicorn's, gevent's
and Werkzeug's internals, in one place.

Streams have a fast path under gunicorn's gevent worker: the publisher
writes to a waiting client's socket itself, and an idle stream is parked
without its greenlet (see :mod:`flask_eventstream.http.stream`). It reads
gunicorn's response object and gevent's socket. Every attribute and
behaviour it relies on is checked once per worker (:func:`fast_path`); where
one is missing or different, one WARNING names it and streams are served the
portable way, a greenlet each, as under any other server.
"""

from __future__ import annotations

import _socket
import inspect
import logging
import os
import resource
import select
import signal
import socket
import sys
import threading
import typing as t

from .wire import frame_chunk

logger = logging.getLogger("flask_eventstream")

#: Where :func:`capture_start_response` keeps the server's ``start_response``.
ENVIRON_KEY = "flask_eventstream.start_response"

#: The last chunk of a chunked HTTP/1.1 response.
LAST_CHUNK = b"0\r\n\r\n"

WSGIApp = t.Callable[[dict[str, t.Any], t.Callable[..., t.Any]], t.Iterable[bytes]]


def capture_start_response(wsgi_app: WSGIApp) -> WSGIApp:
    """Wrap ``wsgi_app`` so a stream can find the server's response object."""

    def app(
        environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]
    ) -> t.Iterable[bytes]:
        environ[ENVIRON_KEY] = start_response
        return wsgi_app(environ, start_response)

    app.__wrapped__ = wsgi_app  # type: ignore[attr-defined]
    return app


# -- the worker -------------------------------------------------------------


def gunicorn_worker() -> t.Any:
    """Return the gunicorn worker serving this process, or ``None``.

    Gunicorn installs ``worker.handle_exit`` as the worker's ``SIGTERM``
    handler; reading a handler is allowed from any thread.
    """
    handler = signal.getsignal(signal.SIGTERM)
    worker = getattr(handler, "__self__", None)
    if worker is None or not type(worker).__module__.startswith("gunicorn."):
        return None
    return worker if hasattr(worker, "alive") else None


class GunicornSetup(t.NamedTuple):
    """What a gunicorn worker is, for the setup checks."""

    #: ``"sync"``, ``"gthread"``, ``"gevent"`` or the worker class's name.
    kind: str
    workers: int
    threads: int


_KINDS = {"SyncWorker": "sync", "ThreadWorker": "gthread", "GeventWorker": "gevent"}


def gunicorn_setup() -> GunicornSetup | None:
    """This process's gunicorn worker, described; ``None`` outside gunicorn."""
    worker = gunicorn_worker()
    if worker is None:
        return None
    name = type(worker).__name__
    cfg = getattr(worker, "cfg", None)
    return GunicornSetup(
        _KINDS.get(name, name),
        int(getattr(cfg, "workers", 1) or 1),
        int(getattr(cfg, "threads", 1) or 1),
    )


def graceful_timeout() -> float | None:
    """Seconds gunicorn gives a stopping worker before it kills what runs."""
    worker = gunicorn_worker()
    value = getattr(getattr(worker, "cfg", None), "graceful_timeout", None)
    return float(value) if isinstance(value, (int, float)) else None


def server_pool() -> tuple[int, str] | None:
    """How many requests this gunicorn worker serves at once, and the
    setting that says so: gevent's ``worker_connections``, gthread's
    ``threads``; ``None`` elsewhere.
    """
    setup = gunicorn_setup()
    if setup is None:
        return None
    if setup.kind == "gthread":
        return setup.threads, "threads"
    worker = gunicorn_worker()
    value = getattr(getattr(worker, "cfg", None), "worker_connections", None)
    if setup.kind == "gevent" and isinstance(value, int):
        return value, "worker_connections"
    return None


class Limit(t.NamedTuple):
    """How many streams this worker may hold, and why."""

    #: Streams and long-polls in all: each holds a descriptor.
    streams: int
    #: Of those, how many may keep a greenlet or thread of the server's pool
    #: (a generator view, a long-poll, a stream that is not parked);
    #: ``None`` where the server has no such pool.
    held: int | None
    #: Set when the configured limit was lowered: what the log said.
    warning: str | None = None


def stream_limit(configured: int, *, parks: bool) -> Limit:
    """The most streams this worker can hold and still answer other requests.

    Each stream holds a descriptor: the limit leaves headroom under
    ``RLIMIT_NOFILE`` (raising the soft limit to the hard one first, if that
    is enough). A stream that is not parked also keeps a greenlet or thread
    of the server's pool: those leave headroom in the pool. Where streams
    cannot park (``parks`` is false), that bounds every stream.
    """
    limit = configured
    reasons = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = configured + _headroom(configured)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if raised > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
                soft = raised
            except (OSError, ValueError):
                pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        usable = max(1, soft - _headroom(soft))
        if usable < limit:
            limit = usable
            reasons.append(f"the descriptor limit (RLIMIT_NOFILE) is {soft}")
    pool = server_pool()
    held = None
    if pool is not None:
        size, setting = pool
        held = max(1, size - max(2, min(size // 10, 64)))
        if not parks and held < limit:
            limit = held
            reasons.append(f"gunicorn's {setting} is {size}")
    held = min(held, limit) if held is not None else None
    if limit == configured:
        return Limit(limit, held)
    warning = (
        f"EVENTSTREAM_MAX_CONNECTIONS is {configured}, but {' and '.join(reasons)}:"
        f" this worker serves at most {limit} streams and answers 503 past that,"
        " so its other requests still get a descriptor and a greenlet. Raise the"
        " limit ('ulimit -n', LimitNOFILE=) or lower EVENTSTREAM_MAX_CONNECTIONS."
    )
    logger.warning(warning)
    return Limit(limit, held, warning)


def _headroom(descriptors: int) -> int:
    # For the worker's own files, Redis, and the requests that are not streams.
    return max(32, min(1024, descriptors // 16))


# -- the fast path ----------------------------------------------------------


class FastPath:
    """What the fast path uses of gevent and gunicorn in this worker.

    Found by :func:`fast_path`, which checked each part.
    """

    def __init__(self, gevent_socket: type, loop: t.Any, spawn: t.Any) -> None:
        self._gevent_socket = gevent_socket
        self._loop = loop
        self.spawn: t.Callable[..., t.Any] = spawn
        self.pid = os.getpid()

    def timer(
        self, delay: float, callback: t.Callable[[t.Any], None], arg: t.Any
    ) -> t.Any:
        """Call ``callback(arg)`` in ``delay`` seconds, in the event loop; the
        returned timer's ``close()`` cancels it.
        """
        timer = self._loop.timer(delay)
        timer.start(callback, arg)
        return timer

    def connection(self, environ: dict[str, t.Any]) -> Connection | None:
        """This request's connection, or ``None`` where writing to it
        directly would not be exact (another server, TLS, HTTP/2, a
        middleware that wrapped ``start_response``).
        """
        try:
            return self._connection(environ)
        except Exception:
            # Checked by the probe; if it is wrong all the same, the stream
            # waits in place rather than fail.
            logger.exception("Serving a stream the portable way.")
            return None

    def _connection(self, environ: dict[str, t.Any]) -> Connection | None:
        response = _response(environ)
        if (
            response is None
            or type(response).__module__ != "gunicorn.http.wsgi"
            or environ.get("REQUEST_METHOD") != "GET"
            or environ.get("SERVER_PROTOCOL") not in ("HTTP/1.0", "HTTP/1.1")
            # Exactly gevent's plain socket: TLS has a subclass.
            or type(getattr(response, "sock", None)) is not self._gevent_socket
            or response.sock is not environ.get("gunicorn.socket")
        ):
            return None
        return Connection(response)


def _response(environ: t.Mapping[str, t.Any]) -> t.Any:
    # gunicorn's response object, behind the start_response it passed.
    return getattr(environ.get(ENVIRON_KEY), "__self__", None)


def close_after(environ: t.Mapping[str, t.Any]) -> None:
    """Answer this request with ``Connection: close``, and close the
    connection after it: a stream's response never ends by itself, so
    nothing pipelined behind it may wait unanswered. Under gunicorn (which
    drops the hop-by-hop headers an app sets); elsewhere nothing.
    """
    response = _response(environ)
    force_close = getattr(response, "force_close", None)
    if callable(force_close) and type(response).__module__ == "gunicorn.http.wsgi":
        force_close()


#: The fast path of each process, once probed (``None``: the portable way).
_probed: dict[int, FastPath | None] = {}


def fast_path() -> FastPath | None:
    """The fast path of this worker, or ``None`` to serve streams the
    portable way. Probed once per process: a part that is missing or
    different is named in one WARNING.
    """
    pid = os.getpid()
    if pid not in _probed:
        if gunicorn_worker() is None or "gevent" not in sys.modules:
            _probed[pid] = None  # not gunicorn's gevent worker: nothing to say
        else:
            try:
                _probed[pid] = _probe()
            except Exception as error:
                _probed[pid] = None
                logger.warning(
                    "Serving streams the portable way (a greenlet each): %s", error
                )
    return _probed[pid]


class ProbeFailed(Exception):
    """A part the fast path relies on is missing or behaves differently."""


def _probe() -> FastPath:
    import gevent
    import gevent.monkey
    from gunicorn import util
    from gunicorn.http import wsgi
    from gunicorn.workers import base_async

    if not gevent.monkey.is_module_patched("socket"):
        raise ProbeFailed("the socket module is not patched by gevent")
    gevent_socket = sys.modules.get("gevent._socket3")
    if gevent_socket is None or not hasattr(gevent_socket, "socket"):
        raise ProbeFailed("gevent._socket3.socket is not there")
    socket_type = gevent_socket.socket
    if not hasattr(socket_type, "_sock"):
        raise ProbeFailed("gevent's socket has no '_sock' (the C socket under it)")
    assigned = _assigned(wsgi.Response.__init__)
    for name in ("chunked", "must_close", "sent", "sock"):
        if name not in assigned:
            raise ProbeFailed(f"gunicorn's Response sets no {name!r}")
    if not callable(getattr(wsgi.Response, "force_close", None)):
        raise ProbeFailed("gunicorn's Response has no force_close()")
    # A parked stream keeps the connection on a duplicate descriptor: that
    # holds only while gunicorn ends a response with close(), never with
    # shutdown(), which would end the connection for every descriptor.
    if "shutdown" in inspect.getsource(util.close):
        raise ProbeFailed("gunicorn's util.close() shuts the connection down")
    handle = inspect.getsource(base_async.AsyncWorker.handle)
    if "util.close(client)" not in handle or "shutdown" in handle:
        raise ProbeFailed("gunicorn's async worker ends a connection otherwise")
    loop = gevent.get_hub().loop
    if not callable(getattr(loop, "timer", None)):
        raise ProbeFailed("gevent's loop has no timer()")
    return FastPath(socket_type, loop, gevent.spawn)


def _assigned(function: t.Callable[..., t.Any]) -> set[str]:
    # The attributes a constructor assigns, read from its source.
    source = inspect.getsource(function)
    return {
        line.split("=")[0].strip()[len("self.") :]
        for line in source.splitlines()
        if line.strip().startswith("self.") and "=" in line
    }


class Connection:
    """One client's connection under gunicorn's gevent worker, written to
    without gunicorn: whole chunks, framed as gunicorn frames them.

    Until :meth:`detach` gunicorn owns it and the stream writes through it
    only where it never waits (:meth:`offer`, or the rest of an offer with
    :meth:`write`). After, the stream owns it: :meth:`write`, then
    :meth:`finish` or :meth:`cut`.
    """

    __slots__ = ("_response", "_framed", "raw")

    def __init__(self, response: t.Any) -> None:
        self._response = response
        self._framed = False
        #: The C socket under gevent's: its ``send`` fails rather than waits.
        self.raw: t.Any = response.sock._sock

    @property
    def framed(self) -> bool:
        """Whether each write is one HTTP/1.1 chunk."""
        # Read each time while gunicorn owns it: it decides once the view
        # has returned.
        response = self._response
        return bool(response.chunked) if response is not None else self._framed

    @property
    def detached(self) -> bool:
        return self._response is None

    def close_after(self) -> None:
        """Send ``Connection: close`` with the response and close it after:
        nothing pipelined behind a stream waits for it unanswered.
        """
        if self._response is not None:
            self._response.force_close()

    def offer(self, data: bytes) -> int:
        """Write what the socket takes of ``data`` now, without waiting;
        return how many bytes (0 for none, -1 if the client is gone).
        """
        try:
            sent: int = self.raw.send(data)
        except BlockingIOError:
            return 0
        except OSError:
            return -1
        response = self._response
        if response is not None:
            response.sent += sent  # gunicorn's access log counts them
        return sent

    def write(self, data: bytes | memoryview, *, framed: bool = False) -> None:
        """Write all of ``data``, waiting cooperatively for the client; frame
        it first unless ``framed`` (it is the rest of a framed offer).

        :raises OSError: if the client is gone.
        """
        from gevent.socket import wait_write

        if not framed and data and self.framed:
            data = frame_chunk(bytes(data))
        view = memoryview(data)
        while view:
            try:
                sent = self.raw.send(view)
            except BlockingIOError:
                wait_write(self.raw.fileno())
                continue
            self._count(sent)
            view = view[sent:]

    def _count(self, sent: int) -> None:
        if self._response is not None:
            self._response.sent += sent  # gunicorn's access log counts them

    def detach(self) -> bool:
        """Take the connection from gunicorn, which then ends its response
        without a byte more and closes its own descriptor; ``False`` if it
        cannot be taken.
        """
        response = self._response
        if response is None:
            return False
        try:
            raw = _socket.socket(fileno=os.dup(self.raw.fileno()))
            raw.setblocking(False)
        except (OSError, ValueError):
            return False
        self._framed = bool(response.chunked)
        response.chunked = False  # gunicorn's close() then writes nothing
        response.force_close()  # nor waits for another request
        self._response = None  # nor is its request kept alive by this
        self.raw = raw
        return True

    def finish(self, last: bytes = b"") -> None:
        """End the response (``last``, then the last chunk if framed) if the
        socket takes it at once, and close the connection.
        """
        framed = self.framed
        data = (frame_chunk(last) if last and framed else last) + (
            LAST_CHUNK if framed else b""
        )
        if data:
            self.offer(data)
        self.close()

    def close(self) -> None:
        """Close the connection, writing nothing: a client in the middle of
        an event sees it end there, and dispatches none of it.
        """
        try:
            self.raw.close()
        except OSError:
            pass


# -- background work --------------------------------------------------------


class Task:
    """``target`` run in the background: a greenlet where gevent patched
    the standard library, else a daemon thread.
    """

    __slots__ = ("_greenlet",)

    def __init__(self, target: t.Callable[[], None]) -> None:
        self._greenlet: t.Any = None
        monkey = sys.modules.get("gevent.monkey")
        if monkey is not None and monkey.is_module_patched("threading"):
            import gevent

            self._greenlet = gevent.spawn(target)
        else:
            threading.Thread(target=target, daemon=True).start()

    def stop(self, grace: float) -> None:
        """Raise ``GreenletExit`` in it if it still runs in ``grace``
        seconds: code waiting for something else than its stream (a
        generator that never yields again) does not outlive it. A thread
        cannot be stopped so.
        """
        greenlet = self._greenlet
        if greenlet is not None and not greenlet.dead:
            import gevent

            gevent.spawn_later(grace, greenlet.kill, block=False)


# -- sockets ----------------------------------------------------------------


def client_socket(environ: t.Mapping[str, t.Any], send_buffer: int | None) -> t.Any:
    """The request's client socket, where the server exposes one (gunicorn,
    Werkzeug), its send buffer bounded to ``send_buffer`` bytes if given.
    """
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if sock is not None and send_buffer is not None:
        # What the kernel holds for a client that stopped reading (by default
        # it grows to net.ipv4.tcp_wmem's maximum).
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        except OSError:
            pass
    return sock


def shut_down(sock: t.Any) -> None:
    """Shut a client's connection down both ways, from any thread or greenlet.

    It is done on a duplicate of the descriptor: gevent's own ``shutdown``
    cancels the blocked writer with an error gunicorn logs as a crash, while
    this fails its write with ``EPIPE``, which every server takes as a
    client that left.
    """
    try:
        # The C socket type: gevent's patched one would do the same as above.
        duplicate = _socket.socket(fileno=os.dup(sock.fileno()))
    except (OSError, ValueError, AttributeError):
        return  # already closed
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        duplicate.close()


def poller() -> t.Any:
    """A new non-blocking poller for hang-ups (epoll, else poll), or ``None``.

    Under gevent's monkey-patching, the unpatched ones: it removes
    ``select.epoll`` and makes ``poll`` cooperative.
    """
    try:
        from gevent.monkey import get_original
    except ImportError:  # pragma: no cover - without gevent
        factory = getattr(select, "epoll", None) or getattr(select, "poll", None)
    else:
        try:
            factory = get_original("select", "epoll")
        except AttributeError:  # pragma: no cover - not Linux
            factory = get_original("select", "poll")
    return factory() if factory is not None else None
