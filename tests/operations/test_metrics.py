"""The opt-in Prometheus exporter, in one process and across gunicorn workers."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from clients import RawStream
from conftest import add_views
from conftest import redis_config
from conftest import RedisServer
from conftest import Server
from flask import Flask
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest

from flask_eventstream import EventStream
from flask_eventstream import Presence
from flask_eventstream import Stats
from flask_eventstream import WorkerReport
from flask_eventstream.metrics import PrometheusMetrics
from flask_eventstream.testing import iter_events


def sample(text: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else None


def test_one_process_reads_the_figures_at_each_scrape(
    app: Flask, events: EventStream
) -> None:
    registry = CollectorRegistry()
    PrometheusMetrics(events, app, registry=registry)
    client = add_views(app, events)
    with client.get("/sub/watched", buffered=False) as rv:
        got = iter_events(rv, timeout=5)
        with app.app_context():
            for n in range(3):
                events.publish("watched", str(n))
        assert [next(got).data for _ in range(3)] == ["0", "1", "2"]
        text = generate_latest(registry).decode()
        assert sample(text, "eventstream_connections") == 1
        assert sample(text, 'eventstream_channel_subscribers{channel="watched"}') == 1
        assert sample(text, "eventstream_published_total") == 3
        assert sample(text, "eventstream_delivered_total") == 3
    assert sample(generate_latest(registry).decode(), "eventstream_refused_total") == 0


def test_one_line_serves_the_scrape_of_a_single_process_server() -> None:
    # PrometheusMetrics(events, app, path="/metrics"): no view to write.
    server = Server("gevent")
    server.env["TEST_METRICS"] = "1"
    server.start()
    try:
        stream = RawStream(server.url, "/stream/scraped-alone")
        try:
            stream.open()
            server.publish("scraped-alone", "x", count=2)
            assert len(stream.events(2)) == 2
            answer = server.http.get("/metrics")
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/plain")
            text = answer.text
            assert sample(text, "eventstream_connections") == 1
            channel = 'eventstream_channel_subscribers{channel="scraped-alone"}'
            assert sample(text, channel) == 1
            assert sample(text, "eventstream_published_total") == 2
            assert sample(text, "eventstream_delivered_total") == 2
        finally:
            stream.close()
    finally:
        server.stop()


@pytest.mark.redis
@pytest.mark.timeout(90)
def test_multiprocess_mode_sums_the_workers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # Redis: an event published on one worker reaches the other's clients.
    server = Server("gevent", workers=2, config=redis_config(redis_server))
    server.env.update(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), TEST_METRICS="1")
    # --reuse-port: the kernel spreads the streams over both workers.
    server.extra = ["-c", "python:flask_eventstream.gunicorn", "--reuse-port"]
    server.start()
    streams: list[RawStream] = []
    try:
        pids = set()
        for _ in range(10):
            stream = RawStream(server.url, "/stream/scraped")
            stream.open()
            streams.append(stream)
            pids.add(stream.headers["x-worker-pid"])
        assert len(pids) == 2, "the streams all landed on one worker"
        server.publish("scraped", "x", count=4)
        # Each worker writes its figures every two seconds while it has streams.
        deadline = time.monotonic() + 20
        while True:
            text = server.http.get("/metrics", timeout=5).text
            wanted = {
                "eventstream_connections": 10,
                'eventstream_channel_subscribers{channel="scraped"}': 10,
                "eventstream_published_total": 4,
                "eventstream_delivered_total": 40,
            }
            found = {name: sample(text, name) for name in wanted}
            if found == wanted:
                break
            assert time.monotonic() < deadline, (found, text)
            time.sleep(0.5)
        for stream in streams:
            stream.close()
        streams.clear()
        # Gone clients are noticed at the next heartbeat; then the gauges drop.
        deadline = time.monotonic() + 20
        while sample(server.http.get("/metrics", timeout=5).text,
                     "eventstream_connections") != 0:  # fmt: skip
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        for stream in streams:
            stream.close()
        server.stop()


def test_a_channel_without_subscribers_loses_its_series(
    app: Flask, events: EventStream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client.multiprocess import MultiProcessCollector

    from flask_eventstream.hub import COUNTERS

    # What each worker's monitor hands the exporter every two seconds, and
    # what a scrape reads from the shared directory.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    exporter = PrometheusMetrics(
        events, app, registry=CollectorRegistry(), channel_ttl=0.3
    )
    scraped = CollectorRegistry()
    MultiProcessCollector(scraped, path=str(tmp_path))
    series = 'eventstream_channel_subscribers{channel="user.7"}'
    figures = {"connections": 1, "counters": dict.fromkeys(COUNTERS, 0)}
    exporter.sync({**figures, "channels": {"user.7": 2}})
    assert sample(generate_latest(scraped).decode(), series) == 2
    exporter.sync({**figures, "channels": {}})
    assert sample(generate_latest(scraped).decode(), series) == 0
    time.sleep(0.4)
    exporter.sync({**figures, "channels": {"user.8": 1}})
    text = generate_latest(scraped).decode()
    assert sample(text, series) is None
    assert sample(text, 'eventstream_channel_subscribers{channel="user.8"}') == 1


def test_the_snapshot_is_a_copy_of_the_figures_the_exporter_reads(
    app: Flask, events: EventStream
) -> None:
    client = add_views(app, events)
    with client.get("/sub/watched", buffered=False) as rv:
        got = iter_events(rv, timeout=5)
        with app.app_context():
            events.publish("watched", "0")
            events.publish("watched", "1")
        assert [next(got).data for _ in range(2)] == ["0", "1"]
        taken = events.snapshot(app)
        own = taken["worker"]
        assert set(own) == set(WorkerReport.__annotations__)
        assert own["connections"] == 1
        assert own["channels"] == {"watched": 1}
        assert own["counters"]["published"] == 2
        assert taken["backend"]["backend"] == "memory"
        assert taken["workers"] is None and taken["history"] is None
        # A copy: changing it changes nothing the extension holds.
        own["channels"]["watched"] = 99
        own["counters"]["published"] = 99
        taken["backend"]["history"] = {}
        stats = events.stats()
        assert stats["channels"] == {"watched": 1}
        assert stats["counters"]["published"] == 2
        assert stats["history"] == {"watched": 2}
        assert set(stats) <= set(Stats.__annotations__)
        # The memory backend shares no worker reports; it counts its history.
        everywhere = events.snapshot(app, everywhere=True)
        assert everywhere["workers"] == []
        assert everywhere["history"] == {"watched": 2}


def test_presence_has_the_keys_its_type_names(app: Flask, events: EventStream) -> None:
    with app.app_context():
        found = events.presence("room")
    assert set(found) == set(Presence.__annotations__)
    assert found == {"count": 0, "members": {}}
