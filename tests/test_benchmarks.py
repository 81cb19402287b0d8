"""The benchmark programs in smoke mode, so that they cannot rot."""

from __future__ import annotations

import sys

from conftest import require
from conftest import ROOT


def test_benchmark_smoke_run() -> None:
    require("gcc")
    require("redis-server")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rows = run.main(["--smoke"])
    assert [row["server"] for row in rows] == [
        "flask-eventstream, memory",
        "flask-eventstream, Redis",
    ]
    for row in rows:
        assert 0 < row["S1_kb_1000"] < 200
        for scenario in ("S2", "S3"):
            assert row[scenario]["headed"] == 100
            assert row[scenario]["lost"] == 0, row
