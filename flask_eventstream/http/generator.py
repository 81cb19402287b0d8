"""Generator views: the view's generator runs in a thread (a greenlet under
gevent) of its own with a copy of the request context, and the stream sends
what it yields, coalesced, with heartbeats while the view's code waits.
"""

from __future__ import annotations

import queue
import threading
import time
import typing as t

from flask import copy_current_request_context
from flask import current_app

from ..subscription import opened_here
from ..subscription import Subscription
from ..wire import Event
from .sse import HEARTBEAT
from .sse import Options

_END = object()


class Runner:
    """Runs a generator view in a thread (a greenlet under gevent) of its own,
    so the stream can send heartbeats while the view's code waits.
    """

    def __init__(self, items: t.Iterator[t.Any], options: Options) -> None:
        self.items = items
        self.chunks: queue.Queue[t.Any] = queue.Queue(maxsize=64)
        self.stopped = False
        self.opened: list[Subscription] = []
        self.heartbeat = options.heartbeat
        # Runs with a copy of the request context, made here in the view.
        run = copy_current_request_context(self._run)
        self.thread = threading.Thread(target=run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, reason: str = "closed") -> None:
        """Stop at the generator's next item; close its subscriptions now, so
        one the generator waits on ends at once.
        """
        self.stopped = True
        for sub in list(self.opened):
            sub.close(reason)
        try:  # wake the stream if it waits for the next item
            self.chunks.put_nowait(_END)
        except queue.Full:
            pass

    def _put(self, chunk: t.Any) -> bool:
        while not self.stopped:
            try:
                self.chunks.put(chunk, timeout=self.heartbeat)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        opened_here.set(self.opened)
        items = self.items
        try:
            try:
                for item in items:
                    if self.stopped or not self._put(encode_item(item)):
                        break
            except BaseException as error:  # handed to the stream, raised there
                self._put(error)
                return
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        finally:
            for sub in self.opened:
                sub.close()
            self._put(_END)

    def get(self, timeout: float) -> t.Any:
        try:
            return self.chunks.get(timeout=timeout)
        except queue.Empty:
            return None


def generator_body(runner: Runner, options: Options) -> t.Generator[bytes, None, None]:
    heartbeat = options.heartbeat
    try:
        runner.start()
        yield options.opening(None)
        last_write = time.monotonic()
        item = None
        while True:
            if item is None:
                item = runner.get(max(0.0, last_write + heartbeat - time.monotonic()))
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if item is None:
                yield HEARTBEAT
            else:
                chunks = [item]
                item = None
                while True:  # coalesce what is already waiting into one write
                    try:
                        more = runner.chunks.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(more, bytes):
                        item = more  # an end or an error: after this write
                        break
                    chunks.append(more)
                yield b"".join(chunks)
            last_write = time.monotonic()
    finally:
        runner.stop()


def encode_item(item: t.Any) -> bytes:
    """Encode one item a generator view yielded."""
    if isinstance(item, Event):
        return item.encode()
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return Event(item).encode()
    if isinstance(item, dict):
        fields = dict(item)
        data = fields.get("data", "")
        if not isinstance(data, str):
            fields["data"] = current_app.json.dumps(data)
        try:
            return Event(**fields).encode()
        except TypeError as error:
            raise TypeError(
                f"A dict yielded by a stream view holds Event fields (data, event,"
                f" id, retry, comment): {error}"
            ) from None
    raise TypeError(
        "A stream view yields Event, str, bytes or dict items, not"
        f" {type(item).__name__}."
    )
