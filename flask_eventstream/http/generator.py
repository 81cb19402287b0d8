"""Generator views: the view's generator runs in a thread (a greenlet under
gevent) of its own with a copy of the request context, and its stream sends
what it yields, coalesced, with heartbeats while the view's code waits.

The generator runs to its first item before the response head is sent, so
that a refusal it raises first (``authorize`` says no, a bad cursor or
token) is answered with its own status, as in any other view.
"""

from __future__ import annotations

import queue
import threading
import typing as t

from flask import copy_current_request_context
from flask import current_app
from werkzeug.exceptions import HTTPException

from ..errors import BackendUnavailable
from ..hub import Hub
from ..server import Task
from ..signals import EndReason
from ..subscription import owner
from ..subscription import Subscription
from ..wire import Event
from .sse import Options
from .stream import MAX_CHUNK

#: The most seconds the response head waits for a generator's first item.
FIRST_ITEM_WAIT = 1.0
#: Seconds a generator whose stream ended may run on before, under gevent,
#: it is stopped where it waits (it yields nothing more).
STOP_GRACE = 1.0

_END = object()


class Runner:
    """Runs a generator view in a thread (a greenlet under gevent) of its
    own: a stream's source. It owns the subscriptions the generator opens:
    they end with it, and how they ended is how the stream ends.

    :param items: the view's generator.
    :param hub: the app's live parts.
    :param name: what it serves, for the log.
    :param options: its stream's options: the opening, and the heartbeat
        (how long it waits at most to hand over an item while its stream is
        busy, before it looks whether it was stopped).
    """

    def __init__(
        self, items: t.Iterator[t.Any], hub: Hub, name: str, options: Options
    ) -> None:
        self.items = items
        self.hub = hub
        self.name = name
        self.options = options
        self.heartbeat = options.heartbeat
        #: The id its first subscription announced, if it opened one before
        #: the stream's opening was written: the stream announces it too, so
        #: a client that reconnects before any event resumes from there.
        self.announce: str | None = None
        self.chunks: queue.Queue[t.Any] = queue.Queue(maxsize=64)
        self.stopped = False
        self.opened: list[Subscription] = []
        #: Set by its first item, its first subscription, or its end.
        self.settled = threading.Event()
        self._held: t.Any = None
        self._failed = False
        # Runs with a copy of the request context, made here in the view.
        self._run_here = copy_current_request_context(self._run)
        self._task: Task | None = None

    def first(self, timeout: float = FIRST_ITEM_WAIT) -> BaseException | None:
        """Start the generator, and wait up to ``timeout`` seconds for its
        first item (or its first subscription); return the exception it
        raised before, if it did.
        """
        self._task = Task(self._run_here)
        self.settled.wait(timeout)
        try:
            item = self.chunks.get_nowait()
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            self.stopped = True
            return item
        self._held = item
        return None

    def adopt(self, subscription: Subscription, announce: str | None) -> None:
        """A subscription opened by the generator (see ``owner``)."""
        self.opened.append(subscription)
        if self.stopped:
            subscription.close()  # its stream ended while it opened
        elif len(self.opened) == 1:
            self.announce = announce
        self.settled.set()

    # -- a Source ---------------------------------------------------------

    def opening(self) -> list[bytes]:
        return [self.options.opening(self.announce)]

    # -- a Source ---------------------------------------------------------

    def take(self, timeout: float) -> list[bytes] | None:
        item = self._held
        self._held = None
        if item is None:
            try:
                if timeout > 0:
                    item = self.chunks.get(timeout=timeout)
                else:
                    item = self.chunks.get_nowait()
            except queue.Empty:
                return []
        ready: list[bytes] = []
        size = 0
        while isinstance(item, bytes):
            ready.append(item)
            size += len(item)
            if size >= MAX_CHUNK:
                return [b"".join(ready)]
            try:  # coalesce what is already waiting into one write
                item = self.chunks.get_nowait()
            except queue.Empty:
                return [b"".join(ready)]
        if ready:
            self._held = item  # an end or an error: after this write
            return [b"".join(ready)]
        if isinstance(item, BaseException):
            self._failed = True
            self._log(item)
        self._held = _END  # every later take says so too
        return None

    def _log(self, error: BaseException) -> None:
        if isinstance(error, HTTPException):
            self.hub.logger.info(
                "%s refused after its stream began: %s",
                self.name,
                error,
            )
        elif isinstance(error, BackendUnavailable):
            self.hub.logger.warning("The stream of %s ended: %s", self.name, error)
        else:
            self.hub.logger.error(
                "%s raised; its stream ends.",
                self.name,
                exc_info=(type(error), error, error.__traceback__),
            )

    def arm(self) -> bool:
        return False  # its code runs in its own greenlet: nothing to park

    def end(self, reason: EndReason) -> None:
        """Stop at the generator's next item; end its subscriptions now, so
        one the generator waits on ends at once.
        """
        self.stopped = True
        for sub in list(self.opened):
            sub.close(reason)
        try:  # wake a take that waits
            self.chunks.put_nowait(_END)
        except queue.Full:
            pass
        if self._task is not None:
            self._task.stop(STOP_GRACE)

    def interrupt(self) -> None:
        pass  # nothing of the stream's own is ever written while it waits

    @property
    def ended(self) -> EndReason | None:
        if self._failed:
            return EndReason.ERROR
        for sub in self.opened:
            if sub.ended is not None and sub.ended is not EndReason.CLOSED:
                return sub.ended
        return EndReason.CLOSED

    # -- the generator's thread -------------------------------------------

    def _put(self, chunk: t.Any) -> bool:
        while not self.stopped:
            try:
                self.chunks.put(chunk, timeout=self.heartbeat)
                self.settled.set()
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        # Reset at the end: a context a greenlet shares would keep this.
        adopting = owner.set(self)
        items = self.items
        try:
            try:
                for item in items:
                    if self.stopped or not self._put(encode_item(item)):
                        break
            except BaseException as error:  # handed to the stream, dealt with there
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
            self.settled.set()
            owner.reset(adopting)


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
