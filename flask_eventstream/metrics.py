"""Prometheus metrics, opt-in: install ``prometheus_client``, then::

    from flask_eventstream.metrics import PrometheusMetrics

    PrometheusMetrics(events, app)

and expose it: ``PrometheusMetrics(events, app, path="/metrics")`` adds the
route, or serve :meth:`PrometheusMetrics.scrape` from a view of your own.

In one process the figures are read from
:meth:`EventStream.snapshot <flask_eventstream.EventStream.snapshot>` at each
scrape. Under gunicorn with several workers, use prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before gunicorn starts,
:class:`prometheus_client.multiprocess.MultiProcessCollector` in the scrape
view, and the ``child_exit`` hook of :mod:`flask_eventstream.gunicorn`): each
worker then writes its figures to the shared directory every two seconds
while it holds streams, and once when its last stream closes, and a scrape
sums them over the workers.
"""

from __future__ import annotations

import os
import time
import typing as t

from flask import Flask

from .extension import EventStream
from .hub import COUNTERS

try:
    import prometheus_client
    from prometheus_client import multiprocess
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.mmap_dict import mmap_key
    from prometheus_client.mmap_dict import MmapedDict
except ImportError:  # pragma: no cover - checked in __init__
    prometheus_client = None  # type: ignore[assignment]

#: Seconds a channel without subscribers keeps its series (multiprocess mode;
#: in one process a scrape lists only the channels with subscribers).
CHANNEL_SERIES_TTL = 300.0

_CHANNELS_HELP = "Open subscriptions per channel."

_HELP = {
    "published": "Events published by this app.",
    "delivered": "Events sent to clients (streams and polls).",
    "dropped": "Clients dropped: queue overflow or a stalled write.",
    "replayed": "Stored events sent to clients that resumed.",
    "resets": "Cursors that could not be resumed from.",
    "refused": "Subscriptions refused (authorize, limits, bad input).",
    "revoked": "Subscriptions ended by close_channel.",
    "errors": "Backend errors.",
    "callback_errors": "Exceptions raised by user callbacks (signal receivers,"
    " authorize), caught and logged.",
    "gaps": "Subscriptions ended because events may have been missed (a lagging"
    " worker, a lost store); their clients resume or reset.",
}


class PrometheusMetrics:
    """Expose an :class:`~flask_eventstream.EventStream`'s figures to
    Prometheus.

    :param events: the extension.
    :param app: the app it is registered on.
    :param registry: where to register in single-process mode (default:
        prometheus_client's global ``REGISTRY``).
    :param prefix: the metric names' prefix.
    :param channel_ttl: in multiprocess mode, seconds a channel without
        subscribers keeps its series (at 0) before it is dropped.
    :param path: if given, a ``GET`` route at this path (``"/metrics"``)
        that serves the scrape, in one process (``registry``) or several (a
        ``MultiProcessCollector`` over ``PROMETHEUS_MULTIPROC_DIR``). Protect
        or leave it off where the app is public: it lists channel names.
    :raises RuntimeError: if ``prometheus_client`` is not installed.
    """

    def __init__(
        self,
        events: EventStream,
        app: Flask,
        *,
        registry: t.Any = None,
        prefix: str = "eventstream",
        channel_ttl: float = CHANNEL_SERIES_TTL,
        path: str | None = None,
    ) -> None:
        if prometheus_client is None:
            raise RuntimeError(
                "PrometheusMetrics needs prometheus_client:"
                " pip install 'flask-eventstream[metrics]'"
            )
        self._events = events
        self._app = app
        self.prefix = prefix
        #: Seconds a channel without subscribers keeps its series at 0 in
        #: multiprocess mode before it is dropped.
        self.channel_ttl = channel_ttl
        #: Whether prometheus_client's multiprocess mode is on.
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        if self.multiprocess:
            self._setup_multiprocess(registry)
        else:
            (registry or prometheus_client.REGISTRY).register(self)
        if path is not None:
            scraped = registry or prometheus_client.REGISTRY
            app.add_url_rule(path, "eventstream_metrics", lambda: self.scrape(scraped))

    def scrape(self, registry: t.Any = None) -> tuple[bytes, dict[str, str]]:
        """The scrape's body and headers: ``registry``'s metrics in one
        process, the sum over the workers in multiprocess mode. What the
        ``path`` route answers; call it from a view of your own to protect it.
        """
        if self.multiprocess:
            registry = prometheus_client.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = prometheus_client.generate_latest(registry or prometheus_client.REGISTRY)
        return body, {"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}

    # -- one process: read at scrape time --------------------------------

    def collect(self) -> t.Iterator[t.Any]:
        """Yield the current figures (the collector protocol)."""
        figures = self._events.snapshot(self._app)["worker"]
        yield GaugeMetricFamily(
            f"{self.prefix}_connections",
            "Open subscriptions (streams and waiting long-polls).",
            value=figures["connections"],
        )
        channels = GaugeMetricFamily(
            f"{self.prefix}_channel_subscribers",
            _CHANNELS_HELP,
            labels=["channel"],
        )
        for channel, count in sorted(figures["channels"].items()):
            channels.add_metric([channel], count)
        yield channels
        for name in COUNTERS:
            yield CounterMetricFamily(
                f"{self.prefix}_{name}", _HELP[name], value=figures["counters"][name]
            )

    def describe(self) -> list[t.Any]:
        return []  # no fixed description: collect() is cheap

    # -- several workers: written to the shared directory -----------------

    def _setup_multiprocess(self, registry: t.Any) -> None:
        # Registered nowhere by default: the scrape view's
        # MultiProcessCollector reads the directory, not a registry.
        self._connections = prometheus_client.Gauge(
            f"{self.prefix}_connections",
            "Open subscriptions (streams and waiting long-polls).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self._counters = {
            name: prometheus_client.Counter(
                f"{self.prefix}_{name}", _HELP[name], registry=registry
            )
            for name in COUNTERS
        }
        self._synced = dict.fromkeys(COUNTERS, 0)
        #: channel -> when it last had a subscriber here
        self._last_seen: dict[str, float] = {}
        # The worker's monitor pushes its figures while it holds streams: a
        # hook of the package's internals, not a read.
        self._events.hub_for(self._app).reporters.append(self.sync)

    def sync(self, figures: t.Mapping[str, t.Any]) -> None:
        """Write ``figures`` (a :class:`~flask_eventstream.WorkerReport`, from
        the worker's monitor) to the shared files.
        """
        self._connections.set(figures["connections"])
        self._write_channels(figures["channels"])
        for name in COUNTERS:
            value = figures["counters"][name]
            if value > self._synced[name]:
                self._counters[name].inc(value - self._synced[name])
                self._synced[name] = value

    def _write_channels(self, channels: dict[str, int]) -> None:
        # prometheus_client cannot drop a labelled series in multiprocess mode,
        # and channel names come and go (one per user): this worker's series
        # are written to a file of its own, rewritten whole each time, which
        # the MultiProcessCollector reads like its own. A channel without a
        # subscriber here shows 0 for channel_ttl seconds, then goes.
        now = time.monotonic()
        for channel in channels:
            self._last_seen[channel] = now
        name = f"{self.prefix}_channel_subscribers"
        path = channels_file(os.getpid())
        temporary = f"{path}.new"  # not *.db: a scrape now never reads it half written
        values = MmapedDict(temporary)  # type: ignore[no-untyped-call]
        try:
            for channel, seen in list(self._last_seen.items()):
                if now - seen > self.channel_ttl:
                    del self._last_seen[channel]
                    continue
                key = mmap_key(name, name, ["channel"], [channel], _CHANNELS_HELP)
                count = channels.get(channel, 0)
                values.write_value(key, count, time.time())  # type: ignore[no-untyped-call]
        finally:
            values.close()  # type: ignore[no-untyped-call]
        os.replace(temporary, path)


def channels_file(pid: int) -> str:
    """The file of worker ``pid``'s channel series (multiprocess mode)."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    return os.path.join(directory, f"gauge_livesum_{pid}-eventstream-channels.db")


def worker_gone(pid: int) -> None:
    """Drop the series of a worker that exited (multiprocess mode): its
    gauges, and its channel series.
    """
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ or prometheus_client is None:
        return
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
    try:
        os.remove(channels_file(pid))
    except FileNotFoundError:
        pass
