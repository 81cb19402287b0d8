"""Private notifications: one channel per user, guarded by ``authorize``.

Sign in with a name (a session cookie; a real app uses its own login), and
the page follows ``user.<name>``: only that user may subscribe to it, and
anyone may send a notification to anyone.

Run it (memory backend, one worker)::

    gunicorn -c python:flask_eventstream.gunicorn -w 1 \\
        --chdir examples/notifications app:app

then open http://127.0.0.1:8000 in two browsers (or a private window).
"""

from __future__ import annotations

import os
import re

from flask import Flask
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from flask.typing import ResponseReturnValue

from flask_eventstream import EventStream

app = Flask(__name__)
app.secret_key = os.environ.get("SECRET_KEY", "change me: sessions are signed with it")
app.config.from_prefixed_env()
events = EventStream(app)
NAME = re.compile(r"[a-z0-9]{1,32}")


@events.authorize
def authorize(channel: str) -> bool:
    # Called for every channel of every subscription, in the request: a user
    # gets their own channel and no other.
    user = session.get("user")
    return user is not None and channel == f"user.{user}"


@app.get("/")
def index() -> ResponseReturnValue:
    if "user" not in session:
        return render_template("login.html")
    return render_template("index.html", user=session["user"])


@app.post("/login")
def login() -> ResponseReturnValue:
    name = request.form.get("name", "").strip().lower()
    if NAME.fullmatch(name) is None:
        return "A name is 1 to 32 lower-case letters and digits.", 400
    session["user"] = name
    return redirect(url_for("index"))


@app.post("/notify")
def notify() -> ResponseReturnValue:
    if "user" not in session:
        return {"error": "Sign in first."}, 403
    to = request.form.get("to", "").strip().lower()
    if NAME.fullmatch(to) is None:
        return {"error": "Send to a user name."}, 400
    text = request.form.get("text", "").strip()[:500] or "(no text)"
    stored = events.publish(
        f"user.{to}", {"from": session["user"], "text": text}, event="notification"
    )
    return {"id": stored.id}, 201
