"""A chat room on several workers: Redis carries every message to all of them,
and the room shows who is online.

Run it (needs a Redis server)::

    FLASK_EVENTSTREAM_BACKEND=redis://127.0.0.1:6379/0 \\
        gunicorn -c python:flask_eventstream.gunicorn -w 4 --chdir examples/chat app:app

then open http://127.0.0.1:8000 in two windows and join with two names. A
message posted to any worker reaches the clients of every worker, in one
order for all; a client that reconnects (to any worker) gets what it missed.
The "online" list comes from ``events.presence("room")`` when the page opens,
then from the ``eventstream-join`` and ``eventstream-leave`` events.
"""

from __future__ import annotations

import os

from flask import Flask
from flask import render_template
from flask import request
from flask import session
from flask.typing import ResponseReturnValue

from flask_eventstream import EventStream

app = Flask(__name__)
# Sessions carry each visitor's name. Set a real SECRET_KEY outside a demo.
app.config["SECRET_KEY"] = os.environ.get(
    "SECRET_KEY", "chat demo only: set SECRET_KEY outside it"
)
app.config["EVENTSTREAM_BACKEND"] = "redis://127.0.0.1:6379/0"
# The room announces who joins and leaves.
app.config["EVENTSTREAM_NAMESPACES"] = {"room": {"presence": True}}
app.config.from_prefixed_env()  # FLASK_EVENTSTREAM_BACKEND=... overrides
events = EventStream(app)


@events.authorize
def authorize(channel: str) -> bool:
    # The built-in endpoint serves /events/room only, to those who joined.
    return channel == "room" and "name" in session


@events.identify
def identify() -> str | None:
    return session.get("name")


@app.get("/")
def index() -> str:
    return render_template("index.html", name=session.get("name", ""))


@app.post("/join")
def join() -> ResponseReturnValue:
    name = request.form.get("name", "").strip()[:40]
    if not name:
        return {"error": "Choose a name to join."}, 400
    session["name"] = name
    return {"name": name}


@app.get("/online")
def online() -> ResponseReturnValue:
    return {"members": sorted(events.presence("room")["members"])}


@app.post("/say")
def say() -> ResponseReturnValue:
    name = session.get("name")
    if name is None:
        return {"error": "Join the room first."}, 403
    text = request.form.get("text", "").strip()[:1000]
    if not text:
        return {"error": "Say something: the message is empty."}, 400
    stored = events.publish("room", {"name": name, "text": text}, event="message")
    return {"id": stored.id}, 201
