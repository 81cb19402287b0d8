"""Appends made at the same moment, sent to Redis in one pipeline.

Each publish is one call of the append script. Publishes made at once (the
requests of a worker's greenlets, the threads of a task worker) would each
wait for a pooled connection and pay a round trip of their own. Instead the
first caller sends its call together with those that came while it yielded,
in one pipeline; each caller gets its own reply, or its own error. Redis
runs them one after the other, as before, and the entries they publish reach
every listener together, which writes them to each client in one write.

One pipeline is in flight at a time per backend: calls that come meanwhile
wait, and the first of them sends the next.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t

import redis
from redis.commands.core import Script

from .scripts import Append
from .scripts import append_reply
from .scripts import Appended
from .scripts import Repeated

logger = logging.getLogger("flask_eventstream")


class NotSent(redis.ConnectionError):
    """The call never reached Redis (no connection could be had, or it got
    no turn): nothing of it ran. Any other error of a call may come after
    Redis ran it.
    """


class Sent(t.NamedTuple):
    """One call of a pipeline that succeeded."""

    call: Append
    reply: Appended | Repeated


class _Call:
    __slots__ = ("append", "reply", "error", "finished", "lead", "wake")

    def __init__(self, append: Append) -> None:
        self.append = append
        self.reply: Appended | Repeated | None = None
        self.error: BaseException | None = None
        #: Its pipeline came back: :attr:`reply` or :attr:`error` is set.
        self.finished = False
        #: It sends the next pipeline.
        self.lead = False
        #: Set after either of those changes.
        self.wake = threading.Event()


class Batcher:
    """Runs the append script for concurrent callers, a pipeline at a time.

    :param timeout: the most seconds a caller waits for its turn and its
        pipeline (the connection's own timeouts come first).
    :param sent: called by the caller that sent a pipeline, once its
        callers have their replies, with the keys, arguments and reply of
        each call that succeeded, in order (see the own module).
    """

    def __init__(
        self,
        client: redis.Redis,
        script: Script,
        timeout: float,
        sent: t.Callable[[list[Sent]], None] | None = None,
    ) -> None:
        self._client = client
        self._script = script
        self._timeout = timeout
        self._sent = sent
        self._lock = threading.Lock()
        self._waiting: list[_Call] = []
        self._sending = False

    def __call__(self, append: Append) -> Appended | Repeated:
        """Run the script with ``append``; return its reply or raise its
        :class:`redis.RedisError`: :class:`NotSent` if it never reached Redis.
        """
        call = _Call(append)
        with self._lock:
            self._waiting.append(call)
            if not self._sending:
                self._sending = call.lead = True
        while not call.finished:
            if call.lead:
                call.lead = False
                self._send_next()  # with this call, unless it went earlier
            elif not call.wake.wait(self._timeout):
                with self._lock:
                    if call.lead or call.finished:
                        continue  # it came as the wait ended
                    waiting = call in self._waiting
                    if waiting:  # else in a pipeline on its way
                        self._waiting.remove(call)
                if waiting:
                    raise NotSent(f"no turn to send to Redis within {self._timeout:g}s")
                raise redis.TimeoutError(
                    f"no answer from Redis within {self._timeout:g}s"
                )
            else:
                call.wake.clear()  # then look: what set it was set before
        if call.error is not None:
            raise call.error
        assert call.reply is not None  # finished without an error
        return call.reply

    def _send_next(self) -> None:
        # Let the callers of this moment join (under gevent: one switch).
        time.sleep(0)
        with self._lock:
            batch, self._waiting = self._waiting, []
        try:
            self._send(batch)
        finally:
            for call in batch:
                call.finished = True
                call.wake.set()
            with self._lock:
                if self._waiting:
                    # The first who came during the round trip sends the next.
                    after = self._waiting[0]
                    after.lead = True
                    after.wake.set()
                else:
                    self._sending = False
        if self._sent is not None:
            done = [
                Sent(c.append, c.reply)
                for c in batch
                if c.error is None and c.reply is not None
            ]
            # Let the callers answer first: under gevent, publishers get their
            # responses and send the next publishes while this one delivers,
            # and those go in the next pipeline together: longer runs, fewer
            # writes to each client (benchmarks/README.md has the figures).
            time.sleep(0)
            try:
                self._sent(done)
            except Exception:  # a bug: the appends are stored all the same
                logger.exception("Handling %d appends sent failed.", len(done))

    def _send(self, batch: list[_Call]) -> None:
        pool = self._client.connection_pool
        try:
            # Connected (and checked) before anything is written: an error
            # here means that nothing of the batch reached Redis.
            held: t.Any = pooled_connection(pool)
        except redis.RedisError as error:
            unsent = NotSent(f"{type(error).__name__}: {error}")
            unsent.__cause__ = error
            for call in batch:
                call.error = unsent
            return
        script = self._script
        try:
            with self._client.pipeline(transaction=False) as pipe:
                pipe.connection, held = held, None  # the pipeline releases it
                for call in batch:
                    keys = call.append.keys()
                    pipe.evalsha(script.sha, len(keys), *keys, *call.append.argv())
                replies = pipe.execute(raise_on_error=False)
                if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                    # Redis forgot the script (a restart, SCRIPT FLUSH): it
                    # ran none of those calls; they go again, with its text.
                    again = [
                        call
                        for call, r in zip(batch, replies, strict=True)
                        if isinstance(r, redis.exceptions.NoScriptError)
                    ]
                    text = str(script.script)
                    for call in again:
                        keys = call.append.keys()
                        pipe.eval(text, len(keys), *keys, *call.append.argv())
                    found = iter(pipe.execute(raise_on_error=False))
                    replies = [
                        next(found)
                        if isinstance(r, redis.exceptions.NoScriptError)
                        else r
                        for r in replies
                    ]
        except redis.RedisError as error:
            for call in batch:
                call.error = error
            return
        finally:
            if held is not None:
                pool.release(held)
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, BaseException):
                call.error = reply
                continue
            try:
                call.reply = append_reply(reply)
            except Exception as error:  # a bug: the caller hears of it
                call.error = error


def pooled_connection(pool: t.Any) -> t.Any:
    """A connection of ``pool``: redis-py before 5.3 requires a command name,
    later ones warn that it is deprecated.
    """
    try:
        return pool.get_connection()
    except TypeError:  # missing 1 required positional argument: 'command_name'
        return pool.get_connection("EVALSHA")
