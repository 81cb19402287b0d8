"""Redis Sentinel: real processes on loopback (one primary, one replica, three
sentinels) and a gunicorn with two gevent workers on a
``redis+sentinel://`` URL. The primary is killed with clients attached.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import typing as t
import uuid
from pathlib import Path

import pytest
from clients import Follower
from clients import RawStream
from conftest import RedisServer
from conftest import Server
from flask import Flask

from flask_eventstream import Event
from flask_eventstream import EventStream
from flask_eventstream import PublishError
from flask_eventstream.testing import check_delivery

pytestmark = pytest.mark.redis

RESET = "eventstream-reset"
SERVICE = "mymaster"


class Deployment:
    """A primary, its replica and three sentinels, each a redis-server."""

    def __init__(self, tmp_path: Path) -> None:
        # No wait before the replica's first sync (5 s by default).
        self.primary = RedisServer("--repl-diskless-sync-delay", "0").start()
        self.replica = RedisServer(
            "--replicaof", "127.0.0.1", str(self.primary.port)
        ).start()
        self.sentinels = []
        for n in range(3):
            conf = tmp_path / f"sentinel-{n}.conf"
            conf.write_text(
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
            )
            self.sentinels.append(RedisServer(str(conf), "--sentinel").start())
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        self.url = f"redis+sentinel://{hosts}/{SERVICE}/0"
        # The replica has synced, and each sentinel has found it, before
        # anything is failed.
        self.wait(self.replicated)
        self.wait(lambda: all(self.replicas_known(s) for s in self.sentinels))

    @staticmethod
    def replicas_known(sentinel: RedisServer) -> bool:
        replicas = sentinel.client().execute_command("SENTINEL", "REPLICAS", SERVICE)
        return len(replicas) == 1

    def primary_port(self) -> int:
        client = self.sentinels[0].client()
        address = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(address[1])

    def replicated(self) -> bool:
        offset = self.primary.client().info("replication")["master_repl_offset"]
        info = self.replica.client().info("replication")
        up = info.get("master_link_status") == "up"
        return up and info.get("slave_repl_offset") == offset

    @staticmethod
    def wait(condition: t.Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            if server.proc is not None and server.proc.poll() is None:
                os.kill(server.proc.pid, signal.SIGCONT)
            server.stop()


@pytest.fixture()
def deployment(tmp_path: Path) -> t.Iterator[Deployment]:
    deployment = Deployment(tmp_path)
    yield deployment
    deployment.stop()


class Publisher:
    """An app of the test process that publishes through Sentinel."""

    def __init__(self, url: str, prefix: str) -> None:
        self.app = Flask("publisher")
        self.app.config.update(EVENTSTREAM_BACKEND=url, EVENTSTREAM_REDIS_PREFIX=prefix)
        self.events = EventStream(self.app)
        self.ids: list[str] = []
        self.errors: list[str] = []
        #: When the first and the last refused publish happened.
        self.refused: list[float] = []

    def publish(self, channel: str, data: str) -> str | None:
        with self.app.app_context():
            try:
                event = self.events.publish(channel, data)
            except PublishError as error:
                self.errors.append(f"{type(error).__name__}: {error}")
                now = time.monotonic()
                self.refused = [self.refused[0] if self.refused else now, now]
                return None
        assert event.id is not None
        self.ids.append(event.id)
        return event.id

    def until_published(self, channel: str, data: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while (sent := self.publish(channel, data)) is None:
            assert time.monotonic() < deadline, self.errors[-3:]
            time.sleep(0.05)
        return sent

    def close(self) -> None:
        self.events.hub_for(self.app).backend.close()


def start(
    deployment: Deployment, channel: str
) -> tuple[Server, Publisher, list[Follower]]:
    prefix = f"s{uuid.uuid4().hex[:8]}:"
    config = {"BACKEND": deployment.url, "REDIS_PREFIX": prefix}
    server = Server("gevent", workers=2, config=config)
    server.extra = ["--reuse-port"]
    server.start()
    followers = [
        Follower(server.url, f"/stream/{channel}", 0, until=lambda e: e.data == "end")
        for _ in range(8)
    ]
    for follower in followers:
        assert follower.ready.wait(20)
    return server, Publisher(deployment.url, prefix), followers


@pytest.mark.slow
def test_a_failover_with_clients_attached_loses_nothing_silently(
    deployment: Deployment,
) -> None:
    """Kill the primary while events flow: ``publish`` raises during the
    switch and succeeds after it, streams stay open, and every client ends
    with every event published (or a reset).
    """
    server, publisher, followers = start(deployment, "fo")
    stop = threading.Event()

    def publish_steadily() -> None:
        n = 0
        while not stop.is_set():
            publisher.publish("fo", f"e{n}")
            n += 1
            time.sleep(0.01)

    thread = threading.Thread(target=publish_steadily)
    thread.start()
    try:
        deployment.wait(lambda: len(publisher.ids) >= 50)
        old = deployment.primary_port()
        os.kill(deployment.primary.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        deployment.wait(lambda: bool(publisher.errors))
        before = len(publisher.ids)
        deployment.wait(lambda: len(publisher.ids) >= before + 50)
        stop.set()
        thread.join(10)
        assert deployment.primary_port() == deployment.replica.port != old
        # Refused while no primary answered, or lost in flight at the kill:
        # each says which, never a bare PublishError.
        kinds = ("PublishNotStored: ", "PublishOutcomeUnknown: ")
        assert all(error.startswith(kinds) for error in publisher.errors)
        first, last = publisher.refused
        print(
            f"publish refused for {last - first:.1f} s ({len(publisher.errors)} tries)"
        )
        publisher.until_published("fo", "end")
        for follower in followers:
            got = follower.wait(60)
            check_delivery(publisher.ids, got)
        # The streams stayed open: no client needed to reconnect.
        assert sum(f.reconnects for f in followers) == 0
    finally:
        stop.set()
        thread.join(10)
        publisher.close()
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("first", ["same", "other"])
def test_writes_the_replica_never_got_end_in_a_reset(
    deployment: Deployment, first: str
) -> None:
    """Events the old primary acknowledged, and clients received, but its
    replica never got (stopped meanwhile): after the failover they are gone
    from the store, and every client that had them or resumes from before
    them gets an ``eventstream-reset`` (a new epoch), never a silent gap.
    The first publish after the switch comes from the publisher that saw
    them, or from another that did not (the listeners find out then).
    """
    server, publisher, followers = start(deployment, "lost")
    try:
        kept = [publisher.until_published("lost", f"kept{n}") for n in range(20)]
        deployment.wait(deployment.replicated)
        # The replica stops, and the primary drops its link: what follows
        # is acknowledged but never sent to it (not even to a socket buffer).
        os.kill(deployment.replica.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
        assert deployment.primary.client().client_kill_filter(_type="replica") == 1
        lost = [publisher.until_published("lost", f"lost{n}") for n in range(10)]
        for follower in followers:
            deployment.wait(lambda f=follower: len(f.received) >= 30)  # type: ignore[misc]
        os.kill(deployment.primary.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        os.kill(deployment.replica.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        deployment.wait(lambda: deployment.primary_port() == deployment.replica.port)
        if first == "other":
            prefix = publisher.app.config["EVENTSTREAM_REDIS_PREFIX"]
            other = Publisher(deployment.url, prefix)
            try:
                after = other.until_published("lost", "after", timeout=60)
            finally:
                other.close()
        else:
            after = publisher.until_published("lost", "after", timeout=60)
        for follower in followers:  # told, then what follows reaches them
            deployment.wait(
                lambda f=follower: any(e.event == RESET for e in f.received)
            )  # type: ignore[misc]
        end = publisher.until_published("lost", "end")
        for follower in followers:
            got = follower.wait(60)
            check_delivery(kept + lost + [after, end], got)
            reasons = [json.loads(e.data)["reason"] for e in got if e.event == RESET]
            assert reasons == ["epoch"], got[-5:]
        # A client that resumes from before the lost events is told too.
        stream = RawStream(server.url, "/stream/lost", {"Last-Event-ID": kept[-1]})
        try:
            opening = stream.open(kept[-1])
        finally:
            stream.close()
        assert [e.event for e in opening] == [RESET], opening
        assert json.loads(opening[0].data)["reason"] == "epoch"
    finally:
        publisher.close()
        server.stop()


def test_a_malformed_sentinel_url_is_a_clear_error() -> None:
    app = Flask("bad")
    app.config["EVENTSTREAM_BACKEND"] = "redis+sentinel://h1:26379,h2:x/mymaster/0"
    with pytest.raises(ValueError, match="'h2:x' is not a sentinel's host:port"):
        EventStream(app)
    app.config["EVENTSTREAM_BACKEND"] = "redis+sentinel://h1:26379"
    with pytest.raises(ValueError, match="give the service and the database"):
        EventStream(app)


def test_an_event_reaches_clients_through_sentinel(deployment: Deployment) -> None:
    server, publisher, followers = start(deployment, "plain")
    try:
        sent = publisher.until_published("plain", "end")
        for follower in followers:
            assert [e for e in follower.wait(30) if e.event != RESET] == [
                Event("end", id=sent)
            ]
    finally:
        publisher.close()
        server.stop()
