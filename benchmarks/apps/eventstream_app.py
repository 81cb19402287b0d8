"""flask-eventstream under benchmark: one channel, a publish endpoint.

``POST /publish?count=N&rate=R`` publishes N events from this worker, each
one's data the time it is sent (microseconds, the load generator's clock),
R per second or, with R = 0, as fast as the worker goes: it yields to the
writers after each publish, as a publisher in a request greenlet would.
"""

from __future__ import annotations

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


@app.get("/sub/<channel>")
@stream
def sub(channel: str) -> object:
    return events.subscribe(channel)


@app.post("/publish")
def publish() -> object:
    count = int(request.args["count"])
    rate = float(request.args.get("rate", 0))
    start = time.monotonic()
    for _ in paced(count, rate):
        events.publish("bench", str(time.time_ns() // 1000))
        if not rate:
            time.sleep(0)
    return {"published": count, "seconds": time.monotonic() - start}


@app.get("/pid")
def pid() -> str:
    return str(os.getpid())


@app.get("/stats")
def stats() -> object:
    return events.stats()
