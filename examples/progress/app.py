"""A background job with a live progress bar.

``POST /jobs`` starts a job in a thread of its own (a greenlet under gevent);
the job publishes its progress on the channel ``job.<id>`` and the page moves
its bar as the events arrive. The page subscribes *after* the job started,
yet misses nothing: the answer to ``POST /jobs`` carries the id of the job's
first event, and the page resumes after it.

Run it (memory backend, one worker)::

    gunicorn -c python:flask_eventstream.gunicorn -w 1 \\
        --chdir examples/progress app:app

then open http://127.0.0.1:8000. With a Redis backend the job could as well
run in another process (a task queue's worker): it would publish the same way.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid

from flask import Flask
from flask import render_template
from flask.typing import ResponseReturnValue

from flask_eventstream import EventStream
from flask_eventstream import stream
from flask_eventstream import Subscription

app = Flask(__name__)
app.config.from_prefixed_env()
events = EventStream(app)
STEPS = 20
STEP_SECONDS = float(os.environ.get("PROGRESS_STEP_SECONDS", "0.25"))


def run_job(job: str) -> None:
    with app.app_context():
        for step in range(1, STEPS + 1):
            time.sleep(STEP_SECONDS)  # the work
            events.publish(
                f"job.{job}", {"done": step, "total": STEPS}, event="progress"
            )
        events.publish(f"job.{job}", {"result": f"job {job} finished"}, event="done")


@events.authorize
def authorize(channel: str) -> bool:
    # Anyone may follow a job whose id they know; nothing else is served.
    return re.fullmatch(r"job\.[0-9a-f]{12}", channel) is not None


@app.get("/")
def index() -> str:
    return render_template("index.html")


@app.post("/jobs")
def start_job() -> ResponseReturnValue:
    job = uuid.uuid4().hex[:12]
    queued = events.publish(f"job.{job}", {"done": 0, "total": STEPS}, event="progress")
    threading.Thread(target=run_job, args=(job,), daemon=True).start()
    return {"job": job, "after": queued.id}, 201


@app.get("/jobs/<job>/events")
@stream
def job_events(job: str) -> Subscription:
    return events.subscribe(f"job.{job}")
