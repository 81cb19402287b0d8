"""The benchmark suite: S1 to S3, flask-eventstream side by side with its peers.

Usage: python benchmarks/run.py [--smoke] [--servers memory,redis,...]

Each server runs one worker (or process) pinned to core 0 with taskset; the
load generator (sseload.c, built here with gcc) runs on core 1. S1: memory
per idle connection at 1,000 and 9,000 connections. S2: deliveries per
second to 1,000 subscribers of 2,000 events published as fast as the server
goes. S3: delivery latency to 1,000 subscribers of 50 events a second for
20 seconds. S2 and S3 run three times on flask-eventstream and nchan, whose
ratios the targets are: the median is shown, the JSON has every run, and
the losses are those of all. S4 (flask-eventstream only): the cost of a
publish, alone and with many other channels and idle streams. Then S2 on
the Redis backend with one worker and with two.

The peers: sse-starlette on uvicorn and flask-sse on gunicorn's gevent worker
with Redis, installed into their own virtual environment (``--venv``), and
nchan in Debian's nginx. nchan's events, and those of the ``-http`` rows of
flask-eventstream, are published with one HTTP POST each (16 in flight in
S2, paced one at a time in S3); the others' from inside the server.
``--smoke`` runs everything with 100 connections and a few events: it checks
that the programs still work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

import httpx
import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from conftest import free_port  # noqa: E402
from conftest import RedisServer  # noqa: E402

from flask_eventstream.backends.redis import RedisBackend  # noqa: E402


def build_load_generator(target: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("gcc is needed to build the load generator (sseload.c)")
    source = HERE / "sseload.c"
    if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
        subprocess.run([gcc, "-O2", "-o", str(target), str(source)], check=True)
    return target


def pinned(cores: str) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", cores] if taskset and os.cpu_count() != 1 else []


class Target:
    """One server under benchmark, started on core 0.

    ``command`` starts it; ``path`` is the stream the load generator opens;
    the server's ``/publish?count=&rate=`` endpoint publishes from inside it
    (see ``apps/``), except where :meth:`publish` is overridden.
    """

    #: Whether the measured process is the child of the one started (a
    #: gunicorn or nginx master) rather than the started process itself.
    master = True
    #: Whether a stream's response head comes before its first event.
    sends_head = True

    def __init__(
        self,
        name: str,
        command: list[str],
        path: str = "/sub/bench",
        env: dict[str, str] | None = None,
        cores: str = "0",
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.path = path
        self.command = [arg.replace("{port}", str(self.port)) for arg in command]
        self.env = dict(os.environ, PYTHONPATH=f"{HERE / 'apps'}:{ROOT}", **(env or {}))
        self.cores = cores
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Target:
        self.proc = subprocess.Popen(
            [*pinned(self.cores), *self.command], env=self.env,
            cwd=HERE / "apps", start_new_session=True, preexec_fn=more_files,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                self.ready()
                return self
            except httpx.TransportError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} did not start") from None
                time.sleep(0.1)

    def ready(self) -> None:
        httpx.post(self.url + "/publish?count=0", timeout=1).raise_for_status()

    def wait_subscribed(self, clients: int) -> None:
        """Return once ``clients`` streams are subscribed (the head of each
        has arrived, by default).
        """

    def wait_idle(self) -> None:
        """Return once the server has let go of the previous scenario's
        connections (it notices a closed one when it next writes to it:
        flask-eventstream at its next heartbeat).
        """
        response = httpx.get(self.url + "/stats", timeout=5)
        if response.status_code != 200:  # a peer: no such figure
            time.sleep(2)
            return
        until(
            lambda: not httpx.get(self.url + "/stats", timeout=5).json()["connections"],
            60, 0.1, f"{self.name} still holds closed connections",
        )  # fmt: skip

    def publish(self, count: int, rate: float) -> None:
        url = f"{self.url}/publish?count={count}&rate={rate}"
        httpx.post(url, timeout=300).raise_for_status()

    def rss_kb(self) -> int:
        """The resident memory of the process that holds the connections."""
        assert self.proc is not None
        pid = self.proc.pid
        if self.master:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            pid = int(children[0])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(30)


def until(
    done: t.Callable[[], bool],
    timeout: float,
    interval: float,
    failure: str | t.Callable[[], str],
) -> None:
    """Check ``done`` every ``interval`` seconds until it holds; raise
    :class:`RuntimeError` with ``failure`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(failure if isinstance(failure, str) else failure())
        time.sleep(interval)


def more_files() -> None:
    """Raise the open-file limit where allowed (root may raise the hard one):
    flask-sse holds a Redis connection per client, two descriptors each.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(limit, hard)))
            return
        except (ValueError, OSError):
            continue


def gunicorn(python: str, app: str, workers: int = 1) -> list[str]:
    # --reuse-port: each worker listens on its own socket and the kernel
    # spreads connections evenly (with one shared socket, whichever worker
    # wakes first takes most of a burst of streams).
    return [python, "-m", "gunicorn", "-k", "gevent", "-w", str(workers),
            "--worker-connections", "12000", "--backlog", "4096", "--reuse-port",
            "-b", "127.0.0.1:{port}", "--log-level", "warning", app]  # fmt: skip


class FlaskSse(Target):
    """flask-sse sends a stream's head with its first event; its streams are
    counted as Redis pub/sub subscribers instead.
    """

    sends_head = False

    def __init__(self, name: str, python: str, redis_url: str) -> None:
        super().__init__(
            name, gunicorn(python, "flask_sse_app:app"),
            path="/sub?channel=bench", env={"BENCH_REDIS_URL": redis_url},
        )  # fmt: skip
        self.redis = redis.Redis.from_url(redis_url)

    def wait_idle(self) -> None:
        # flask-sse writes nothing to an idle stream, so it finds a closed
        # client only when an event comes (the second write fails): two
        # events, published when no client is connected, let the previous
        # scenario's connections go.
        for _ in range(2):
            self.publish(1, 0)
            time.sleep(0.5)
        until(lambda: not self.subscribers(), 60, 0.5,
              "flask-sse still holds closed connections")  # fmt: skip

    def wait_subscribed(self, clients: int) -> None:
        until(lambda: self.subscribers() >= clients, 120, 0.1,
              "flask-sse's streams did not all subscribe")  # fmt: skip

    def subscribers(self) -> int:
        """The streams subscribed to Redis pub/sub, one connection each."""
        return int(dict(self.redis.pubsub_numsub("bench"))[b"bench"])


class Workers(Target):
    """flask-eventstream on Redis with several workers: their streams are
    counted in the figures each worker's monitor reports to Redis.
    """

    def __init__(self, name: str, workers: int, redis_url: str, smoke: bool) -> None:
        env = {"FLASK_EVENTSTREAM_BACKEND": redis_url}
        if smoke:
            env["FLASK_EVENTSTREAM_HEARTBEAT"] = "0.5"
        command = gunicorn(sys.executable, APP, workers)
        super().__init__(name, command, env=env, cores="0,1")
        self.workers = workers
        self.backend = RedisBackend(redis_url, 1)
        #: Streams held by each worker once all were subscribed.
        self.split: list[int] = []

    def streams(self) -> list[int]:
        """The streams each worker holds, as it last reported (every 2 s)."""
        return sorted(report["connections"] for report in self.backend.reports())

    def wait_subscribed(self, clients: int) -> None:
        def all_in() -> bool:
            self.split = [count for count in self.streams() if count]
            return sum(self.split) == clients

        until(all_in, 60, 0.2, lambda: f"the workers report {self.split} streams")

    def wait_idle(self) -> None:
        # A worker's /stats counts its own streams only.
        until(lambda: not sum(self.streams()), 60, 0.5,
              f"{self.name} still holds closed connections")  # fmt: skip


class Uvicorn(Target):
    master = False  # one process: uvicorn without --workers


#: Requests in flight when events are published by HTTP as fast as the
#: server takes them (S2); one at a time, paced, for S3.
IN_FLIGHT = 16


def post_each(url: str, count: int, rate: float) -> None:
    """Publish ``count`` events with one POST each to ``url``, its body the
    time it is sent (microseconds): :data:`IN_FLIGHT` at once at rate 0,
    else one at a time at ``rate`` a second.
    """
    from concurrent.futures import ThreadPoolExecutor

    def send(share: int, pace: float) -> None:
        with httpx.Client(timeout=30) as client:
            start = time.monotonic()
            for n in range(share):
                if pace:
                    time.sleep(max(start + n / pace - time.monotonic(), 0))
                data = str(time.time_ns() // 1000)
                client.post(url, content=data).raise_for_status()

    if rate:
        send(count, rate)
        return
    shares = [count // IN_FLIGHT + (n < count % IN_FLIGHT) for n in range(IN_FLIGHT)]
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        for done in [pool.submit(send, share, 0) for share in shares]:
            done.result()


class HttpPublish(Target):
    """flask-eventstream with events published by HTTP, one ``publish`` per
    request to a view of the app (``POST /event``), as nchan's are.
    """

    def publish(self, count: int, rate: float) -> None:
        post_each(self.url + "/event", count, rate)


class Nchan(Target):
    """nginx with nchan, one worker process: the C reference. Events are
    published with a POST each to its publisher location, from this process.
    """

    def __init__(self, name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nchan-"))
        conf = self.dir / "nginx.conf"
        super().__init__(name, [NGINX, "-p", str(self.dir), "-c", str(conf)])
        module = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
        conf.write_text(NCHAN_CONF.format(module=module, port=self.port, dir=self.dir))
        self.client = httpx.Client(timeout=10)

    def ready(self) -> None:
        self.client.get(self.url + "/ready").raise_for_status()

    def publish(self, count: int, rate: float) -> None:
        post_each(self.url + "/publish", count, rate)

    def stop(self) -> None:
        self.client.close()
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)


NGINX = "/usr/sbin/nginx"
NCHAN_CONF = """
load_module {module};
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 30000;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /ready {{ return 200 "ok"; }}
        location = /publish {{
            nchan_publisher;
            nchan_channel_id bench;
            nchan_message_buffer_length 1000;
        }}
        location /sub/ {{
            nchan_subscriber eventsource;
            nchan_subscriber_first_message newest;
            nchan_channel_id bench;
        }}
    }}
}}
"""


def load(
    generator: Path,
    target: Target,
    clients: int,
    expect: int,
    duration: float,
    core: str = "1",
) -> subprocess.Popen[str]:
    """Start the load generator; return once every client is connected."""
    env = dict(os.environ)
    if not target.sends_head:
        env["SSELOAD_NO_HEAD"] = "1"
    proc = subprocess.Popen(
        [*pinned(core), str(generator), "127.0.0.1", str(target.port), target.path,
         str(clients), str(expect), str(duration)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if line.strip() != "connected":
        proc.kill()
        raise RuntimeError(f"the load generator did not connect: {line!r}")
    target.wait_subscribed(clients)
    return proc


def result(proc: subprocess.Popen[str]) -> dict[str, t.Any]:
    out, _ = proc.communicate(timeout=300)
    return t.cast(dict[str, t.Any], json.loads(out))


def s1(generator: Path, target: Target, clients: int, settle: float = 1.0) -> float:
    """KB of server memory per idle connection.

    :param settle: seconds the last heads' writes are given to settle (there
        is nothing to wait on); a smoke run, which checks no figure, gives less.
    """
    idle = target.rss_kb()
    proc = load(generator, target, clients, 0, 600)
    time.sleep(settle)
    held = target.rss_kb()
    assert proc.stdin is not None
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    found = result(proc)
    if target.sends_head:
        assert found["headed"] == clients, found
    target.wait_idle()
    return (held - idle) / clients


def stolen() -> float:
    """Seconds of CPU the hypervisor gave to others (``steal`` in
    /proc/stat), over all cores: a run that lost much was disturbed.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


def deliveries(
    generator: Path,
    target: Target,
    clients: int,
    events: int,
    rate: float,
    core: str = "1",
    slack: float = 30,
) -> dict[str, t.Any]:
    """S2 (rate 0: as fast as the server goes) and S3. The load generator
    stops ``slack`` seconds after the last event is due: what has not come
    by then is lost.
    """
    timeout = (events / rate if rate else 0) + slack
    proc = load(generator, target, clients, events, timeout, core)
    steal = stolen()
    target.publish(events, rate)
    found = result(proc)
    found["lost"] = clients * events - found["events"]
    found["stolen_s"] = round(stolen() - steal, 2)
    target.wait_idle()
    return found


def publish_cost(target: Target, count: int) -> float:
    """Microseconds per publish to a channel no one subscribes to: the best
    of three rounds of ``count``, timed inside the server.
    """
    rounds = []
    for _ in range(3):
        url = f"{target.url}/publish?count={count}&channel=alone"
        response = httpx.post(url, timeout=300)
        response.raise_for_status()
        rounds.append(response.json()["seconds"] / count * 1e6)
    return round(min(rounds), 2)


def s4(generator: Path, target: Target, smoke: bool) -> dict[str, float]:
    """Publish cost: alone; after 10,000 other channels got an event (and
    history); with 9,000 idle streams on as many other channels; with 9,000
    on one other channel. It should not grow.
    """
    channels, clients, count = (100, 100, 200) if smoke else (10000, 9000, 5000)
    cost = {"alone": publish_cost(target, count)}
    url = f"{target.url}/publish?count={channels}&channel=other&spread=1"
    httpx.post(url, timeout=300).raise_for_status()
    cost["channels"] = publish_cost(target, count)
    for path, key in (("/sub/unique", "streams_apart"), ("/sub/bench", "streams_one")):
        target.path = path
        proc = load(generator, target, clients, 0, 600)
        cost[key] = publish_cost(target, count)
        assert proc.stdin is not None
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        result(proc)
        target.wait_idle()
    target.path = "/sub/bench"
    return cost


#: How many times S2 and S3 run on the servers the targets compare.
REPEATS = 3


def median(runs: list[dict[str, t.Any]], key: str) -> dict[str, t.Any]:
    """The run with the median ``key``, with every run's ``key`` (``runs``)
    and the events lost in all of them (``lost``): none hides behind another.
    """
    ordered = sorted(runs, key=lambda run: float(run[key]))
    found = dict(ordered[len(ordered) // 2])
    found["runs"] = [run[key] for run in runs]
    found["lost"] = sum(run["lost"] for run in runs)
    return found


def run(target: Target, smoke: bool, generator: Path) -> dict[str, t.Any]:
    n = 100 if smoke else 1000
    row: dict[str, t.Any] = {"server": target.name}
    target.start()
    try:
        # The first streams pay what a server sets up once (the Redis
        # listener and pool, a channel): not a cost per connection.
        settle = 0.2 if smoke else 1.0
        s1(generator, target, 10, settle)
        row["S1_kb_1000"] = s1(generator, target, n, settle)
        if not smoke:
            row["S1_kb_9000"] = s1(generator, target, 9000)
        # Slow peers need minutes for S2's 2,000,000 deliveries.
        slack = 10 if smoke else 300
        # The rows the targets compare, S2 and S3 three times each: one
        # S2 on this 2-core machine moves by a fifth from run to run.
        compared = target.name.startswith(("flask-eventstream", "nchan"))
        repeats = REPEATS if compared and not smoke else 1
        row["S2"] = median([
            deliveries(generator, target, n, 50 if smoke else 2000, 0, slack=slack)
            for _ in range(repeats)
        ], "deliveries_per_s")  # fmt: skip
        row["S3"] = median([
            deliveries(generator, target, n, 20 if smoke else 1000, 50,
                       slack=10 if smoke else 30)
            for _ in range(repeats)
        ], "p99_ms")  # fmt: skip
        if target.name.startswith("flask-eventstream") and "HTTP" not in target.name:
            row["S4"] = s4(generator, target, smoke)
    finally:
        target.stop()
    print(json.dumps(row), flush=True)
    return row


def two_workers(redis_url: str, smoke: bool, generator: Path) -> dict[str, t.Any]:
    """S2 on the Redis backend: one worker, then two, each on both cores
    with the load generator (the machine has two).
    """
    n, events = (100, 50) if smoke else (1000, 2000)
    row: dict[str, t.Any] = {"server": "flask-eventstream, Redis, S2 by workers"}
    for workers in (1, 2):
        target = Workers(f"{workers} workers", workers, redis_url, smoke).start()
        try:
            if workers == 2:  # both workers up: each answers a publish
                pids = {httpx.get(target.url + "/pid", timeout=5).text
                        for _ in range(40)}  # fmt: skip
                assert len(pids) == 2, pids
            found = deliveries(generator, target, n, events, 0, core="0,1", slack=60)
            row[f"S2_w{workers}"] = {**found, "split": target.split}
        finally:
            target.stop()
    row["ratio"] = row["S2_w2"]["deliveries_per_s"] / row["S2_w1"]["deliveries_per_s"]
    print(json.dumps(row), flush=True)
    return row


APP = "eventstream_app:app"
PEERS = HERE / "peers-requirements.txt"


def peers_python(venv: Path) -> str:
    """The peers' own environment: created (from peers-requirements.txt) on
    first use, so nothing of theirs is installed next to flask-eventstream.
    """
    python = venv / "bin" / "python"
    stamp = venv / "requirements.txt"
    if not stamp.exists() or stamp.read_text() != PEERS.read_text():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(PEERS)], check=True
        )
        stamp.write_text(PEERS.read_text())
    return str(python)


def targets(which: list[str], redis_url: str, venv: Path, smoke: bool) -> list[Target]:
    found: list[Target] = []
    # The defaults, but in a smoke run a short heartbeat: the server notices
    # the previous scenario's closed connections sooner (see wait_idle).
    ours = {"FLASK_EVENTSTREAM_HEARTBEAT": "0.2"} if smoke else {}
    for name in which:
        if name == "memory":
            found.append(Target("flask-eventstream, memory",
                                gunicorn(sys.executable, APP), env=ours))  # fmt: skip
        elif name == "redis":
            env = {"FLASK_EVENTSTREAM_BACKEND": redis_url, **ours}
            found.append(Target("flask-eventstream, Redis",
                                gunicorn(sys.executable, APP), env=env))  # fmt: skip
        elif name.endswith("-http"):
            env = dict(ours)
            if name == "redis-http":
                env["FLASK_EVENTSTREAM_BACKEND"] = redis_url
            backend = "Redis" if name == "redis-http" else "memory"
            found.append(HttpPublish(
                f"flask-eventstream, {backend}, HTTP publish",
                gunicorn(sys.executable, APP), env=env,
            ))  # fmt: skip
        elif name == "sse-starlette":
            found.append(Uvicorn(
                "sse-starlette (uvicorn)",
                [peers_python(venv), "-m", "uvicorn", "sse_starlette_app:app",
                 "--port", "{port}", "--host", "127.0.0.1", "--backlog", "4096",
                 "--log-level", "warning", "--no-access-log"],
            ))  # fmt: skip
        elif name == "flask-sse":
            found.append(FlaskSse("flask-sse (gunicorn gevent, Redis)",
                                  peers_python(venv), redis_url))  # fmt: skip
        elif name == "nchan":
            found.append(Nchan("nchan (nginx)"))
    return found


SERVERS = [
    "memory", "redis", "memory-http", "redis-http", "sse-starlette", "flask-sse",
    "nchan",
]  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict[str, t.Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated, of {', '.join(SERVERS)}")  # fmt: skip
    parser.add_argument("--no-workers", action="store_true",
                        help="skip the one- and two-worker Redis S2")  # fmt: skip
    venv = Path("/tmp") / f"eventstream-peers-{os.getuid()}"
    parser.add_argument("--venv", type=Path, default=venv,
                        help="the peers' environment, created if missing")  # fmt: skip
    args = parser.parse_args(argv)
    which = args.servers.split(",")
    unknown = set(which) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    generator = build_load_generator(Path("/tmp") / f"sseload-{os.getuid()}")
    # Not pinned: Redis runs where the kernel finds time. Pinned next to
    # the busy load generator it answered late, and the server idled waiting
    # (S2 100,000-138,000/s instead of 177,000/s); on the server's core it
    # would take the server's time.
    redis = RedisServer().start()
    rows = []
    try:
        for target in targets(which, redis.url, args.venv, args.smoke):
            try:
                rows.append(run(target, args.smoke, generator))
            except Exception as error:  # a failing server is a result too
                print(f"{target.name} failed: {error!r}", file=sys.stderr)
                rows.append({"server": target.name, "failed": repr(error)[:200]})
        if not args.no_workers:
            rows.append(two_workers(redis.url, args.smoke, generator))
    finally:
        redis.stop()
    print(table(rows))
    return rows


def table(rows: list[dict[str, t.Any]]) -> str:
    """The results as a Markdown table, each figure with its ratio to
    flask-eventstream's memory backend from the same run.
    """
    servers = [row for row in rows if "S1_kb_1000" in row]
    failed = [row for row in rows if "failed" in row]
    base = next((r for r in servers if r["server"].endswith("memory")), servers[0])

    def ratio(value: float, reference: float) -> str:
        return f"{value / reference:.2f}x" if reference else "-"

    lines = [
        "| server | S1 KB/conn 1,000 | S1 KB/conn 9,000 | S2 deliveries/s | S2 lost"
        " | S3 p99 ms | S3 lost |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in servers:
        s1_9000 = row.get("S1_kb_9000", row["S1_kb_1000"])
        base_9000 = base.get("S1_kb_9000", base["S1_kb_1000"])
        s2, s3 = row["S2"], row["S3"]
        rate, base_rate = s2["deliveries_per_s"], base["S2"]["deliveries_per_s"]
        lines.append(
            f"| {row['server']} | {row['S1_kb_1000']:.1f}"
            f" ({ratio(row['S1_kb_1000'], base['S1_kb_1000'])})"
            f" | {s1_9000:.1f} ({ratio(s1_9000, base_9000)})"
            f" | {rate:,} ({ratio(rate, base_rate)})"
            f" | {s2['lost']:,} | {s3['p99_ms']}"
            f" ({ratio(s3['p99_ms'], base['S3']['p99_ms'])}) | {s3['lost']:,} |"
        )
    for row in failed:
        lines.append(f"| {row['server']} | failed: {row['failed']} | | | | | |")
    costs = [row for row in servers if "S4" in row]
    if costs:
        lines += [
            "",
            "| S4: µs per publish | alone | after 10,000 channels"
            " | 9,000 streams, own channels | 9,000 streams, one channel |",
            "|---|---|---|---|---|",
        ]
    for row in costs:
        cost = row["S4"]
        lines.append(
            f"| {row['server']} | {cost['alone']}"
            + "".join(
                f" | {cost[key]} ({ratio(cost[key], cost['alone'])})"
                for key in ("channels", "streams_apart", "streams_one")
            )
            + " |"
        )
    for row in rows:
        if "ratio" in row:
            lines.append("")
            lines.append(
                f"Redis backend, S2 with 2 workers vs 1 (both on cores 0-1):"
                f" {row['S2_w2']['deliveries_per_s']:,} vs"
                f" {row['S2_w1']['deliveries_per_s']:,} deliveries/s,"
                f" {row['ratio']:.2f}x (streams per worker:"
                f" {row['S2_w2']['split']} vs {row['S2_w1']['split']})"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
