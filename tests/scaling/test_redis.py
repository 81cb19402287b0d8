"""The Redis backend with many gunicorn gevent workers and a real redis-server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import typing as t
import uuid

import httpx
import pytest
from clients import Follower
from clients import Proxy
from clients import RawStream
from conftest import redis_config
from conftest import RedisServer
from conftest import serve
from conftest import Server
from conftest import TESTS
from flask import Flask

from flask_eventstream import Event
from flask_eventstream import EventStream
from flask_eventstream import PublishError
from flask_eventstream import PublishNotStored
from flask_eventstream import PublishOutcomeUnknown
from flask_eventstream.testing import check_delivery

pytestmark = pytest.mark.redis


cluster = serve(backends=["redis"], workers=3)


def publisher(
    server: Server, channel: str, count: int, pause: float = 0.0
) -> subprocess.Popen[str]:
    """Publish from a separate process, as a script or task worker would."""
    return subprocess.Popen(
        [sys.executable, str(TESTS / "publisher.py"), channel, str(count), str(pause)],
        env=server.env,
        cwd=TESTS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> list[str]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out.split()


def test_60_clients_on_3_workers_get_500_events_from_another_process(
    cluster: Server,
) -> None:
    followers = [Follower(cluster.url, "/stream/fanout", 500) for _ in range(60)]
    for follower in followers:
        assert follower.ready.wait(20)
    ids = finish(publisher(cluster, "fanout", 500))
    pids = set()
    for follower in followers:
        got = follower.wait()
        assert [e.id for e in got] == ids
        assert [e.data for e in got] == [f"e{n}" for n in range(500)]
        pids.update(follower.pids)
    assert len(pids) >= 2, "all clients landed on one worker"


def test_poll_any_worker_with_the_same_cursor(cluster: Server) -> None:
    first, *rest = cluster.publish("polls", count=4)
    answers, pids = set(), set()
    for _ in range(30):
        rv = httpx.get(
            cluster.url + "/events/polls",
            params={"transport": "poll", "lastEventId": first},
            timeout=5,
        )
        answers.add(rv.content)
        pids.add(rv.headers["x-worker-pid"])
    assert len(answers) == 1
    assert [e["id"] for e in json.loads(answers.pop())["events"]] == rest
    assert len(pids) >= 2


def test_resume_on_another_worker(cluster: Server) -> None:
    raw = RawStream(cluster.url, "/stream/hop-a,hop-b")
    assert raw.open() == []  # a fresh client: the opening has no event
    cluster.publish("hop-a", "a0")
    raw.events(1)
    cursor, first_pid = raw.parser.last_event_id, raw.headers["x-worker-pid"]
    raw.close()
    sent = cluster.publish("hop-b", "b{n}", count=2) + cluster.publish("hop-a", "a1")
    for _ in range(30):  # reconnect until another worker answers
        again = RawStream(cluster.url, "/stream/hop-a,hop-b", {"Last-Event-ID": cursor})
        again.read_head()
        if again.headers["x-worker-pid"] != first_pid:
            break
        again.close()
    assert again.headers["x-worker-pid"] != first_pid
    assert [e.id for e in again.events(3)] == sent
    again.close()


def test_sigkill_a_worker_mid_stream(cluster: Server) -> None:
    followers = [Follower(cluster.url, "/stream/kill", 400) for _ in range(30)]
    for follower in followers:
        assert follower.ready.wait(20)
    victim = followers[0].pids[0]
    proc = publisher(cluster, "kill", 400, pause=0.005)
    assert proc.stdout is not None
    for _ in range(100):  # a quarter of the events are out
        proc.stdout.readline()
    os.kill(int(victim), signal.SIGKILL)
    finish(proc)
    for follower in followers:
        got = follower.wait()
        assert [e.data for e in got] == [f"e{n}" for n in range(400)]
        if follower.pids[0] != victim:
            assert follower.reconnects == 0, "a client of another worker was cut"
        else:
            assert follower.reconnects >= 1
    assert any(f.pids[0] == victim for f in followers)


def test_cli_publish_reaches_clients(cluster: Server) -> None:
    follower = Follower(cluster.url, "/stream/cli", 1)
    assert follower.ready.wait(20)
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "serverapp", "eventstream",
         "publish", "cli", "hello from cli", "--event", "greet"],
        env=cluster.env, cwd=TESTS, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (event,) = follower.wait()
    assert (event.id, event.event, event.data) == (
        result.stdout.strip(),
        "greet",
        "hello from cli",
    )


def test_redis_restart_mid_stream() -> None:
    # Restarted without persistence, Redis has lost its history: streams
    # stay served, and every client is told (a reset) rather than resuming
    # into a store that no longer holds its cursor.
    redis = RedisServer().start()
    server = Server("gevent", workers=2, config=redis_config(redis)).start()
    try:
        followers = [Follower(server.url, "/stream/outage", 101) for _ in range(10)]
        for follower in followers:
            assert follower.ready.wait(20)
        before = finish(publisher(server, "outage", 50))
        redis.stop()
        rv = server.http.post("/publish", data={"channel": "outage"}, timeout=10)
        assert rv.status_code == 503
        assert "Redis could not store the event" in rv.json()["error"]
        failed = publisher(server, "outage", 1)
        failed.communicate(timeout=30)
        assert failed.returncode != 0
        redis.start()
        deadline = time.monotonic() + 30
        while not all(
            any(e.event == "eventstream-reset" for e in f.received) for f in followers
        ):
            assert time.monotonic() < deadline, [len(f.received) for f in followers]
            time.sleep(0.1)
        after = finish(publisher(server, "outage", 50))
        for follower in followers:
            got = follower.wait()
            check_delivery(before + after, got)
            assert [e.id for e in got if e.event is None] == before + after
            (reset,) = [e for e in got if e.event == "eventstream-reset"]
            assert json.loads(reset.data)["reason"] == "epoch"
    finally:
        server.stop()
        redis.stop()


@pytest.mark.parametrize("clients", [10, 200])
def test_redis_connections_do_not_grow_with_clients(clients: int) -> None:
    redis = RedisServer().start()
    server = Server("gevent", config=redis_config(redis)).start()
    client = redis.client()
    streams: list[RawStream] = []
    try:
        (cursor,) = server.publish("conn-0", "x")
        for n in range(clients):
            # Each one replays (a read) on a channel of its own.
            raw = RawStream(server.url, f"/stream/conn-{n}", {"Last-Event-ID": cursor})
            streams.append(raw)
        for raw in streams:
            raw.read_head()
            raw.read_body()
        server.publish("conn-1", "y")
        assert [e.data for e in streams[1].events(1)] == ["y"]
        listed = client.client_list()
        ours = [c for c in listed if c["name"] != "" or c["cmd"] != "client|list"]
        # The listener and a pool of at most 4: never one per client.
        assert 1 <= len(ours) - 1 <= 5, ours
    finally:
        # Failed or not: a socket left open would warn in another test.
        for raw in streams:
            raw.close()
        client.close()
        server.stop()
        redis.stop()


def test_cursorless_clients_start_where_the_listener_is(
    redis_server: RedisServer,
) -> None:
    """Clients without a cursor, on a channel the worker already listens to,
    start at its listener's position: no Redis round trip each (thousands
    connect at once after a deploy), and no gap after it.
    """
    server = Server("gevent", config=redis_config(redis_server)).start()
    client = redis_server.client()

    def gets() -> int:
        return int(client.info("commandstats").get("cmdstat_get", {}).get("calls", 0))

    try:
        first = RawStream(server.url, "/stream/start")
        assert first.open() == []
        server.wait_for(lambda stats: stats["channels"].get("start") == 1)
        (one,) = server.publish("start", "one")
        assert first.events(1) == [Event("one", id=one)]
        before = gets()
        later = [RawStream(server.url, "/stream/start") for _ in range(20)]
        for stream in later:
            stream.read_head()
            assert stream.read_body() == f"retry: 500\nid: {one}\n\n".encode()
        assert gets() == before
        (two,) = server.publish("start", "two")
        for stream in [first, *later]:
            assert stream.events(1) == [Event("two", id=two)]
            stream.close()
    finally:
        server.stop()


def test_a_burst_of_clients_on_their_own_channels_share_redis_round_trips(
    redis_server: RedisServer,
) -> None:
    """400 clients, each on a channel of its own (one per user, say), all at
    once: every stream opens, and the worker's few Redis connections are not
    asked for a GET and a CLIENT UNBLOCK per channel.
    """
    server = Server("gevent", config=redis_config(redis_server)).start()
    client = redis_server.client()

    def calls(command: str) -> int:
        stats = client.info("commandstats").get(f"cmdstat_{command}", {})
        return int(stats.get("calls", 0))

    clients = 400
    streams: list[RawStream] = []
    try:
        before = calls("get"), calls("client|unblock")
        for n in range(clients):
            streams.append(RawStream(server.url, f"/stream/own-{n}", deferred=True))
        # Connected first, then every request at once: a burst, whatever
        # the load on this test's own process.
        for stream in streams:
            stream.send()
        for stream in streams:
            assert stream.open() == []
            assert stream.status == 200
        server.wait_for(lambda stats: stats["connections"] == clients)
        gets = calls("get") - before[0]
        unblocks = calls("client|unblock") - before[1]
        assert gets < clients / 2, gets
        assert unblocks < clients / 2, unblocks
        (sent,) = server.publish("own-399", "last")
        assert streams[-1].events(1) == [Event("last", id=sent)]
    finally:
        for stream in streams:
            stream.close()
        server.stop()


ONCE = """
import threading
from serverapp import app, events

ids = []
def publish():
    with app.app_context():
        ids.append(events.publish("paid", "order 7 paid", idempotency_key="pay-7"))
threads = [threading.Thread(target=publish) for _ in range(7)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(" ".join(sorted({event.id for event in ids})))
"""


def test_concurrent_publishes_with_one_idempotency_key_store_one_event(
    redis_server: RedisServer,
) -> None:
    """21 publishes from 3 processes at once, one key: one event stored and
    delivered, and every caller gets its id.
    """
    server = Server("gevent", config=redis_config(redis_server)).start()
    try:
        stream = RawStream(server.url, "/stream/paid")
        stream.open()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", ONCE],
                env=server.env,
                cwd=TESTS,
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(3)
        ]
        answers = {proc.communicate(timeout=60)[0].strip() for proc in procs}
        assert all(proc.returncode == 0 for proc in procs)
        (id,) = answers  # every process saw the same single id
        assert " " not in id
        (event,) = stream.events(1)
        assert (event.id, event.data) == (id, "order 7 paid")
        prefix = server.env["FLASK_EVENTSTREAM_REDIS_PREFIX"].strip('"')
        assert redis_server.client().xlen(f"{prefix}stream:paid") == 1
        (again,) = server.publish("paid", "unrelated")
        assert stream.events(1)[0].id == again  # nothing else came before it
        stream.close()
    finally:
        server.stop()


def test_a_publish_whose_reply_was_lost_is_stored_once_when_retried(
    redis_server: RedisServer,
) -> None:
    """The case idempotency keys exist for: Redis stored the event, the reply
    never came, ``publish`` raised ``PublishError``; the caller's retry with
    the same key returns the stored event and stores nothing.
    """
    proxy = Proxy(redis_server.port)
    prefix = f"lost-{uuid.uuid4().hex[:6]}:"
    app = Flask(__name__)
    app.config["EVENTSTREAM_BACKEND"] = f"redis://127.0.0.1:{proxy.port}/0"
    app.config["EVENTSTREAM_REDIS_PREFIX"] = prefix
    events = EventStream(app)
    redis = redis_server.client()
    try:
        with app.app_context():
            events.publish("warm-up", "loads the script")  # no NOSCRIPT below
            proxy.drop_replies = True
            with pytest.raises(PublishError):
                events.publish("paid", "order 9", idempotency_key="order-9")
            proxy.drop_replies = False
            ((stored_id, _),) = redis.xrange(f"{prefix}stream:paid")
            retried = events.publish("paid", "order 9", idempotency_key="order-9")
            assert redis.xlen(f"{prefix}stream:paid") == 1
            assert retried.id is not None
            assert retried.id.startswith(stored_id.decode() + "-")
            assert retried.data == "order 9"
    finally:
        events.hub_for(app).backend.close()
        proxy.close()


def test_a_client_back_while_the_listener_changes_epoch_misses_nothing() -> None:
    """The listener of a worker finds the store emptied (FLUSHALL) and ends
    its streams; a client that comes back at once (in ``lost``) is reset to
    the head of that moment, and events stored meanwhile, before the
    listener moved on, must still reach it: its next event follows what it
    got, so it does not end as lagged.
    """
    from flask_eventstream.backends import Sink
    from flask_eventstream.backends.redis import RedisBackend
    from flask_eventstream.ids import Record
    from flask_eventstream.ids import Run

    redis = RedisServer().start()  # its own: it is emptied
    other = RedisBackend(redis.url, 100, prefix="ep:")  # another process
    delivered: list[Record] = []
    came_back: list[tuple[int, int]] = []
    done = threading.Event()

    def deliver(run: Run) -> None:
        delivered.extend(run.records)
        if run.records[-1].event.data == "third":
            done.set()

    def lost(channel: str | None, reason: str) -> None:
        assert (channel, reason) == (None, "epoch")
        # A client reconnects now: reset to the head; more is published.
        came_back.append(listening.head().key)
        other.append("room", Event("second"))

    sink = Sink(deliver, lambda channel: None, lost)
    listening = RedisBackend(redis.url, 100, prefix="ep:", sink=sink)
    try:
        listening.listen("room")
        other.append("room", Event("old"))
        redis.client().flushall()
        other.append("room", Event("first"))
        deadline = time.monotonic() + 10
        while not came_back:
            assert time.monotonic() < deadline, "the listener saw no new epoch"
            time.sleep(0.01)
        other.append("room", Event("third"))
        assert done.wait(10), [r.event.data for r in delivered]
        (high,) = came_back
        # What the client that came back receives live, as a subscription
        # checks it: each event follows the one before.
        for record in [r for r in delivered if r.key > high]:
            assert record.prev is not None and record.prev <= high, (record, high)
            high = record.key
    finally:
        listening.close()
        other.close()
        redis.stop()


def test_a_poll_of_many_channels_reads_about_what_it_answers() -> None:
    """A poll and a long-poll of 8 channels with 120 events of 4 KB stored on
    each answer ``POLL_BATCH`` events, the first in id order, and read from
    Redis about what they send: not ``POLL_BATCH`` events of every channel.
    """
    from flask_eventstream.backends.redis import RedisBackend

    redis = RedisServer().start()  # its own: its bytes are this test's
    config = {"BACKEND": redis.url, "REDIS_PREFIX": "bytes:", "POLL_BATCH": 100}
    server = Server("gevent", config=config).start()
    publisher_ = RedisBackend(redis.url, 1000, prefix="bytes:")
    client = redis.client()
    channels = [f"wide{c}" for c in range(8)]
    try:
        start = str(publisher_.head())
        for n in range(120):
            for channel in channels:
                publisher_.append(channel, Event(f"{channel} {n} " + "x" * 4000))
        url = f"{server.url}/stream/{','.join(channels)}"
        for transport in ("poll", "longpoll"):
            before = int(client.info("stats")["total_net_output_bytes"])
            answer = httpx.get(
                url,
                params={"transport": transport, "lastEventId": start},
                timeout=30,
            )
            read = int(client.info("stats")["total_net_output_bytes"]) - before
            assert answer.status_code == 200, answer.text
            events = answer.json()["events"]
            assert [e["data"][:8] for e in events[:9]] == [
                f"{c} 0 " for c in channels
            ] + ["wide0 1 "]
            assert len(events) == 100
            # 100 events of 4 KB are 400 KB; the answer is that and its JSON.
            assert read < 1.25 * len(answer.content), (read, len(answer.content))
    finally:
        publisher_.close()
        client.close()
        server.stop()
        redis.stop()


def test_the_redis_knobs_reach_the_pool_and_the_listener(
    redis_server: RedisServer,
) -> None:
    app = Flask(__name__)
    app.config.update(
        EVENTSTREAM_BACKEND=redis_server.url,
        EVENTSTREAM_REDIS_PREFIX=f"knobs-{uuid.uuid4().hex[:6]}:",
        EVENTSTREAM_REDIS_POOL_SIZE=2,
        EVENTSTREAM_REDIS_TIMEOUT=1.5,
        EVENTSTREAM_REDIS_IDLE_CHECK=0.25,
    )
    events = EventStream(app)
    backend = events.hub_for(app).backend
    try:
        pool = backend.store.client.connection_pool  # type: ignore[attr-defined]
        assert (pool.max_connections, pool.timeout) == (2, 1.5)
        assert pool.connection_kwargs["socket_timeout"] == 1.5
        assert backend.listener.idle == 0.25  # type: ignore[attr-defined]
    finally:
        backend.close()


def test_the_batch_timeout_reaches_the_publish_batcher() -> None:
    """EVENTSTREAM_REDIS_BATCH_TIMEOUT bounds a publisher's wait for its
    turn: with Redis paused, a publish in flight waits for its answer
    (EVENTSTREAM_REDIS_TIMEOUT), and one made meanwhile gives up after the
    batch timeout, knowing that nothing of it was sent.
    """
    redis = RedisServer().start()  # its own: it is paused
    app = Flask(__name__)
    app.config["EVENTSTREAM_BACKEND"] = redis.url
    app.config["EVENTSTREAM_REDIS_TIMEOUT"] = 3
    app.config["EVENTSTREAM_REDIS_BATCH_TIMEOUT"] = 0.5
    events = EventStream(app)
    assert redis.proc is not None
    first: list[BaseException] = []

    def in_flight() -> None:
        with app.app_context():
            try:
                events.publish("turn", "first")
            except PublishError as error:
                first.append(error)

    try:
        with app.app_context():
            events.publish("turn", "warm-up")  # the script is loaded
        os.kill(redis.proc.pid, signal.SIGSTOP)
        try:
            leader = threading.Thread(target=in_flight)
            leader.start()
            time.sleep(0.3)  # its pipeline is sent, and waits for an answer
            started = time.monotonic()
            with app.app_context(), pytest.raises(PublishNotStored) as refused:
                events.publish("turn", "second")
            waited = time.monotonic() - started
        finally:
            os.kill(redis.proc.pid, signal.SIGCONT)
        leader.join(10)
        assert "no turn to send to Redis within 0.5s" in str(refused.value)
        assert 0.4 < waited < 2.0, waited
        assert first == []  # answered once Redis resumed, within its 3 s
        client = redis.client()
        stored = client.xrange("eventstream:stream:turn")
        client.close()
        assert [fields[b"d"] for _, fields in stored] == [b"warm-up", b"first"]
    finally:
        events.hub_for(app).backend.close()
        redis.stop()


def test_a_publish_error_tells_not_stored_from_outcome_unknown() -> None:
    """Redis paused past the store's socket timeout: the command was sent,
    no answer came, and the event is stored once Redis resumes, so the
    error says the outcome is unknown (a retry with the key stores nothing
    more). Redis stopped: the command never reached it, and the error says
    nothing was stored.
    """
    redis = RedisServer().start()  # its own: it is paused and stopped
    app = Flask(__name__)
    app.config["EVENTSTREAM_BACKEND"] = redis.url
    app.config["EVENTSTREAM_REDIS_PREFIX"] = "outcome:"
    app.config["EVENTSTREAM_REDIS_TIMEOUT"] = 1  # the wait for an answer
    events = EventStream(app)
    client = redis.client()
    assert redis.proc is not None
    try:
        with app.app_context():
            events.publish("paid", "warm-up")  # the script is loaded
            os.kill(redis.proc.pid, signal.SIGSTOP)
            try:
                with pytest.raises(PublishOutcomeUnknown) as unknown:
                    events.publish("paid", "order 1", idempotency_key="order-1")
            finally:
                os.kill(redis.proc.pid, signal.SIGCONT)
            assert isinstance(unknown.value, PublishError)
            message = str(unknown.value)
            assert "may have been stored" in message and "idempotency_key" in message
            assert client.xlen("outcome:stream:paid") == 2  # it was stored
            again = events.publish("paid", "order 1", idempotency_key="order-1")
            assert client.xlen("outcome:stream:paid") == 2  # and only once
            assert again.data == "order 1"
            redis.stop()
            with pytest.raises(PublishNotStored) as refused:
                events.publish("paid", "order 2", idempotency_key="order-2")
            assert isinstance(refused.value, PublishError)
            assert "Nothing was stored" in str(refused.value)
    finally:
        events.hub_for(app).backend.close()
        client.close()
        redis.stop()


def test_an_append_redis_would_refuse_writes_nothing_and_says_so(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expiry past what Redis takes (a history TTL or an idempotency
    window of 1e20 s; init_app refuses such settings, the store must hold
    whatever reaches it) is refused before the append script's first write:
    nothing is stored, and the error says so truly.
    """
    from flask_eventstream.backends.base import Once

    app = Flask(__name__)
    app.config["EVENTSTREAM_BACKEND"] = redis_server.url
    app.config["EVENTSTREAM_REDIS_PREFIX"] = f"huge{uuid.uuid4().hex[:6]}:"
    events = EventStream(app)
    store = events.hub_for(app).backend.store  # type: ignore[attr-defined]
    client = redis_server.client()
    stream = store.keys.stream("huge")
    try:
        with app.app_context():
            events.publish("huge", "kept")
            last = client.get(store.keys.last_id)
            keep = store.retention
            monkeypatch.setattr(store, "retention", lambda channel: (100, 1e20))
            with pytest.raises(PublishNotStored) as ttl:
                events.publish("huge", "past the expiry")
            monkeypatch.setattr(store, "retention", keep)
            with pytest.raises(PublishNotStored) as window:
                store.append("huge", Event("past the window"), Once("k", 1e20))
            for refused in (ttl, window):
                message = str(refused.value)
                assert "Nothing was stored" in message, message
                assert "milliseconds" in message and "NOTSTORED" not in message
            assert [data for _, data in _stored(client, stream)] == ["kept"]
            assert client.get(store.keys.last_id) == last
            assert not client.exists(store.keys.once("huge", "k"))
            events.publish("huge", "next")  # and the store goes on
            assert [data for _, data in _stored(client, stream)] == ["kept", "next"]
    finally:
        events.hub_for(app).backend.close()
        client.close()


def _stored(client: t.Any, stream: str) -> list[tuple[bytes, str]]:
    return [(id, fields[b"d"].decode()) for id, fields in client.xrange(stream)]


def test_an_error_after_the_append_wrote_is_outcome_unknown() -> None:
    """Redis does not undo what a script wrote before an error: an error
    that may come after the event was stored (here an ACL refuses the
    script's PEXPIRE, after its XADD) is PublishOutcomeUnknown, not
    PublishNotStored, whose "nothing was stored" would be false.
    """
    redis = RedisServer().start()  # its own: it gets an ACL user
    admin = redis.client()
    admin.acl_setuser(
        "limited",
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-pexpire"],
    )
    app = Flask(__name__)
    app.config["EVENTSTREAM_BACKEND"] = (
        f"redis://limited:secret@127.0.0.1:{redis.port}/0"
    )
    app.config["EVENTSTREAM_REDIS_PREFIX"] = "acl:"
    app.config["EVENTSTREAM_HISTORY_TTL"] = 60  # the script's PEXPIRE
    events = EventStream(app)
    try:
        with app.app_context(), pytest.raises(PublishOutcomeUnknown) as unknown:
            events.publish("acl", "stored all the same")
        message = str(unknown.value)
        assert "may have been stored" in message and "idempotency_key" in message
        assert [d for _, d in _stored(admin, "acl:stream:acl")] == [
            "stored all the same"
        ]
    finally:
        events.hub_for(app).backend.close()
        admin.close()
        redis.stop()


def test_close_channel_that_sent_nothing_says_so(redis_server: RedisServer) -> None:
    """close_channel with Redis down, or with no pooled connection free
    within the timeout, sent nothing: PublishNotStored, with a message for
    close_channel (which takes no idempotency key: closing again is fine).
    """
    from conftest import free_port

    down = Flask(__name__)
    down.config["EVENTSTREAM_BACKEND"] = f"redis://127.0.0.1:{free_port()}/0"
    app = Flask(__name__)
    app.config["EVENTSTREAM_BACKEND"] = redis_server.url
    app.config["EVENTSTREAM_REDIS_PREFIX"] = f"close{uuid.uuid4().hex[:6]}:"
    app.config["EVENTSTREAM_REDIS_POOL_SIZE"] = 1
    app.config["EVENTSTREAM_REDIS_TIMEOUT"] = 0.3
    off, events = EventStream(down), EventStream(app)
    store = events.hub_for(app).backend.store  # type: ignore[attr-defined]
    client = redis_server.client()
    try:
        with down.app_context(), pytest.raises(PublishNotStored) as refused:
            off.close_channel("room")
        pool = store.client.connection_pool
        try:  # the pool's only connection
            held = pool.get_connection()
        except TypeError:  # redis-py before 5.3 wants a command's name
            held = pool.get_connection("SET")
        try:
            with app.app_context(), pytest.raises(PublishNotStored) as taken:
                events.close_channel("room")
        finally:
            pool.release(held)
        for error in (refused, taken):
            message = str(error.value)
            assert "Nothing was done" in message, message
            assert "close_channel again" in message, message
            assert "idempotency_key" not in message, message
        assert "No connection available" in str(taken.value)
        assert not client.exists(store.keys.closed("room"))
        with app.app_context():
            events.close_channel("room")  # with its connection back
        assert client.exists(store.keys.closed("room"))
    finally:
        off.hub_for(down).backend.close()
        events.hub_for(app).backend.close()
        client.close()


def test_flushall_while_streams_are_open_ends_them_once_without_a_gap() -> None:
    """Redis emptied while 8 streams on 2 gevent workers follow a channel a
    process publishes to: each stream gets its reset (``epoch``) and then
    every later event, and none ends as lagged after its reset.
    """
    redis = RedisServer().start()  # its own: it is emptied
    config = {**redis_config(redis), "RETRY": 0.05}
    server = Server("gevent", workers=2, config=config).start()
    try:
        followers = [
            Follower(
                server.url, "/stream/flush", 10_000, until=lambda e: e.data == "last"
            )
            for _ in range(8)
        ]
        for follower in followers:
            assert follower.ready.wait(20)
        before = finish(publisher(server, "flush", 10))
        during = publisher(server, "flush", 60, 0.02)
        deadline = time.monotonic() + 20
        while min(len(f.received) for f in followers) < 15:
            assert time.monotonic() < deadline, [len(f.received) for f in followers]
            time.sleep(0.01)
        redis.client().flushall()
        published = before + finish(during)
        published += server.publish("flush", "last")
        for follower in followers:
            got = follower.wait()
            check_delivery(published, got)
            resets = [e for e in got if e.event == "eventstream-reset"]
            assert resets, "no reset after the store was emptied"
            assert {json.loads(e.data)["reason"] for e in resets} <= {"epoch"}
        assert "did not reach it" not in server.output()  # no stream lagged
    finally:
        server.stop()
        redis.stop()
