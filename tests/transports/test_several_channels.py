"""The built-in endpoint with several channels, comma-separated
(``/events/a,b``): one stream, poll or long-poll, one cursor, each channel
put to ``authorize``; on both backends.
"""

from __future__ import annotations

import threading
import typing as t

import httpx
import pytest
from clients import RawStream
from conftest import serve
from conftest import Server

server = serve(backends=["memory", "redis"], config={"POLL_TIMEOUT": 5})


def get(server: Server, path: str, **params: t.Any) -> httpx.Response:
    return server.http.get(path, params=params, timeout=15)


def test_a_stream_of_two_channels_has_one_cursor(server: Server) -> None:
    raw = RawStream(server.url, "/events/two-a,two-b")
    try:
        assert raw.open() == []
        sent = server.publish("two-a", "a0") + server.publish("two-b", "b0")
        sent += server.publish("two-a", "a1")
        got = raw.events(3)
        cursor = raw.parser.last_event_id
    finally:
        raw.close()
    expected = list(zip(sent, ["a0", "b0", "a1"], strict=True))
    assert [(e.id, e.data) for e in got] == expected
    assert cursor == sent[-1]
    # What came on either channel since that one cursor, in order, once.
    later = server.publish("two-b", "b1") + server.publish("two-a", "a2")
    again = RawStream(server.url, "/events/two-a,two-b", {"Last-Event-ID": cursor})
    try:
        assert [e.id for e in again.open(cursor)] == later
    finally:
        again.close()


def test_a_poll_of_two_channels_answers_both_in_order(server: Server) -> None:
    first = get(server, "/events/poll-a,poll-b", transport="poll").json()
    assert first["events"] == []
    sent = server.publish("poll-b", "b0")
    server.publish("poll-other", "not asked for")
    sent += server.publish("poll-a", "a0")
    answer = get(
        server,
        "/events/poll-a,poll-b",
        transport="poll",
        lastEventId=first["lastEventId"],
    ).json()
    assert [(e["id"], e["data"]) for e in answer["events"]] == list(
        zip(sent, ["b0", "a0"], strict=True)
    )
    assert answer["lastEventId"] == sent[-1]


def test_a_long_poll_of_two_channels_returns_on_either(server: Server) -> None:
    cursor = get(server, "/events/lp-a,lp-b", transport="poll").json()["lastEventId"]
    answers: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: answers.append(
            get(server, "/events/lp-a,lp-b", transport="longpoll", lastEventId=cursor)
        )
    )
    waiting.start()
    # Published once the long-poll waits on both channels.
    server.wait_for(lambda stats: stats["channels"].get("lp-b") == 1)
    sent = server.publish("lp-b", "b0")
    waiting.join(15)
    (answer,) = answers
    assert [e["id"] for e in answer.json()["events"]] == sent


@pytest.mark.parametrize("transport", ["eventsource", "poll", "longpoll"])
def test_one_refused_channel_refuses_the_request(
    server: Server, transport: str
) -> None:
    answer = get(server, "/events/open-a,secret-b", transport=transport)
    assert answer.status_code == 403
    assert "Not allowed to subscribe to &#39;secret-b&#39;" in answer.text
    assert server.stats()["channels"].get("open-a") is None  # nothing opened


@pytest.mark.parametrize(
    ("channels", "message"),
    [
        ("bad-a,,bad-b", "Invalid channel name ''"),
        (",".join(f"c{n}" for n in range(33)), "more than EVENTSTREAM_MAX_CHANNELS"),
    ],
    ids=["empty-name", "too-many"],
)
def test_a_bad_list_of_channels_is_400(
    server: Server, channels: str, message: str
) -> None:
    for transport in ("eventsource", "poll"):
        answer = get(server, f"/events/{channels}", transport=transport)
        assert answer.status_code == 400
        assert message in answer.text.replace("&#39;", "'")


def test_a_channel_named_twice_is_followed_once(server: Server) -> None:
    raw = RawStream(server.url, "/events/twice,twice")
    try:
        assert raw.open() == []
        sent = server.publish("twice", "{n}", count=2)
        assert [e.id for e in raw.events(2)] == sent
        assert server.stats()["channels"]["twice"] == 1
    finally:
        raw.close()
