"""An app with accounts, for the shared-tab browser tests: a user logs in and
out through Flask's session cookie, as a real app does, and ``/me/events``
is the same URL for every user, each getting their own channel.

The session is permanent and signed again on every request
(``SESSION_REFRESH_EACH_REQUEST``): the cookie's bytes change while the
login stays the same. ``TEST_IDENTIFY=1`` registers ``identify`` (the user's
name); without it the library scopes by the cookies.
"""

from __future__ import annotations

import os
import typing as t
from datetime import timedelta

from appkit import instrument
from flask import abort
from flask import Flask
from flask import jsonify
from flask import render_template
from flask import request
from flask import session

from flask_eventstream import EventStream
from flask_eventstream import stream

events = EventStream()


def create_app() -> Flask:
    """The app, configured from ``FLASK_EVENTSTREAM_*`` in the environment."""
    app = Flask(__name__)
    app.config.from_prefixed_env()
    app.config["SECRET_KEY"] = "the shared-tab tests' secret, long enough"
    app.config["SESSION_REFRESH_EACH_REQUEST"] = True
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=1)
    events.init_app(app)
    instrument(app)

    @events.authorize
    def authorize(channel: str) -> bool:
        user = session.get("user")
        return user is not None and channel == f"user.{user}"

    if os.environ.get("TEST_IDENTIFY"):

        @events.identify
        def identify() -> str | None:
            return t.cast("str | None", session.get("user"))

    @app.post("/login")
    def login() -> t.Any:
        session.permanent = True
        session["user"] = request.form["user"]
        return "in"

    @app.post("/logout")
    def logout() -> t.Any:
        user = session.pop("user", None)
        if user is not None and request.form.get("close"):
            events.close_channel(f"user.{user}")  # the docs' advice
        return "out"

    @app.get("/me/events")
    @stream
    def my_events() -> t.Any:
        user = session.get("user")
        if user is None and request.args.get("anonymous") == "204":
            return "", 204  # "no more for you"
        if user is None:
            abort(403, "Log in first.")
        return events.subscribe(f"user.{user}")

    @app.post("/close")
    def close() -> t.Any:
        events.close_channel(request.form["channel"])
        return "closed"

    @app.post("/publish")
    def publish() -> t.Any:
        event = events.publish(request.form["channel"], request.form["data"])
        return jsonify([event.id])

    @app.get("/stats")
    def stats() -> t.Any:
        return jsonify(events.stats())

    @app.get("/page/<mode>")
    def page(mode: str) -> t.Any:
        return render_template("page.html", mode=mode, url=request.args["url"])

    return app


app = create_app()
