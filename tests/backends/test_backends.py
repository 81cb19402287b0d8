"""One suite, every backend: their behaviour cannot drift apart."""

from __future__ import annotations

import threading
import time
import typing as t
import uuid

import pytest
from conftest import RedisServer
from flask import Flask

from flask_eventstream import Event
from flask_eventstream import EventStream
from flask_eventstream.backends import Backend
from flask_eventstream.backends import CursorProblem
from flask_eventstream.backends import MemoryBackend
from flask_eventstream.backends import Record
from flask_eventstream.backends import Run
from flask_eventstream.backends import Sink
from flask_eventstream.backends.base import NOWHERE
from flask_eventstream.ids import Cursor
from flask_eventstream.ids import format_id


class Collector:
    """A ``deliver`` callback that can be waited on."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._changed = threading.Condition()

    def __call__(self, run: Run) -> None:
        with self._changed:
            self.records.extend(run.records)
            self._changed.notify_all()

    def wait(self, count: int, timeout: float = 10.0) -> list[Record]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.records) >= count, timeout):
                raise AssertionError(f"{len(self.records)} of {count} delivered")
            return list(self.records)

    def sink(self) -> Sink:
        """A sink that delivers here (and drops revocations and losses)."""
        return NOWHERE._replace(deliver=self)


#: Makes a backend of the parametrized kind: history, and a sink.
MakeBackend = t.Callable[..., Backend]


@pytest.fixture(params=["memory", "redis"])
def make_backend(
    request: pytest.FixtureRequest,
) -> t.Iterator[t.Callable[[int], Backend]]:
    made: list[Backend] = []

    def make(history: int = 100, sink: Sink = NOWHERE) -> Backend:
        backend: Backend
        if request.param == "memory":
            backend = MemoryBackend(history, sink=sink)
        else:
            from flask_eventstream.backends.redis import RedisBackend

            redis_server: RedisServer = request.getfixturevalue("redis_server")
            # A prefix of its own: tests share the session's redis-server.
            prefix = f"test-{uuid.uuid4().hex[:8]}:"
            backend = RedisBackend(redis_server.url, history, prefix=prefix, sink=sink)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def at(backend: Backend, key: tuple[int, int]) -> Cursor:
    """A cursor at ``key`` in ``backend``'s current epoch."""
    return Cursor(key, backend.head().epoch)


def test_ids_increase_across_channels(make_backend: t.Callable[[int], Backend]) -> None:
    backend = make_backend(100)
    keys = [backend.append(c, Event(c)).key for c in ["a", "b", "a", "c", "b"] * 20]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert backend.head().key == keys[-1]


def test_read_after_a_cursor_merges_channels_in_order(
    make_backend: t.Callable[[int], Backend],
) -> None:
    backend = make_backend(100)
    records = [backend.append(c, Event(f"{c}{n}")) for n in range(5) for c in "abc"]
    cursor = records[4].key
    got = backend.read(["a", "c"], at(backend, cursor), 1000)
    assert [r.event.data for r in got] == [
        r.event.data for r in records[5:] if r.channel in "ac"
    ]
    assert [r.event.id for r in got] == [
        format_id(r.key, backend.head().epoch) for r in got
    ]
    assert backend.read(["a"], at(backend, records[-1].key), 1000) == []
    assert backend.read(["nobody"], at(backend, cursor), 1000) == []


def test_stored_event_keeps_data_and_type(
    make_backend: t.Callable[[int], Backend],
) -> None:
    backend = make_backend(100)
    start = backend.head()
    sent = backend.append("t", Event("l1\nl2 \u2603", event="kind"))
    plain = backend.append("t", Event(""))
    got = backend.read(["t"], start, 1000)
    assert [(r.event.data, r.event.event, r.event.id) for r in got] == [
        ("l1\nl2 \u2603", "kind", sent.event.id),
        ("", None, plain.event.id),
    ]
    assert got[0].event.encode() == sent.event.encode()


def test_cursor_older_than_history_is_expired(
    make_backend: t.Callable[[int], Backend],
) -> None:
    backend = make_backend(10)
    records = [backend.append("x", Event(str(n))) for n in range(600)]
    with pytest.raises(CursorProblem) as problem:
        backend.read(["x"], at(backend, records[0].key), 1000)
    assert problem.value.reason == "expired"
    # The last `history` events are always kept.
    got = backend.read(["x"], at(backend, records[-11].key), 1000)
    assert [r.event.data for r in got] == [str(n) for n in range(590, 600)]


def test_future_cursor_is_unknown(make_backend: t.Callable[[int], Backend]) -> None:
    backend = make_backend(10)
    last = backend.append("x", Event("1")).key
    with pytest.raises(CursorProblem) as problem:
        backend.read(["x"], at(backend, (last[0] + 1000, 0)), 1000)
    assert problem.value.reason == "unknown"


def test_events_are_delivered_in_order(
    make_backend: MakeBackend,
) -> None:
    collector = Collector()
    backend = make_backend(1000, collector.sink())
    backend.listen("d1")
    backend.listen("d2")
    sent = [backend.append(f"d{1 + n % 2}", Event(str(n))).key for n in range(300)]
    backend.append("other", Event("not listened to"))
    got = collector.wait(300)
    assert [r.key for r in got if r.channel in ("d1", "d2")] == sent


def test_publishes_from_threads_are_delivered_in_id_order(
    make_backend: MakeBackend,
) -> None:
    collector = Collector()
    backend = make_backend(1000, collector.sink())
    backend.listen("p")

    def publish() -> None:
        for n in range(50):
            backend.append("p", Event(str(n)))

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    keys = [r.key for r in collector.wait(200) if r.channel == "p"]
    assert keys == sorted(keys) and len(keys) == 200


def test_redis_history_ttl(redis_server: RedisServer) -> None:
    from flask_eventstream.backends.redis import RedisBackend

    prefix = f"ttl-{uuid.uuid4().hex[:8]}:"
    backend = RedisBackend(redis_server.url, 10, ttl=60, prefix=prefix)
    try:
        old = backend.append("quiet", Event("x"))
        ttl_ms = redis_server.client().pttl(f"{prefix}stream:quiet")
        assert 55_000 < ttl_ms <= 60_000
        # Once a channel's stream has expired, a cursor older than the TTL may
        # have missed its events: a reset, never a silent gap.
        redis_server.client().delete(f"{prefix}stream:quiet")
        stale = (old.key[0] - 61_000, 0)
        with pytest.raises(CursorProblem) as problem:
            backend.read(["quiet"], at(backend, stale), 1000)
        assert problem.value.reason == "expired"
        assert (
            backend.read(["quiet"], at(backend, old.key), 1000) == []
        )  # recent cursor: fine
    finally:
        backend.close()


def test_redis_over_a_unix_socket(tmp_path: t.Any) -> None:
    import subprocess

    from conftest import require

    from flask_eventstream.backends import create_backend

    path = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        [require("redis-server"), "--port", "0", "--unixsocket", str(path),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        collector = Collector()
        backend = create_backend(f"unix://{path}", 10, sink=collector.sink())
        for _ in range(100):  # a file appears: nothing to wait on but a poll
            if path.exists():
                break
            time.sleep(0.05)
        assert path.exists(), "redis-server made no socket in 5 s"
        backend.listen("u")
        sent = backend.append("u", Event("over a socket file"))
        (got,) = collector.wait(1)
        assert (got.key, got.event.data) == (sent.key, "over a socket file")
        backend.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_listen_returns_once_redis_confirms_the_channel(
    redis_server: RedisServer,
) -> None:
    """A second subscriber to a channel being set up returns once Redis has
    confirmed the subscription, not before: what is published from then on
    reaches it, while the first still reads the head for its cursor.
    """
    from flask_eventstream.backends.redis import RedisBackend

    prefix = f"setup-{uuid.uuid4().hex[:8]}:"
    collector = Collector()
    backend = RedisBackend(redis_server.url, 10, prefix=prefix, sink=collector.sink())
    entered, gate = threading.Event(), threading.Event()
    real_head = backend.store.head

    def held_head() -> t.Any:
        if not entered.is_set():
            entered.set()
            gate.wait(5)
        return real_head()

    backend.store.head = held_head  # type: ignore[method-assign]
    first = threading.Thread(target=backend.listen, args=("c",))
    first.start()
    try:
        assert entered.wait(5)  # confirmed; the first waits in head()
        backend.listen("c")
        sent = backend.append("c", Event("after"))
        assert [r.key for r in collector.wait(1)] == [sent.key]
        gate.set()
        first.join(5)
        assert backend.head_for(["c"]).key >= sent.key
    finally:
        gate.set()
        first.join(5)
        backend.close()


def test_a_run_shares_its_bytes_and_drops_what_a_client_has() -> None:
    records = [Record("c", (7, n), Event(f"e{n}", id=f"7-{n}")) for n in range(3)]
    run = Run("c", records)
    wire = b"".join(record.event.encode() for record in records)
    assert run.encode() == wire
    assert run.encode_chunk() == b"%X\r\n%b\r\n" % (len(wire), wire)
    assert run.encode_chunk() is run.encode_chunk()  # built once for every client
    assert run.after((6, 99)) is run
    assert run.after((7, 2)) is None
    later = run.after((7, 0))
    assert later is not None
    assert later.records == records[1:]
    assert later.encode() == records[1].event.encode() + records[2].event.encode()
    single = Run("c", records[:1])
    assert single.encode_chunk() is records[0].event.encode_chunk()


def test_an_idempotency_key_stores_once_within_its_window(
    make_backend: t.Callable[[int], Backend],
) -> None:
    from flask_eventstream.backends.base import Once

    backend = make_backend(100)
    start = backend.head()
    first = backend.append("pay", Event("paid", event="order"), Once("k1", 0.3))
    again = backend.append("pay", Event("paid", event="order"), Once("k1", 0.3))
    assert (first.repeat, again.repeat) == (False, True)
    assert again.key == first.key and again.event == first.event
    assert [r.key for r in backend.read(["pay"], start, 100)] == [first.key]
    time.sleep(0.4)
    later = backend.append("pay", Event("paid"), Once("k1", 0.3))
    assert not later.repeat and later.key > first.key


@pytest.mark.redis
def test_concurrent_appends_share_one_pipeline() -> None:
    """Publishes made while one is on its way to Redis go in the next
    pipeline together: two round trips for 32 publishes, each with its own
    id. Redis is paused so that all 31 come while the first waits.
    """
    from flask_eventstream.backends.redis import RedisBackend

    server = RedisServer().start()  # its own: its read count is this test's
    backend = RedisBackend(server.url, 100, prefix="pipe:")
    client = server.client()
    try:
        backend.append("warm", Event("loads the script"))
        reads = int(client.info("stats")["total_reads_processed"])
        client.client_pause(300, all=False)  # writes wait; the INFO does not
        start = threading.Barrier(32, timeout=10)
        ids: list[str] = []

        def publish(n: int) -> None:
            start.wait()
            ids.append(backend.append("piped", Event(f"e{n}")).event.id or "")

        threads = [threading.Thread(target=publish, args=(n,)) for n in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert len(set(ids)) == 32
        assert client.xlen("pipe:stream:piped") == 32
        read = int(client.info("stats")["total_reads_processed"]) - reads
        # Without the pipeline: 47. With it, the first publish and the
        # pipeline of the 31 others, INFO and PAUSE, and the handshake of a
        # pooled connection opened meanwhile.
        assert read <= 10, read
    finally:
        backend.close()
        client.close()
        server.stop()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("pay.1", "pay.2"),
        # Names that a joined "channel:key" or "channel/key" would confuse.
        ("a:b", "a"),
        ("a", "a:b"),
    ],
)
def test_an_idempotency_key_is_scoped_to_its_channel(
    make_backend: t.Callable[[int], Backend], first: str, second: str
) -> None:
    from flask_eventstream.backends.base import Once

    backend = make_backend(100)
    start = backend.head()
    keys = {
        first: "b:c" if first == "a" else "c",
        second: "b:c" if second == "a" else "c",
    }
    one = backend.append(first, Event("one"), Once(keys[first], 30))
    two = backend.append(second, Event("two"), Once(keys[second], 30))
    assert (one.repeat, two.repeat) == (False, False)
    assert two.key > one.key and two.event.data == "two"
    assert [r.event.data for r in backend.read([first], start, 10)] == ["one"]
    assert [r.event.data for r in backend.read([second], start, 10)] == ["two"]
    # Each channel's repeat still returns its own first event.
    again = backend.append(second, Event("two"), Once(keys[second], 30))
    assert again.repeat and again.key == two.key and again.event.data == "two"


def test_a_read_of_many_channels_reads_about_what_it_returns(
    make_backend: t.Callable[[int], Backend],
) -> None:
    """The first ``limit`` events across channels, in id order, and no more
    than the byte bound past the first: a poll of 8 channels does not read
    its batch from each.
    """

    def seen(records: list[Record]) -> list[tuple[str, t.Any, str, t.Any]]:
        return [(r.channel, r.key, r.event.data, r.prev) for r in records]

    backend = make_backend(1000)
    channels = [f"many{c}" for c in range(8)]
    start = backend.head()
    for n in range(40):
        for c, channel in enumerate(channels[: 1 + n % 8]):
            backend.append(channel, Event(f"{c}-{n}" + "x" * 1000))
    everything = seen(backend.read(channels, start, 1000))
    assert [r[1] for r in everything] == sorted(r[1] for r in everything)
    assert len(everything) == sum(1 + n % 8 for n in range(40))
    assert seen(backend.read(channels, start, 50)) == everything[:50]
    some = [r for r in everything if r[0] in channels[3:]]
    assert seen(backend.read(channels[3:], start, 7)) == some[:7]
    backend.read_bytes = 5000  # five events of 1,000 bytes and more
    assert seen(backend.read(channels, start, 50)) == everything[:5]
    backend.read_bytes = 1  # past the first event: at least one comes
    after = at(backend, everything[9][1])
    assert seen(backend.read(channels, after, 50)) == everything[10:11]


@pytest.mark.redis
def test_channels_named_like_library_keys_get_keys_of_their_own(
    redis_server: RedisServer,
) -> None:
    """Every key the Redis backend writes for channels named like its own
    keys (and with idempotency keys and presence) is of the kind
    ``backends/redis/keys.py`` lists, and each channel keeps its own events.
    """
    from flask_eventstream.backends.base import Once
    from flask_eventstream.backends.redis import RedisBackend

    prefix = f"audit-{uuid.uuid4().hex[:6]}:"
    backend = RedisBackend(redis_server.url, 10, prefix=prefix)
    names = ["last-id", "epoch", "control", "stream", "once", "worker", "presence"]
    try:
        start = backend.head()
        for name in names:
            backend.append(name, Event(name), Once(name, 30))
            backend.append(name, Event(name), Once(name, 30))  # a repeat
        backend.close_channel("worker")
        backend.report("host:1:ab", {"n": 1}, 30)
        backend.presence_tick("host:1:ab", 5)
        for name in names:
            backend.presence_set("host:1:ab", name, {"m:x": 1}, False)
        for name in names:
            assert [r.event.data for r in backend.read([name], start, 10)] == [name]
            assert backend.presence_read(name) == {"m:x": 1}
        assert backend.head().key > start.key
        client = redis_server.client()
        kinds = {
            key.decode()[len(prefix) :]: client.type(key).decode()
            for key in client.scan_iter(match=f"{prefix}*")
        }
        expected = {"last-id": "string", "epoch": "string", "control": "stream"}
        expected["worker:host:1:ab"] = "string"
        expected["presence/workers"] = "zset"
        expected["presence/worker/host:1:ab"] = "set"
        for name in names:
            expected[f"stream:{name}"] = "stream"
            expected[f"once/{name}/{name}"] = "hash"
            expected[f"presence/channel/{name}"] = "hash"
            expected[f"presence/channel/{name}/host:1:ab"] = "hash"
        # When close_channel is remembered for tokens: its own part too.
        closed = {k: v for k, v in kinds.items() if k.startswith("closed/")}
        assert set(closed.items()) <= {("closed/worker", "string")}
        assert {k: v for k, v in kinds.items() if k not in closed} == expected
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:6390/abc", "the database 'abc' is not a number"),
        ("redis://127.0.0.1:6390/0?db=x", "the database 'x' is not a number"),
        ("redis://127.0.0.1:99999/0", "the port is not a number"),
        ("redis://127.0.0.1:port/0", "the port is not a number"),
    ],
)
def test_a_redis_url_redis_py_would_misread_fails_at_init_app(
    url: str, message: str
) -> None:
    # redis-py reads redis://host/abc as database 0, without a word.
    app = Flask("bad")
    app.config["EVENTSTREAM_BACKEND"] = url
    with pytest.raises(ValueError, match=message):
        EventStream(app)
