"""An order-status widget on another site: a cookie-less, cross-origin page
subscribes with a subscriber token.

Run it::

    gunicorn -c python:flask_eventstream.gunicorn -w 1 --chdir examples/widget app:app

then open http://localhost:8000/partner: a page of "another site" (another
origin: ``localhost``, not ``127.0.0.1``) whose server asked this app for a
token, and whose browser subscribes to ``http://127.0.0.1:8000/events/...``
with it. Ship the order from http://127.0.0.1:8000/ and the widget follows.
The app registers no ``authorize`` function, so its built-in endpoint serves
nobody without a token, and a token only the channels it names, until it
expires.
"""

from __future__ import annotations

import os

from flask import Flask
from flask import render_template
from flask import request
from flask.typing import ResponseReturnValue

from flask_eventstream import EventStream

app = Flask(__name__)
# Tokens are signed with it. Set a real SECRET_KEY outside a demo.
app.config["SECRET_KEY"] = os.environ.get(
    "SECRET_KEY", "widget demo only: set SECRET_KEY outside it"
)
app.config["WIDGET_ORIGIN"] = "http://localhost:8000"
app.config["WIDGET_STREAMS"] = "http://127.0.0.1:8000"
app.config.from_prefixed_env()  # FLASK_WIDGET_ORIGIN=... overrides
# The partner's pages may read the streams; nobody else's.
app.config["EVENTSTREAM_CORS_ORIGINS"] = [app.config["WIDGET_ORIGIN"]]
events = EventStream(app)


@app.get("/")
def shop() -> str:
    return render_template("shop.html")


@app.post("/orders/<int:order>/status")
def set_status(order: int) -> ResponseReturnValue:
    status = request.form.get("status", "").strip()[:40]
    if not status:
        return {"error": "Give the order a status."}, 400
    stored = events.publish(f"order.{order}", {"status": status}, event="status")
    return {"id": stored.id}, 201


@app.get("/partner")
def partner() -> str:
    # Stands for the partner's own server, which would ask this app for a
    # token over an API (with its own credentials) and render it.
    token = events.token("order.42", expires_in=600)
    url = f"{app.config['WIDGET_STREAMS']}/events/order.42?token={token}"
    return render_template("partner.html", url=url)
