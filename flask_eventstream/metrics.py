"""Prometheus metrics, opt-in: install ``prometheus_client``, then::

    from flask_eventstream.metrics import PrometheusMetrics

    PrometheusMetrics(events, app)

and expose the registry as usual (``prometheus_client.make_wsgi_app()``, or
your own ``/metrics`` view).

In one process the figures are read from :meth:`EventStream.stats` at each
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
import typing as t

from flask import Flask

from .extension import EventStream
from .hub import COUNTERS

try:
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.core import GaugeMetricFamily
except ImportError:  # pragma: no cover - checked in __init__
    prometheus_client = None  # type: ignore[assignment]

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
    """Expose an :class:`EventStream`'s figures to Prometheus.

    :param events: the extension.
    :param app: the app it is registered on.
    :param registry: where to register in single-process mode (default:
        prometheus_client's global ``REGISTRY``).
    :param prefix: the metric names' prefix.
    :raises RuntimeError: if ``prometheus_client`` is not installed.
    """

    def __init__(
        self,
        events: EventStream,
        app: Flask,
        *,
        registry: t.Any = None,
        prefix: str = "eventstream",
    ) -> None:
        if prometheus_client is None:
            raise RuntimeError(
                "PrometheusMetrics needs prometheus_client:"
                " pip install 'flask-eventstream[metrics]'"
            )
        self._hub = events.hub_for(app)
        self.prefix = prefix
        #: Whether prometheus_client's multiprocess mode is on.
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        if self.multiprocess:
            self._setup_multiprocess(registry)
        else:
            (registry or prometheus_client.REGISTRY).register(self)

    # -- one process: read at scrape time --------------------------------

    def collect(self) -> t.Iterator[t.Any]:
        """Yield the current figures (the collector protocol)."""
        state = self._hub
        yield GaugeMetricFamily(
            f"{self.prefix}_connections",
            "Open subscriptions (streams and waiting long-polls).",
            value=state.connections,
        )
        channels = GaugeMetricFamily(
            f"{self.prefix}_channel_subscribers",
            "Open subscriptions per channel.",
            labels=["channel"],
        )
        for channel, count in sorted(state.bus.subscribers().items()):
            channels.add_metric([channel], count)
        yield channels
        for name in COUNTERS:
            yield CounterMetricFamily(
                f"{self.prefix}_{name}", _HELP[name], value=state.counters[name]
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
        self._channels = prometheus_client.Gauge(
            f"{self.prefix}_channel_subscribers",
            "Open subscriptions per channel.",
            ["channel"],
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
        self._seen_channels: set[str] = set()
        self._hub.reporters.append(self.sync)

    def sync(self, figures: dict[str, t.Any]) -> None:
        """Write ``figures`` (from the worker's monitor) to the shared files."""
        self._connections.set(figures["connections"])
        channels: dict[str, int] = figures["channels"]
        for channel in self._seen_channels - channels.keys():
            self._channels.labels(channel).set(0)
        for channel, count in channels.items():
            self._channels.labels(channel).set(count)
        self._seen_channels = set(channels)
        for name in COUNTERS:
            value = figures["counters"][name]
            if value > self._synced[name]:
                self._counters[name].inc(value - self._synced[name])
                self._synced[name] = value
