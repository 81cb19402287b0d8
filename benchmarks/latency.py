"""Publish-to-delivery latency: the memory backend (one gunicorn gevent
worker) against Redis (three workers), side by side in one run.

Usage: python benchmarks/latency.py [--clients 30] [--events 500] [--rate 50]

Each event's data is the publisher's clock in nanoseconds; each client notes
when the event's bytes arrive. For Redis the publisher is this process, a
separate process from the server, as a task worker would be; for memory,
events go through the server's /publish endpoint (the only way in).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from clients import RawStream  # noqa: E402
from conftest import RedisServer  # noqa: E402
from conftest import Server  # noqa: E402

DATA = re.compile(rb"data: (\d+)\n")


def measure(
    server: Server,
    clients: int,
    events: int,
    rate: float,
    publish: t.Callable[[str], object],
) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    streams = [
        RawStream(server.url, "/stream/bench", timeout=30) for _ in range(clients)
    ]
    for raw in streams:
        raw.open()

    def read(raw: RawStream) -> None:
        seen, buffer = 0, b""
        while seen < events:
            data = raw.read_body()
            if not data:
                return
            buffer += data
            now = time.time_ns()
            found = DATA.findall(buffer)
            if found:
                buffer = buffer[buffer.rfind(b"\n\n") + 2 :]
            with lock:
                latencies.extend((now - int(sent)) / 1e6 for sent in found)
            seen += len(found)

    threads = [threading.Thread(target=read, args=(raw,)) for raw in streams]
    for thread in threads:
        thread.start()
    for _ in range(events):
        publish(str(time.time_ns()))
        time.sleep(1 / rate)
    for thread in threads:
        thread.join(60)
    for raw in streams:
        raw.close()
    return latencies


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50)
    args = parser.parse_args()

    import httpx

    rows: list[tuple[str, list[float]]] = []
    memory = Server("gevent", config={"HEARTBEAT": 15}).start()
    try:
        with httpx.Client(base_url=memory.url) as client:

            def post(data: str) -> object:
                return client.post("/publish", data={"channel": "bench", "data": data})

            rows.append(
                (
                    "memory, 1 worker",
                    measure(memory, args.clients, args.events, args.rate, post),
                )
            )
    finally:
        memory.stop()

    redis = RedisServer().start()
    config = {"BACKEND": redis.url, "HEARTBEAT": 15}
    server = Server("gevent", workers=3, config=config).start()
    try:
        os.environ["FLASK_EVENTSTREAM_BACKEND"] = redis.url
        from serverapp import app
        from serverapp import events as ext

        with app.app_context():
            latencies = measure(
                server,
                args.clients,
                args.events,
                args.rate,
                lambda data: ext.publish("bench", data),
            )
        rows.append(("redis, 3 workers", latencies))
    finally:
        server.stop()
        redis.stop()

    base_p99 = percentile(sorted(rows[0][1]), 0.99)
    print(f"{args.clients} clients, {args.events} events at {args.rate:g}/s")
    print("| backend | deliveries | p50 ms | p99 ms | max ms | p99 vs memory |")
    print("|---|---|---|---|---|---|")
    for name, latencies in rows:
        ordered = sorted(latencies)
        p50, p99 = percentile(ordered, 0.5), percentile(ordered, 0.99)
        print(
            f"| {name} | {len(ordered)} | {p50:.2f} | {p99:.2f} | {ordered[-1]:.2f}"
            f" | {p99 / base_p99:.2f}x |"
        )


if __name__ == "__main__":
    main()
