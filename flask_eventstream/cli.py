"""``flask eventstream``: publish, follow and count from the command line."""

from __future__ import annotations

import json
import typing as t
import urllib.parse

import click
from flask import current_app
from flask.cli import AppGroup

from .errors import BackendUnavailable
from .errors import PublishError
from .figures import Snapshot
from .hub import Hub
from .settings import check_channel
from .subscription import Subscription
from .wire import Event


class Extension(t.Protocol):
    """What the commands use of the app's :class:`EventStream` (registered
    by it, so this module does not import it).
    """

    def hub_for(self, app: t.Any = None) -> Hub: ...

    def snapshot(self, app: t.Any = None, *, everywhere: bool = False) -> Snapshot: ...

    def publish(
        self,
        channel: str,
        data: t.Any,
        *,
        event: str | None = None,
        idempotency_key: str | None = None,
    ) -> Event: ...


eventstream_cli = AppGroup(
    "eventstream", help="Publish, follow and count event streams."
)

_MEMORY_ONLY = (
    "EVENTSTREAM_BACKEND is 'memory': events and figures live in the server's"
    " process, out of this command's reach."
)


def _extension(*, shared: bool, instead: str = "") -> Extension:
    """The app's extension; with ``shared``, only on a backend this process
    shares with the server (else an error that says what to do, and
    ``instead``, another way).
    """
    events: Extension | None = current_app.extensions.get("eventstream")
    if events is None:
        raise click.ClickException("This app has no EventStream extension.")
    if shared and current_app.config["EVENTSTREAM_BACKEND"] == "memory":
        raise click.ClickException(
            f"{_MEMORY_ONLY} Configure a Redis backend to use this command"
            f" from outside the server{instead}."
        )
    return events


@eventstream_cli.command("publish")
@click.argument("channel")
@click.argument("data")
@click.option("--event", "event_type", default=None, help="The event type.")
@click.option(
    "--idempotency-key",
    default=None,
    help="Publish once: a repeat with this key on CHANNEL stores nothing.",
)
def publish_command(
    channel: str, data: str, event_type: str | None, idempotency_key: str | None
) -> None:
    """Publish DATA (sent as it is) on CHANNEL; print the event's id."""
    events = _extension(shared=True)
    try:
        stored = events.publish(
            channel, data, event=event_type, idempotency_key=idempotency_key
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    except PublishError as error:  # its message says whether to retry
        raise click.ClickException(str(error)) from None
    click.echo(stored.id)


@eventstream_cli.command("tail")
@click.argument("channels", nargs=-1)
@click.option(
    "--last-event-id",
    default=None,
    help="Resume after this id: print the stored events after it first.",
)
@click.option(
    "--url",
    default=None,
    help="Follow a running server's stream at this URL (of any app, any"
    " backend) instead of reading the backend; CHANNELS fill its {channels}"
    " placeholder, if it has one.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="Exit after this many events.",
)
def tail_command(
    channels: tuple[str, ...],
    last_event_id: str | None,
    url: str | None,
    as_json: bool,
    count: int | None,
) -> None:
    """Print the events of CHANNELS as they come, until interrupted.

    Reads the backend directly (Redis), with no authorization: it is an
    operator's tool. With --url, reads a running server's stream over HTTP.
    """
    source: t.Iterator[Event]
    if not channels and (url is None or "{channels}" in url):
        raise click.UsageError("Name at least one channel.")
    if url is not None:
        url = url.replace("{channels}", ",".join(channels))
        source = _http_events(url, last_event_id)
    else:
        prefix = current_app.config.get("EVENTSTREAM_URL_PREFIX")
        where = "URL-OF-A-STREAM" if prefix is None else f"http://HOST:PORT{prefix}"
        instead = (
            ", or read the running server's stream over HTTP:"
            f" flask eventstream tail --url {where}/{{channels}} {' '.join(channels)}"
        )
        events = _extension(shared=True, instead=instead)
        for channel in channels:
            problem = check_channel(channel)
            if problem is not None:
                raise click.BadParameter(problem)
        source = iter(Subscription(events.hub_for(), channels, last_event_id))
    seen = 0
    try:
        for event in source:
            if as_json:
                click.echo(json.dumps(event.to_dict()))
            else:
                click.echo(_printable(event.encode().decode()), nl=False)
            seen += 1
            if count is not None and seen >= count:
                break
    except KeyboardInterrupt:
        pass
    except BackendUnavailable as error:  # Redis down: a line, not a traceback
        raise click.ClickException(str(error)) from None
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def _http_events(url: str, last_event_id: str | None) -> t.Iterator[Event]:
    """Yield the events of the stream at ``url``, reconnecting and resuming
    as a browser does (:class:`~flask_eventstream.client.EventSource`).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"{url!r} is not an http(s) URL.")
    try:
        # The optional extra: only --url needs it.
        from .client import EventSource
        from .client import StreamRefused
    except ImportError as error:
        raise click.ClickException(str(error)) from None
    source = EventSource(url, last_event_id=last_event_id)
    try:
        yield from source
    except StreamRefused as error:
        raise click.ClickException(str(error)) from None
    finally:
        source.close()


@eventstream_cli.command("stats")
def stats_command() -> None:
    """Print every worker's connections and channels, and the history
    sizes, as JSON (workers report every few seconds while they hold
    streams).
    """
    events = _extension(shared=True)
    try:
        snapshot = events.snapshot(everywhere=True)
    except BackendUnavailable as error:
        raise click.ClickException(str(error)) from None
    workers = snapshot["workers"] or []
    channels: dict[str, int] = {}
    counters: dict[str, int] = {}
    for report in workers:
        for name, n in report["channels"].items():
            channels[name] = channels.get(name, 0) + n
        for name, n in report["counters"].items():
            counters[name] = counters.get(name, 0) + n
    figures = {
        "workers": len(workers),
        "connections": sum(report["connections"] for report in workers),
        "channels": dict(sorted(channels.items())),
        "counters": counters,
        "history": snapshot["history"],
        "per_worker": workers,
    }
    click.echo(json.dumps(figures, indent=2))


def _printable(text: str) -> str:
    """``text`` with control characters other than the line feed escaped,
    so an event cannot move the cursor or retitle the operator's terminal.
    """
    return "".join(
        char if char == "\n" or char.isprintable() else repr(char)[1:-1]
        for char in text
    )
