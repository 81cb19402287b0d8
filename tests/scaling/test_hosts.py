"""Many hosts on one Redis: two independent gunicorn masters ("hosts", two
gevent workers each, ``--reuse-port``), 2,000 streams across them, a
publisher in a third process, and a rolling restart of one host.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest
from clients import Crowd
from clients import Member
from conftest import redis_config
from conftest import RedisServer
from conftest import run_app
from conftest import Server

from flask_eventstream.testing import check_delivery

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CHANNELS = 20
RESET = "eventstream-reset"


def publish(server: Server, count: int, pause: float) -> list[list[str]]:
    """Publish ``count`` events on each channel, round robin, from a process
    of its own; return the ids of each channel's events.
    """
    printed = run_app(
        server,
        "import time\n"
        f"for n in range({count}):\n"
        f"    for c in range({CHANNELS}):\n"
        "        print(c, events.publish(f'h{c}', f'e{n}').id)\n"
        f"    time.sleep({pause})",
    )
    ids: list[list[str]] = [[] for _ in range(CHANNELS)]
    for channel, id in zip(printed[::2], printed[1::2], strict=True):
        ids[int(channel)].append(id)
    return ids


class Commands:
    """Counts what Redis did: the commands clients sent (round trips; those a
    script runs are not counted), by name, and the workers each publish
    reaches.
    """

    def __init__(self, redis: RedisServer) -> None:
        self.client = redis.client()
        self.start = self.calls()

    def calls(self) -> dict[str, int]:
        stats = self.client.info("commandstats")
        calls = {name[8:]: int(s["calls"]) for name, s in stats.items()}
        calls["sent"] = int(self.client.info("stats")["total_commands_processed"])
        return calls

    def since(self) -> dict[str, int]:
        now = self.calls()
        return {name: now[name] - self.start.get(name, 0) for name in now}

    def receivers(self, prefix: str) -> int:
        names = [f"{prefix}stream:h{c}" for c in range(CHANNELS)]
        counts = self.client.pubsub_numsub(*names)
        return max(int(count) for _, count in counts)


def test_two_hosts_2000_streams_and_a_rolling_restart(
    redis_server: RedisServer,
) -> None:
    config = redis_config(redis_server, RETRY=0.3)
    hosts = [
        Server("gevent", workers=2, config=config, extra=["--reuse-port"]).start()
        for _ in range(2)
    ]
    crowds: list[Crowd] = []
    #: each crowd's channel ids: what it must receive, from when it joined
    expected: list[list[list[str]]] = []
    try:
        # 200 streams first, then 1,800 more: Redis's work per event must
        # not change with the clients.
        per_event = []
        for size in (100, 900):
            for host in hosts:
                paths = [f"/stream/h{n % CHANNELS}" for n in range(size)]
                crowds.append(Crowd(host.url, paths))
                expected.append([[] for _ in range(CHANNELS)])
            for crowd in crowds:
                crowd.wait_until(
                    lambda c=crowd: all(m.statuses == [200] for m in c.members)  # type: ignore[misc]
                )
            commands = Commands(redis_server)
            sent = publish(hosts[0], 10, 0)
            ran = commands.since()
            # One script per event from the publisher (a few more: the
            # workers' presence, which flushes and renews on its own timer:
            # 21 more in one slow run, 42 with the test files run four at a
            # time); no worker reads anything per event: that would be 10
            # per event per worker, hundreds more.
            assert 10 * CHANNELS <= ran["evalsha"] < 10 * CHANNELS + 80, ran
            assert ran.get("xread", 0) == ran.get("xrange", 0) == 0, ran
            events = 10 * CHANNELS
            # Round trips (the scripts), and every command Redis ran (those
            # inside scripts too; less the two INFO of this count).
            per_event.append((ran["evalsha"] / events, (ran["sent"] - 2) / events))
            receivers = commands.receivers(config["REDIS_PREFIX"])
            assert receivers == 4, receivers  # one per worker, whatever the clients
            for ids in expected:
                for channel, more in zip(ids, sent, strict=True):
                    channel.extend(more)
        (trips, commands), (trips_after, commands_after) = per_event
        print(f"Per event, with 200 streams then 2,000: {trips:.2f} and"
              f" {trips_after:.2f} round trips, {commands:.2f} and"
              f" {commands_after:.2f} commands, {receivers} pub/sub"
              " deliveries (one per worker)")  # fmt: skip
        # The publisher's one script per event, and the presence timers'
        # (bounded above: 80 in 200 events); a read per worker per event
        # would be 5 round trips an event.
        assert 1 <= trips_after < 1.4, per_event
        # Ten times the clients: work per client would multiply it tenfold.
        # The presence timers' scripts, which cover more clients and run
        # more often while a loaded machine publishes slowly, added half
        # (13.5 -> 20.5) when the test files ran four at a time.
        assert commands_after < commands * 2, per_event
        members = [m for crowd in crowds for m in crowd.members]
        assert len(members) == 2000
        on_host_0 = [m for n, c in enumerate(crowds) if n % 2 == 0 for m in c.members]
        old = {m.pids[-1] for m in on_host_0}

        # Events flow from a third process while host 0 reloads its workers.
        during: list[list[str]] = []
        thread = threading.Thread(
            target=lambda: during.extend(publish(hosts[1], 60, 0.05))
        )
        thread.start()
        assert hosts[0].proc is not None
        os.kill(hosts[0].proc.pid, signal.SIGHUP)
        thread.join(120)
        assert len(during) == CHANNELS
        end = publish(hosts[1], 1, 0)
        for ids in expected:
            for channel, more, last in zip(ids, during, end, strict=True):
                channel.extend(more + last)
        for crowd, ids in zip(crowds, expected, strict=True):
            crowd.wait_until(
                lambda c=crowd, i=ids: all(  # type: ignore[misc]
                    m.events and m.events[-1].id == i[channel_of(m)][-1]
                    for m in c.members
                ),
                timeout=60,
            )
            for member in crowd.members:
                check_delivery(ids[channel_of(member)], member.events)
                assert not [e for e in member.events if e.event == RESET], member.events
        moved = [m for m in on_host_0 if m.pids[-1] not in old]
        assert len(moved) == 1000, "every stream of host 0 moved to a new worker"
    finally:
        for crowd in crowds:
            crowd.close()
        for host in hosts:
            host.stop()


def channel_of(member: Member) -> int:
    return int(member.path.removeprefix("/stream/h"))
