"""The demo: a page that shows live events and a form that publishes them.

Run it with ``bash scripts/demo`` (gunicorn, gevent worker, 127.0.0.1:8000).
"""

from __future__ import annotations

from flask import Flask
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask.typing import ResponseReturnValue

from flask_eventstream import EventStream

app = Flask(__name__)
app.config["EVENTSTREAM_BACKEND"] = "memory"
events = EventStream(app)


@events.authorize
def authorize(channel: str) -> bool:
    # The demo's one public channel; real apps check the user here.
    return channel == "demo"


@app.get("/")
def index() -> str:
    return render_template("index.html")


@app.post("/publish")
def publish() -> ResponseReturnValue:
    text = request.form.get("text", "").strip() or "(empty)"
    events.publish("demo", {"text": text[:500]}, event="note")
    if request.accept_mimetypes.best == "application/json":
        return {"ok": True}
    return redirect(url_for("index"))
