"""The test kit: the parser follows the WHATWG rules, like a browser; the
delivery checker holds a client to "every event once, in order, or a reset".
"""

from __future__ import annotations

import re

import pytest

from flask_eventstream import Event
from flask_eventstream.testing import check_delivery
from flask_eventstream.testing import DeliveryError
from flask_eventstream.testing import parse
from flask_eventstream.testing import Parser


@pytest.mark.parametrize(
    ("wire", "events"),
    [
        (b"data: a\n\n", [Event("a", id="")]),
        (b"data:a\r\n\r\n", [Event("a", id="")]),
        (b"data: a\r\rdata: b\r\r", [Event("a", id=""), Event("b", id="")]),
        (b"\xef\xbb\xbfdata: a\n\n", [Event("a", id="")]),
        (b"data: a\n", []),  # not ended by a blank line: never dispatched
        (b"id: 5\n\ndata: a\n\n", [Event("a", id="5")]),  # id-only block sets the id
        (b"retry: 100\n\n", []),
        (b": c\n:\ndata: a\n\n", [Event("a", id="")]),
        (b"data\n\n", [Event("", id="")]),
        (b"event: t\ndata: 1\ndata: 2\n\n", [Event("1\n2", event="t", id="")]),
        (b"id: a\0b\ndata: x\n\n", [Event("x", id="")]),  # NUL id ignored
        (b"event: t\n\n", []),
        (b"foo: bar\ndata: x\n\n", [Event("x", id="")]),
    ],
)
def test_parse(wire: bytes, events: list[Event]) -> None:
    assert parse(wire) == events


def test_parser_joins_chunks_at_any_byte() -> None:
    wire = "id: 1\r\nevent: \u00e9t\u00e9\r\ndata: \u2603\r\n\r\n".encode()
    for cut in range(len(wire) + 1):
        parser = Parser()
        events = parser.feed(wire[:cut]) + parser.feed(wire[cut:])
        assert events == [Event("\u2603", event="\u00e9t\u00e9", id="1")], cut


def test_parser_keeps_retry_and_last_id() -> None:
    parser = Parser()
    parser.feed(b"retry: 250\nid: 9-1\n\n")
    assert (parser.retry, parser.last_event_id) == (250, "9-1")


def _events(*ids: str) -> list[Event]:
    return [
        Event(i, event="eventstream-reset" if i == "R" else None, id=i) for i in ids
    ]


@pytest.mark.parametrize(
    "received",
    [
        ("1", "2", "3", "4"),
        ("R", "3", "4"),  # a reset, then a jump
        ("1", "R", "4"),
        ("1", "2", "R"),  # ends on a reset: the tail is forgiven
    ],
)
def test_check_delivery_accepts_lossless_or_loud(received: tuple[str, ...]) -> None:
    check_delivery(["1", "2", "3", "4"], _events(*received))


@pytest.mark.parametrize(
    ("received", "message"),
    [
        (("1", "3", "4"), "skipped without a reset before '3', from '2'"),
        (("1", "2", "2", "3", "4"), "duplicate or out of order"),
        (("1", "3", "2", "4"), "skipped"),
        (("2", "1", "3", "4"), "skipped"),
        (("1", "2", "9"), "never published"),
        (("1", "2"), "the last 2 published events never arrived, from '3'"),
    ],
)
def test_check_delivery_refuses_a_silent_gap_a_duplicate_or_disorder(
    received: tuple[str, ...], message: str
) -> None:
    with pytest.raises(DeliveryError, match=re.escape(message)):
        check_delivery(["1", "2", "3", "4"], _events(*received))


def test_check_delivery_may_leave_the_tail_open() -> None:
    check_delivery(["1", "2", "3"], _events("1"), complete=False)
