"""A live dashboard: a chart of this machine's load, one point a second.

A background thread (a greenlet under gevent) samples the load average and
the memory in use and publishes them on the ``metrics`` channel; the page
draws each point as it arrives, and a page opened later first gets the last
minute from history.

Run it (memory backend, one worker)::

    gunicorn -c python:flask_eventstream.gunicorn -w 1 \\
        --chdir examples/dashboard app:app

then open http://127.0.0.1:8000.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import typing as t

from flask import Flask
from flask import render_template

from flask_eventstream import EventStream
from flask_eventstream import stream
from flask_eventstream import Subscription

app = Flask(__name__)
app.config["EVENTSTREAM_HISTORY"] = 60  # a minute of points for a new page
app.config.from_prefixed_env()
events = EventStream(app)
INTERVAL = float(os.environ.get("DASHBOARD_INTERVAL", "1.0"))


def sample() -> dict[str, float]:
    load = os.getloadavg()[0]
    with open("/proc/meminfo") as file:
        info = dict(line.split(":", 1) for line in file)
    total = int(info["MemTotal"].split()[0])
    available = int(info["MemAvailable"].split()[0])
    return {"t": time.time(), "load": load, "memory": 100 * (1 - available / total)}


#: The last minute of samples with their event ids, for a page's first render.
recent: collections.deque[dict[str, t.Any]] = collections.deque(maxlen=60)


def sampler() -> None:
    # Publishing needs the app's context, as in any code outside a request.
    with app.app_context():
        while True:
            point = sample()
            stored = events.publish("metrics", point, event="sample")
            recent.append({"id": stored.id, **point})
            time.sleep(INTERVAL)


@events.authorize
def authorize(channel: str) -> bool:
    return channel == "metrics"


@app.get("/")
def index() -> str:
    # The page starts with what is here and resumes after its last id: no
    # point is missed or drawn twice between this render and the stream.
    points = list(recent)
    return render_template("index.html", points=points)


@app.get("/metrics")
@stream
def metrics() -> Subscription:
    return events.subscribe("metrics")


_started = threading.Lock()


@app.before_request
def start_sampler() -> None:
    # In the server's worker, not at import: `flask eventstream tail` imports
    # this module too, and must not start sampling in its own process.
    if _started.acquire(blocking=False):
        threading.Thread(target=sampler, name="sampler", daemon=True).start()
