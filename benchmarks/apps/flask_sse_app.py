"""flask-sse under benchmark (a peer): its blueprint at ``/sub`` (each stream
holds a Redis pub/sub connection), and the same ``/publish`` endpoint as
``eventstream_app``, publishing through Redis with ``sse.publish``.
"""

from __future__ import annotations

import os
import time

from flask import Flask
from flask import request
from flask_sse import sse
from pacing import paced

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ["BENCH_REDIS_URL"]
app.register_blueprint(sse, url_prefix="/sub")


@app.post("/publish")
def publish() -> object:
    count = int(request.args["count"])
    rate = float(request.args.get("rate", 0))
    start = time.monotonic()
    for _ in paced(count, rate):
        # An int: flask-sse sends the data as JSON.
        sse.publish(time.time_ns() // 1000, channel="bench")
    return {"published": count, "seconds": time.monotonic() - start}
