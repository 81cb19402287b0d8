"""Many channels per worker: publish-to-delivery latency and the worker's CPU
per event, with 10, 1,000 and 10,000 channels in one worker (one subscriber
each), events published on a few of them. Redis backend, one gunicorn gevent
worker, the publisher in this process (as a task worker would be).

Usage: python benchmarks/channels.py [--counts 10,1000,10000] [--events 500]
    [--rate 100] [--hot 4] [--warmup 3000] [--warmup-rate 1000]

The Redis listener's one ``XREAD`` names every channel its worker listens
to; this measures what that costs as the count grows. Each event's data is
the publisher's clock in nanoseconds; the reader notes when its bytes come.
CPU is the worker's user + system time (``/proc/<pid>/stat``) over the
publishing, divided by the events (idle heartbeats included, as in life).

The worker runs with ``gcwatch`` (this directory's ``gcwatch/sitecustomize.py``)
noting each full garbage collection: their count, the longest, and how many
objects the collector tracked, and how many fell in the measured window. A
full collection visits every tracked object, so its pause grows with the
streams a worker holds; the unmeasured warm-up lets the one that opening
them makes due happen before the measured events.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import socket
import sys
import tempfile
import time
import typing as t
from pathlib import Path

import httpx
from flask import Flask

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from conftest import RedisServer  # noqa: E402
from conftest import Server  # noqa: E402

from flask_eventstream import EventStream  # noqa: E402

DATA = re.compile(rb"data: (\d+)\n")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def ratio(value: float, base: float) -> str:
    # CPU time comes in clock ticks (10 ms): a short run can read zero.
    return f"{value / base:.2f}x" if base else "n/a"


def open_streams(port: int, count: int) -> list[socket.socket]:
    """``count`` streams, each on a channel of its own, heads read."""
    socks = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        request = f"GET /stream/ch-{n} HTTP/1.0\r\nHost: bench\r\n\r\n"
        sock.sendall(request.encode())
        got = b""
        while b"\r\n\r\n" not in got:  # the head: the stream is live
            got += sock.recv(4096)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def measure(
    port: int,
    pid: int,
    count: int,
    args: argparse.Namespace,
    app: Flask,
    events: EventStream,
    gc_log: Path,
) -> dict[str, t.Any]:
    socks = open_streams(port, count)
    hot = [socks[n] for n in range(min(args.hot, count))]
    selector = selectors.DefaultSelector()
    for sock in hot:
        selector.register(sock, selectors.EVENT_READ, bytearray())
    # Steady state first: a worker that has just opened thousands of streams
    # owes a full collection (see gcwatch), which the first events would set
    # off. These events are not measured; the full collections are counted.
    warmed: list[float] = []
    publish(app, events, len(hot), args.warmup, args.warmup_rate, selector, warmed)
    # What the open streams cost with no event (heartbeats, the monitor),
    # over as long as the events take: the cost of events is what is above.
    cpu_before = cpu_seconds(pid)
    time.sleep(args.events / args.rate)
    idle = cpu_seconds(pid) - cpu_before
    cpu_before = cpu_seconds(pid)
    started = time.time()
    latencies: list[float] = []
    publish(app, events, len(hot), args.events, args.rate, selector, latencies)
    ended = time.time()
    cpu = cpu_seconds(pid) - cpu_before
    for sock in socks:
        sock.close()
    ordered = sorted(latencies)
    collections = full_collections(gc_log)
    during = [c for c in collections if started <= c[0] <= ended]
    return {
        "channels": count,
        "deliveries": len(ordered),
        "lost": args.events - len(ordered) + args.warmup - len(warmed),
        "p50_ms": ordered[len(ordered) // 2],
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max_ms": ordered[-1],
        "cpu_us_per_event": cpu / args.events * 1e6,
        "above_idle_us_per_event": max(0.0, cpu - idle) / args.events * 1e6,
        "full_gcs": len(collections),
        "longest_gc_ms": max((c[1] for c in collections), default=0.0),
        "tracked": collections[-1][2] if collections else 0,
        "full_gcs_measured": len(during),
    }


def publish(
    app: Flask,
    events: EventStream,
    hot: int,
    count: int,
    rate: float,
    selector: selectors.BaseSelector,
    latencies: list[float],
) -> None:
    """Publish ``count`` events at ``rate`` a second on the ``hot`` channels,
    reading the streams meanwhile, then wait (10 s at most) for the rest.
    """
    expected = len(latencies) + count
    started = time.monotonic()
    with app.app_context():
        for n in range(count):
            events.publish(f"ch-{n % hot}", str(time.time_ns()))
            deadline = started + (n + 1) / rate
            while (wait := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(wait):
                    read(key, latencies)
    end = time.monotonic() + 10
    while len(latencies) < expected and time.monotonic() < end:
        for key, _ in selector.select(0.1):
            read(key, latencies)


def full_collections(log: Path) -> list[tuple[float, float, int]]:
    """The worker's full collections: (when, milliseconds, tracked objects)."""
    if not log.exists():
        return []
    rows = (line.split() for line in log.read_text().splitlines())
    return [(float(when), float(took), int(objects)) for when, took, objects in rows]


def read(key: selectors.SelectorKey, latencies: list[float]) -> None:
    buffer: bytearray = key.data
    try:
        chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
    except BlockingIOError:
        return
    now = time.time_ns()
    buffer += chunk
    cut = buffer.rfind(b"\n\n")
    if cut >= 0:
        found = DATA.findall(buffer[: cut + 1])
        latencies.extend((now - int(sent)) / 1e6 for sent in found)
        del buffer[: cut + 2]


def main(argv: list[str] | None = None) -> list[dict[str, t.Any]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="10,1000,10000")
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--hot", type=int, default=4, help="channels published to")
    parser.add_argument("--warmup", type=int, default=3000, help="events not measured")
    parser.add_argument("--warmup-rate", type=float, default=1000)
    args = parser.parse_args(argv)
    redis = RedisServer().start()
    rows = []
    # The publisher: an app of this process on the same Redis.
    app = Flask("publisher")
    app.config["EVENTSTREAM_BACKEND"] = redis.url
    events = EventStream(app)
    scratch = tempfile.mkdtemp(prefix="channels-")
    try:
        for count in (int(c) for c in args.counts.split(",")):
            # Heartbeats past the run: 10,000 streams opened at once send theirs
            # together, a cost of the streams (see benchmarks/README.md), not
            # of the channels the listener follows.
            config = {"BACKEND": redis.url, "HEARTBEAT": 600}
            server = Server(
                "gevent",
                workers=1,
                config=config,
                extra=["--worker-connections", str(count + 100)],
            )
            gc_log = Path(scratch, f"gc-{count}")
            server.env["GCWATCH_LOG"] = str(gc_log)
            server.env["PYTHONPATH"] = os.pathsep.join(
                [str(ROOT / "benchmarks" / "gcwatch"), server.env["PYTHONPATH"]]
            )
            server.start()
            try:
                health = httpx.get(server.url + "/health", timeout=5)
                pid = int(health.headers["X-Worker-Pid"])
                row = measure(server.port, pid, count, args, app, events, gc_log)
                rows.append(row)
                print(rows[-1], flush=True)
            finally:
                server.stop()
    finally:
        events.hub_for(app).backend.close()
        redis.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    base = rows[0]
    print(
        f"\n{args.events} events at {args.rate:g}/s on {args.hot} channels,"
        f" after {args.warmup} at {args.warmup_rate:g}/s not measured"
    )
    print(
        "| channels in the worker | p50 ms | p99 ms | p99 vs first | max ms"
        " | worker CPU µs/event | vs first | above idle µs/event | vs first"
        " | lost | full GCs (measured) | longest GC ms | tracked objects |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        above = row["above_idle_us_per_event"]
        print(
            f"| {row['channels']:,} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f}"
            f" | {ratio(row['p99_ms'], base['p99_ms'])} | {row['max_ms']:.2f}"
            f" | {row['cpu_us_per_event']:.0f}"
            f" | {ratio(row['cpu_us_per_event'], base['cpu_us_per_event'])}"
            f" | {above:.0f} | {ratio(above, base['above_idle_us_per_event'])}"
            f" | {row['lost']} | {row['full_gcs']} ({row['full_gcs_measured']})"
            f" | {row['longest_gc_ms']:.1f} | {row['tracked']:,} |"
        )
    return rows


if __name__ == "__main__":
    main()
