"""The app the integration tests serve with real servers.

Configured from the environment (``FLASK_EVENTSTREAM_HEARTBEAT=0.5`` and so
on, read by ``app.config.from_prefixed_env``).
"""

from __future__ import annotations

import os
import time
import typing as t

from appkit import instrument
from flask import abort
from flask import Flask
from flask import jsonify
from flask import render_template
from flask import request

from flask_eventstream import Event
from flask_eventstream import EventStream
from flask_eventstream import PublishError
from flask_eventstream import signals
from flask_eventstream import stream
from flask_eventstream import Subscription

events = EventStream()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_prefixed_env()
    secret = app.config["SECRET_KEY"] or "the tests' secret, long enough to sign"
    app.config["SECRET_KEY"] = secret
    events.init_app(app)

    # Users banned by POST /ban, in a file every worker reads.
    bans = os.environ.get("TEST_BANS_FILE")

    @events.authorize
    def authorize(channel: str) -> bool:
        if channel.startswith("secret"):
            return False
        allowed = True
        if bans and os.path.exists(bans):
            with open(bans) as file:
                allowed = request.args.get("user", "") not in file.read().split()
        if channel.startswith("slowauth"):
            time.sleep(0.5)  # I/O after the check: a revocation may come now
        return allowed

    # Receivers a user might write (TEST_GUESTS, comma-separated): one that
    # publishes when a client leaves, one with a bug.
    guests = os.environ.get("TEST_GUESTS", "").split(",")
    if "publish-on-disconnect" in guests:

        def audit(sender: Flask, subscription: Subscription, reason: str) -> None:
            channels = ",".join(subscription.channels)
            events.publish("audit", f"{reason} {channels}", event="left")

        signals.client_disconnected.connect(audit, sender=app, weak=False)
    if "raise-on-connect" in guests:

        def broken_connect(sender: Flask, **extra: t.Any) -> None:
            raise RuntimeError("a bug in the user's connect receiver")

        signals.client_connected.connect(broken_connect, sender=app, weak=False)
    if "raise" in guests:

        def broken(sender: Flask, **extra: t.Any) -> None:
            raise RuntimeError("a bug in the user's receiver")

        signals.client_disconnected.connect(broken, sender=app, weak=False)

    instrument(app)

    @app.get("/stream/<channels>")
    @stream
    def channels_stream(channels: str) -> t.Any:
        return events.subscribe(*channels.split(","))

    @app.get("/iterate/<channels>")
    @stream
    def iterate_stream(channels: str) -> t.Any:
        # The docs' generator view: it iterates a subscription.
        yield from events.subscribe(*channels.split(","))

    @app.get("/foreign/<channel>")
    @stream
    def foreign(channel: str) -> t.Any:
        # Another SSE server answered this URL before: its ids are not ours.
        if request.headers.get("Last-Event-ID") is None:
            yield Event("old", id="from another server", retry=100)
            return
        yield from events.subscribe(channel)

    @app.get("/quiet/<channels>")
    @stream(announce=False)
    def quiet_stream(channels: str) -> t.Any:
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
            except ValueError as error:
                return {"error": str(error), "published": ids}, 400
            ids.append(event.id)
        return jsonify(ids)

    @events.identify
    def identify() -> str | None:
        if request.args.get("user") == "broken-identify":
            raise RuntimeError("a bug in the user's identify")
        return request.args.get("user") or None

    @app.get("/presence/<channel>")
    def presence(channel: str) -> t.Any:
        return events.presence(channel)

    @app.get("/token")
    def token() -> t.Any:
        channels = request.args["channels"].split(",")
        lifetime = float(request.args.get("expires_in", 3600))
        return events.token(*channels, expires_in=lifetime)

    @app.post("/ban")
    def ban() -> t.Any:
        assert bans is not None
        with open(bans, "a") as file:
            file.write(request.form["user"] + "\n")
        return "banned"

    @app.post("/close")
    def close() -> t.Any:
        events.close_channel(request.form["channel"])
        return "closed"

    @app.get("/debug")
    def debug() -> t.Any:
        # What a leak would grow: greenlets, descriptors, memory.
        import gc

        from greenlet import greenlet

        gc.collect()  # count what is kept, not garbage awaiting collection
        with open("/proc/self/status") as file:
            rss = next(line for line in file if line.startswith("VmRSS"))
        return {
            "greenlets": sum(isinstance(o, greenlet) for o in gc.get_objects()),
            # What a full collection visits: its pause grows with this.
            "tracked": len(gc.get_objects()),
            "subscriptions": sum(isinstance(o, Subscription) for o in gc.get_objects()),
            "fds": len(os.listdir("/proc/self/fd")),
            "rss_kb": int(rss.split()[1]),
            "streams": len(events.hub_for().monitor.bodies),
            "connections": events.stats()["connections"],
        }

    @app.get("/stats")
    def stats() -> t.Any:
        return jsonify(events.stats())

    @app.get("/count")
    @stream
    def count() -> t.Any:
        raw = request.args.get("n", "3")
        if not (raw.isascii() and raw.isdigit() and len(raw) < 6):
            abort(400, "n is a whole number of events.")
        for n in range(int(raw)):
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

    @app.get("/broken")
    @stream
    def broken() -> t.Any:
        raise RuntimeError("a bug in the view")

    @app.get("/gone")
    @stream
    def gone() -> t.Any:
        return "", 204

    if os.environ.get("TEST_METRICS"):
        # Prometheus: one process, or multiprocess mode when
        # PROMETHEUS_MULTIPROC_DIR is set; the route serves either.
        from flask_eventstream.metrics import PrometheusMetrics

        PrometheusMetrics(events, app, path="/metrics")

    return app


app = create_app()
