"""flask-eventstream under benchmark: one channel, a publish endpoint.

``POST /publish?count=N&rate=R`` publishes N events from this worker, each
one's data the time it is sent (microseconds, the load generator's clock),
R per second or, with R = 0, as fast as the worker goes: it yields to the
writers after each publish, as a publisher in a request greenlet would.
``&channel=C`` publishes to C instead of ``bench``; ``&spread=1`` to
``C-0``, ``C-1``, ... one event each.

``POST /event`` publishes its body to ``bench``: one publish per request,
as an application's own publishing view would (``--servers memory-http``).

``GET /sub/unique`` subscribes each stream to a channel of its own.
"""

from __future__ import annotations

import itertools
import os
import time

from flask import Flask
from flask import request
from pacing import paced

from flask_eventstream import EventStream
from flask_eventstream import stream

app = Flask(__name__)
app.config.from_prefixed_env()
events = EventStream(app)
_unique = itertools.count()


@app.get("/sub/<channel>")
@stream
def sub(channel: str) -> object:
    if channel == "unique":
        channel = f"unique-{next(_unique)}"
    return events.subscribe(channel)


@app.post("/publish")
def publish() -> object:
    count = int(request.args["count"])
    rate = float(request.args.get("rate", 0))
    channel = request.args.get("channel", "bench")
    spread = request.args.get("spread") == "1"
    start = time.monotonic()
    for n in paced(count, rate):
        name = f"{channel}-{n}" if spread else channel
        events.publish(name, str(time.time_ns() // 1000))
        if not rate:
            time.sleep(0)
    return {"published": count, "seconds": time.monotonic() - start}


@app.post("/event")
def event() -> object:
    return {"id": events.publish("bench", request.get_data(as_text=True)).id}


@app.get("/pid")
def pid() -> str:
    return str(os.getpid())


@app.get("/stats")
def stats() -> object:
    return events.stats()
