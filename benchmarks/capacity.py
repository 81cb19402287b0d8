"""What one Redis carries: events stored and published per second.

Usage: python benchmarks/capacity.py [--publishers 4] [--seconds 5]
                                      [--listeners 0,4,16]

``--publishers`` processes publish as fast as they can through the Redis
backend (one round trip each: the append script), on channels of their own,
while ``--listeners`` connections each subscribe to every channel (standing
for workers, each receiving every event). Prints events per second and the
Redis server's CPU per event, for each number of listeners. The load runs on
the same machine as Redis: on two cores the publishers compete with it, so
the figures are a floor.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import typing as t
from pathlib import Path

import redis as redis_py

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent)]

from conftest import RedisServer  # noqa: E402

from flask_eventstream.backends.redis import RedisBackend  # noqa: E402
from flask_eventstream.wire import Event  # noqa: E402

PREFIX = "capacity:"


def publisher(url: str, index: int, until: float, counts: t.Any) -> None:
    backend = RedisBackend(url, 100, prefix=PREFIX)
    event = Event("x" * 100)
    sent = 0
    while time.time() < until:
        backend.append(f"ch-{index}", event)
        sent += 1
    counts[index] = sent
    backend.close()


def listen(url: str, channels: list[str], stop: t.Any) -> None:
    client = redis_py.Redis.from_url(url, protocol=2)
    pubsub = client.pubsub()
    pubsub.subscribe(*[f"{PREFIX}stream:{c}" for c in channels])
    while not stop.is_set():
        pubsub.get_message(timeout=0.1)
        while pubsub.get_message(timeout=0) is not None:
            pass
    pubsub.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    url: str, pid: int, publishers: int, listeners: int, seconds: float
) -> dict[str, float]:
    channels = [f"ch-{n}" for n in range(publishers)]
    stop = multiprocessing.Event()
    readers = [
        multiprocessing.Process(target=listen, args=(url, channels, stop))
        for _ in range(listeners)
    ]
    for reader in readers:
        reader.start()
    time.sleep(0.5)
    counts = multiprocessing.Array("l", publishers)
    until = time.time() + seconds
    cpu = cpu_seconds(pid)
    procs = [
        multiprocessing.Process(target=publisher, args=(url, n, until, counts))
        for n in range(publishers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    cpu = cpu_seconds(pid) - cpu
    stop.set()
    for reader in readers:
        reader.join(10)
    events = sum(counts[:])
    return {
        "listeners": listeners,
        "events_per_s": events / seconds,
        "redis_cpu_us_per_event": cpu / events * 1e6,
    }


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--listeners", default="0,4,16")
    args = parser.parse_args(argv)
    server = RedisServer().start()
    assert server.proc is not None
    rows = []
    try:
        for listeners in (int(n) for n in args.listeners.split(",")):
            row = measure(server.url, server.proc.pid, args.publishers, listeners,
                          args.seconds)  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    finally:
        server.stop()
    print(f"\n{args.publishers} publisher processes, {args.seconds:g} s each")
    print("| listening workers | events/s stored and published | Redis CPU µs/event |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['listeners']} | {row['events_per_s']:,.0f}"
              f" | {row['redis_cpu_us_per_event']:.1f} |")  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
