"""``flask eventstream``: publish from the command line."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

eventstream_cli = AppGroup("eventstream", help="Publish and inspect event streams.")


@eventstream_cli.command("publish")
@click.argument("channel")
@click.argument("data")
@click.option("--event", "event_type", default=None, help="The event type.")
def publish_command(channel: str, data: str, event_type: str | None) -> None:
    """Publish DATA (sent as it is) on CHANNEL."""
    events = current_app.extensions.get("eventstream")
    if events is None:
        raise click.ClickException("This app has no EventStream extension.")
    if current_app.config["EVENTSTREAM_BACKEND"] == "memory":
        raise click.ClickException(
            "EVENTSTREAM_BACKEND is 'memory': an event published by this command"
            " would live and die in this command's process and reach no client."
            " Configure a Redis backend to publish from outside the server."
        )
    try:
        stored = events.publish(channel, data, event=event_type)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    click.echo(stored.id)
