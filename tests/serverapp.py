"""The app the integration tests serve with real servers.

Configured from the environment (``FLASK_EVENTSTREAM_HEARTBEAT=0.5`` and so
on, read by ``app.config.from_prefixed_env``).
"""

from __future__ import annotations

import os
import time
import typing as t

from flask import Flask
from flask import jsonify
from flask import render_template
from flask import request

from flask_eventstream import Event
from flask_eventstream import EventStream
from flask_eventstream import PublishError
from flask_eventstream import stream

events = EventStream()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_prefixed_env()
    events.init_app(app)

    @events.authorize
    def authorize(channel: str) -> bool:
        return not channel.startswith("secret")

    @app.after_request
    def worker_pid(response: t.Any) -> t.Any:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    @app.get("/health")
    def health() -> t.Any:
        return "ok"

    @app.get("/stream/<channels>")
    @stream
    def channels_stream(channels: str) -> t.Any:
        return events.subscribe(*channels.split(","))

    @app.post("/publish")
    def publish() -> t.Any:
        channel = request.form["channel"]
        count = int(request.form.get("count", 1))
        ids = []
        for n in range(count):
            data = request.form.get("data", "{n}").replace("{n}", str(n))
            try:
                event = events.publish(channel, data, event=request.form.get("event"))
            except PublishError as error:
                return {"error": str(error), "published": ids}, 503
            ids.append(event.id)
        return jsonify(ids)

    @app.get("/stats")
    def stats() -> t.Any:
        return jsonify(events.stats())

    @app.get("/count")
    @stream
    def count() -> t.Any:
        for n in range(int(request.args.get("n", 3))):
            yield Event(str(n), id=str(n))

    @app.get("/slow")
    @stream(heartbeat=0.3)
    def slow() -> t.Any:
        # Blocks inside its own code far longer than the heartbeat.
        yield "first"
        time.sleep(float(request.args.get("pause", 2)))
        yield "second"

    @app.get("/page/<mode>")
    def page(mode: str) -> t.Any:
        url = request.args.get("url", "/events/browser")
        return render_template("page.html", mode=mode, url=url)

    @app.get("/generator")
    @stream
    def generator() -> t.Any:
        yield "only a stream"

    @app.get("/gone")
    @stream
    def gone() -> t.Any:
        return "", 204

    return app


app = create_app()
