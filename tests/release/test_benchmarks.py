"""The benchmark programs in smoke mode, so that they cannot rot."""

from __future__ import annotations

import importlib
import sys
import typing as t

import pytest
from conftest import require
from conftest import ROOT

#: More than ten seconds a test: not in the fast core (-m 'not slow').
pytestmark = pytest.mark.slow


def benchmark(name: str) -> t.Any:
    """Import ``benchmarks/<name>.py``."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.mark.timeout(600)  # the first run creates the peers' environment
def test_benchmark_smoke_run() -> None:
    """Every server of the suite, the peers included (their environment is
    created on first use), with 100 connections and a few events.
    """
    require("gcc")
    require("redis-server")
    require("/usr/sbin/nginx")
    run = benchmark("run")
    rows = run.main(["--smoke"])
    servers = [row for row in rows if "S1_kb_1000" in row]
    ours = ["flask-eventstream, memory", "flask-eventstream, Redis"]
    assert [row["server"] for row in servers] == [
        "flask-eventstream, memory",
        "flask-eventstream, Redis",
        "flask-eventstream, memory, HTTP publish",
        "flask-eventstream, Redis, HTTP publish",
        "sse-starlette (uvicorn)",
        "flask-sse (gunicorn gevent, Redis)",
        "nchan (nginx)",
    ]
    for row in servers:
        assert 0 < row["S1_kb_1000"] < 200, row
        for scenario in ("S2", "S3"):
            assert row[scenario]["headed"] == 100, row
            assert row[scenario]["events"] > 0, row
            if row["server"].startswith("flask-eventstream"):
                assert row[scenario]["lost"] == 0, row
        if row["server"] in ours:  # S4 is measured in-process only
            assert set(row["S4"]) == {"alone", "channels", "streams_apart",
                                      "streams_one"}, row  # fmt: skip
            assert all(cost > 0 for cost in row["S4"].values()), row
    workers = rows[-1]
    for key in ("S2_w1", "S2_w2"):
        assert workers[key]["lost"] == 0, workers
    assert sum(workers["S2_w2"]["split"]) == 100, workers
    table = run.table(rows)
    # Seven servers, then the S4 header and a row for each backend.
    assert table.count("\n| ") == 10, table


@pytest.mark.timeout(300)
def test_channel_count_benchmark_smoke_run() -> None:
    """``channels.py`` with small counts: every event arrives, figures come."""
    require("redis-server")
    channels = benchmark("channels")
    rows = channels.main(["--counts", "10,50", "--events", "40", "--rate", "200"])
    assert [row["channels"] for row in rows] == [10, 50]
    for row in rows:
        assert row["lost"] == 0 and row["deliveries"] == 40, row
        assert row["p99_ms"] > 0 and row["cpu_us_per_event"] >= 0, row


@pytest.mark.timeout(120)
def test_capacity_benchmark_smoke_run() -> None:
    """``capacity.py`` briefly: events are stored, and figures come."""
    require("redis-server")
    capacity = benchmark("capacity")
    rows = capacity.main(
        ["--publishers", "1", "--seconds", "0.5", "--listeners", "0,1"]
    )
    assert [row["listeners"] for row in rows] == [0, 1]
    assert all(row["events_per_s"] > 0 for row in rows), rows
