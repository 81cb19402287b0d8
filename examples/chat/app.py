"""A chat room on several workers: Redis carries every message to all of them.

Run it (needs a Redis server)::

    FLASK_EVENTSTREAM_BACKEND=redis://127.0.0.1:6379/0 \\
        gunicorn -c python:flask_eventstream.gunicorn -w 4 --chdir examples/chat app:app

then open http://127.0.0.1:8000 in two windows. A message posted to any
worker reaches the clients of every worker, in one order for all; a client
that reconnects (to any worker) gets what it missed.
"""

from __future__ import annotations

from flask import Flask
from flask import render_template
from flask import request

from flask_eventstream import EventStream

app = Flask(__name__)
app.config["EVENTSTREAM_BACKEND"] = "redis://127.0.0.1:6379/0"
app.config.from_prefixed_env()  # FLASK_EVENTSTREAM_BACKEND=... overrides
events = EventStream(app)


@events.authorize
def authorize(channel: str) -> bool:
    return channel == "room"  # the built-in endpoint serves /events/room only


@app.get("/")
def index() -> str:
    return render_template("index.html")


@app.post("/say")
def say() -> object:
    name = request.form.get("name", "").strip()[:40] or "someone"
    text = request.form.get("text", "").strip()[:1000]
    if not text:
        return {"error": "Say something: the message is empty."}, 400
    stored = events.publish("room", {"name": name, "text": text}, event="message")
    return {"id": stored.id}, 201
