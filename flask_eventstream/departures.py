"""Noticing clients that left: one poll of every stream's socket for a peer
that hung up, so a gone client frees its slot within a monitor period, not
at the next heartbeat's failed write.

A closed connection makes its socket report a hang-up (Linux's
``POLLRDHUP``), or become readable with nothing to read. The poll is
non-blocking and costs one system call for all the worker's streams: with
epoll (Linux), in proportion to the sockets that changed, not to the streams.
"""

from __future__ import annotations

import os
import select
import socket
import typing as t

from .server import poller

_RDHUP: int = getattr(select, "POLLRDHUP", 0)
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL | _RDHUP
#: Without POLLRDHUP, a readable socket is peeked at: empty means gone.
_MASK = _RDHUP or select.POLLIN

T = t.TypeVar("T")


class Departures(t.Generic[T]):
    """The sockets of the streams being watched, keyed to their owners."""

    def __init__(self) -> None:
        self._poller: t.Any = None
        self._pid = 0
        self._owners: dict[int, tuple[T, t.Any]] = {}
        self._fds: dict[T, int] = {}

    def add(self, owner: T, sock: t.Any) -> None:
        if self._pid != os.getpid():
            # Made in the process that watches: an epoll descriptor made
            # before a fork would be shared by every worker.
            self._pid = os.getpid()
            self._owners.clear()
            self._fds.clear()
            self._poller = poller()
        if self._poller is None or sock is None:
            return
        try:
            fd = sock.fileno()
            if fd in self._owners:  # reused: its old owner was not discarded
                self._forget(fd)
            self._poller.register(fd, _MASK)
        except (OSError, ValueError):
            return  # already closed: the stream finds out by itself
        self._owners[fd] = (owner, sock)
        self._fds[owner] = fd

    def discard(self, owner: T) -> None:
        """Stop watching ``sock`` (before its descriptor is closed or reused)."""
        fd = self._fds.get(owner)
        if fd is not None:
            self._forget(fd)

    def gone(self) -> list[T]:
        """Return the owners whose client hung up since the last call; they
        are no longer watched.
        """
        if self._poller is None or not self._owners or self._pid != os.getpid():
            return []
        found: list[T] = []
        for fd, events in self._poller.poll(0):
            entry = self._owners.get(fd)
            if entry is None:
                continue
            owner, sock = entry
            if not events & _GONE and not _peeked_end(sock):
                if events & select.POLLIN and not _RDHUP:
                    self._forget(fd)  # data, not an end: stop asking
                continue
            self._forget(fd)
            found.append(owner)
        return found

    def _forget(self, fd: int) -> None:
        entry = self._owners.pop(fd, None)
        if entry is not None:
            self._fds.pop(entry[0], None)
        try:
            self._poller.unregister(fd)
        except (OSError, KeyError):
            pass


def _peeked_end(sock: t.Any) -> bool:
    if _RDHUP:
        return False
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"")
    except BlockingIOError:
        return False
    except OSError:
        return True
