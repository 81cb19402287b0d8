"""The benchmark suite: S1 to S3 against one gunicorn gevent worker.

Usage: python benchmarks/run.py [--smoke] [--backend memory|redis|both]

The server is pinned to core 0 with taskset, the load generator (sseload.c,
built here with gcc) to core 1. S1: memory per idle connection at 1,000 and
9,000 connections. S2: deliveries per second to 1,000 subscribers of 2,000
events published as fast as the worker goes. S3: delivery latency to 1,000
subscribers of 50 events a second for 20 seconds. ``--smoke`` runs each with
100 connections and a few events: it checks that the programs still work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from conftest import free_port  # noqa: E402
from conftest import RedisServer  # noqa: E402


def build_load_generator(target: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("gcc is needed to build the load generator (sseload.c)")
    source = HERE / "sseload.c"
    if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
        subprocess.run([gcc, "-O2", "-o", str(target), str(source)], check=True)
    return target


def pinned(core: int) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(core)] if taskset and os.cpu_count() != 1 else []


class Worker:
    """One gunicorn gevent worker serving a benchmark app on core 0."""

    def __init__(self, app: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = dict(os.environ, PYTHONPATH=f"{HERE / 'apps'}:{ROOT}", **env)
        self.proc = subprocess.Popen(
            [*pinned(0), sys.executable, "-m", "gunicorn", "-k", "gevent",
             "-w", "1", "--worker-connections", "12000", "--backlog", "4096",
             "-b", f"127.0.0.1:{self.port}", "--log-level", "warning", app],
            env=environ, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.post(self.url + "/publish?count=0", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"{app} did not start") from None
                time.sleep(0.1)

    def rss_kb(self) -> int:
        """The worker's resident memory (the child of gunicorn's master)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        pid = children.read_text().split()[0]
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        os.killpg(self.proc.pid, 15)
        self.proc.wait(30)


def load(
    generator: Path, worker: Worker, clients: int, expect: int, duration: float
) -> subprocess.Popen[str]:
    """Start the load generator; return once every client is connected."""
    proc = subprocess.Popen(
        [*pinned(1), str(generator), "127.0.0.1", str(worker.port), "/sub/bench",
         str(clients), str(expect), str(duration)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if line.strip() != "connected":
        proc.kill()
        raise RuntimeError(f"the load generator did not connect: {line!r}")
    return proc


def result(proc: subprocess.Popen[str]) -> dict[str, t.Any]:
    out, _ = proc.communicate(timeout=120)
    return t.cast(dict[str, t.Any], json.loads(out))


def s1(generator: Path, worker: Worker, clients: int) -> float:
    """KB of worker memory per idle connection."""
    idle = worker.rss_kb()
    proc = load(generator, worker, clients, 0, 600)
    time.sleep(1)  # let the last heads' writes settle; nothing to wait on
    held = worker.rss_kb()
    assert proc.stdin is not None
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    found = result(proc)
    assert found["headed"] == clients, found
    return (held - idle) / clients


def s2(generator: Path, worker: Worker, clients: int, events: int) -> dict[str, t.Any]:
    proc = load(generator, worker, clients, events, 120)
    httpx.post(worker.url + f"/publish?count={events}", timeout=120)
    found = result(proc)
    found["lost"] = clients * events - found["events"]
    return found


def s3(
    generator: Path, worker: Worker, clients: int, events: int, rate: float
) -> dict[str, t.Any]:
    proc = load(generator, worker, clients, events, events / rate + 30)
    httpx.post(worker.url + f"/publish?count={events}&rate={rate}", timeout=120)
    found = result(proc)
    found["lost"] = clients * events - found["events"]
    return found


def run(
    name: str, app: str, env: dict[str, str], smoke: bool, generator: Path
) -> dict[str, t.Any]:
    n = 100 if smoke else 1000
    rows: dict[str, t.Any] = {"server": name}
    worker = Worker(app, env)
    try:
        rows["S1_kb_1000"] = s1(generator, worker, n)
        if not smoke:
            rows["S1_kb_9000"] = s1(generator, worker, 9000)
        rows["S2"] = s2(generator, worker, n, 50 if smoke else 2000)
        rows["S3"] = s3(generator, worker, n, 20 if smoke else 1000, 50)
    finally:
        worker.stop()
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, t.Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--backend", choices=["memory", "redis", "both"], default="both"
    )
    args = parser.parse_args(argv)
    generator = build_load_generator(Path("/tmp") / f"sseload-{os.getuid()}")
    base: dict[str, str] = {}  # the defaults
    rows = []
    if args.backend in ("memory", "both"):
        rows.append(
            run(
                "flask-eventstream, memory",
                "eventstream_app:app",
                base,
                args.smoke,
                generator,
            )
        )
    if args.backend in ("redis", "both"):
        redis = RedisServer().start()
        try:
            env = dict(base, FLASK_EVENTSTREAM_BACKEND=redis.url)
            rows.append(
                run(
                    "flask-eventstream, Redis",
                    "eventstream_app:app",
                    env,
                    args.smoke,
                    generator,
                )
            )
        finally:
            redis.stop()
    for row in rows:
        print(json.dumps(row))
    return rows


if __name__ == "__main__":
    main()
