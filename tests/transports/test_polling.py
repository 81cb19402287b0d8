"""Poll and long-poll on the same URL, against gunicorn's gevent worker."""

from __future__ import annotations

import asyncio
import threading
import time
import typing as t

import httpx
import pytest
from clients import RawStream
from conftest import serve
from conftest import Server

server = serve(config={"POLL_TIMEOUT": 3})


def poll(server: Server, path: str, **params: t.Any) -> httpx.Response:
    return server.http.get(path, params=params, timeout=15)


def test_poll_without_cursor_gives_current_cursor(server: Server) -> None:
    (before,) = server.publish("p1", "old")
    rv = poll(server, "/events/p1", transport="poll")
    assert rv.status_code == 200
    assert rv.headers["content-type"] == "application/json"
    assert "no-store" in rv.headers["cache-control"]
    assert rv.headers["x-content-type-options"] == "nosniff"
    assert rv.content == (
        b'{"events":[],"lastEventId":"' + before.encode() + b'","retry":500}'
    )
    ids = server.publish("p1", "a\r\nb{n}", count=2, event="tick")
    rv = poll(server, "/events/p1", transport="poll", lastEventId=before)
    assert rv.json() == {
        "events": [
            {"id": ids[0], "event": "tick", "data": "a\nb0"},
            {"id": ids[1], "event": "tick", "data": "a\nb1"},
        ],
        "lastEventId": ids[1],
        "retry": 500,
    }


def test_poll_accepts_last_event_id_header(server: Server) -> None:
    first, second = server.publish("p2", count=2)
    rv = server.http.get(
        "/events/p2?transport=poll",
        headers={"Last-Event-ID": first},
        timeout=5,
    )
    assert [e["id"] for e in rv.json()["events"]] == [second]


def test_poll_with_unknown_cursor_resets(server: Server) -> None:
    rv = poll(server, "/events/p3", transport="poll", lastEventId="1-1")
    answer = rv.json()
    assert answer["reset"] is True
    (reset,) = answer["events"]
    assert reset["event"] == "eventstream-reset"
    assert answer["lastEventId"] == reset["id"]


def test_longpoll_returns_as_soon_as_an_event_arrives(server: Server) -> None:
    (cursor,) = server.publish("lp1", "before")
    answers: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: answers.append(
            poll(server, "/events/lp1", transport="longpoll", lastEventId=cursor)
        )
    )
    started = time.monotonic()
    thread.start()
    server.wait_for(lambda s: s["channels"].get("lp1") == 1)
    ids = server.publish("lp1", "now{n}", count=3)
    thread.join(10)
    elapsed = time.monotonic() - started
    (answer,) = answers
    assert elapsed < 3, "answered at the timeout, not when the event came"
    # It answers with what had come (the first, or more), and the next
    # poll from its lastEventId gets the rest: none lost, none twice.
    got = [e["id"] for e in answer.json()["events"]]
    assert got and got == ids[: len(got)], (got, ids)
    assert answer.json()["lastEventId"] == got[-1]
    rest = poll(server, "/events/lp1", transport="poll", lastEventId=got[-1])
    assert got + [e["id"] for e in rest.json()["events"]] == ids


def test_longpoll_times_out_empty(server: Server) -> None:
    (cursor,) = server.publish("lp2", "x")
    started = time.monotonic()
    rv = poll(
        server, "/events/lp2", transport="longpoll", lastEventId=cursor, timeout=1
    )
    elapsed = time.monotonic() - started
    assert rv.json() == {"events": [], "lastEventId": cursor, "retry": 500}
    assert 0.9 < elapsed < 2.9


def test_longpoll_timeout_is_clamped_to_the_maximum(server: Server) -> None:
    (cursor,) = server.publish("lp3", "x")
    started = time.monotonic()
    rv = poll(
        server, "/events/lp3", transport="longpoll", lastEventId=cursor, timeout=10**9
    )
    assert rv.status_code == 200
    assert rv.json()["events"] == []
    assert time.monotonic() - started < 6  # EVENTSTREAM_POLL_TIMEOUT is 3


def test_longpoll_returns_stored_events_at_once(server: Server) -> None:
    first, *rest = server.publish("lp4", count=3)
    rv = poll(server, "/events/lp4", transport="longpoll", lastEventId=first)
    assert [e["id"] for e in rv.json()["events"]] == rest


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("transport=smoke-signal", b"Unknown transport"),
        ("transport=longpoll&timeout=abc", b"timeout must be"),
        ("transport=longpoll&timeout=nan", b"timeout must be"),
        ("transport=longpoll&timeout=-1", b"timeout must be"),
        ("transport=longpoll&timeout=inf", b"timeout must be"),
        ("transport=longpoll&timeout=1e3", b"timeout must be"),
        ("transport=longpoll&timeout=1_0", b"timeout must be"),
        ("transport=longpoll&timeout=" + "1" * 40, b"timeout must be"),
        ("transport=poll&lastEventId=12-AB", b"cursor"),
        ("transport=poll&lastEventId=" + "9" * 100, b"cursor"),
    ],
)
def test_bad_poll_requests_are_400(server: Server, query: str, message: bytes) -> None:
    rv = httpx.get(f"{server.url}/events/bad?{query}", timeout=5)
    assert rv.status_code == 400
    assert message in rv.content


def test_polling_a_generator_view_is_400(server: Server) -> None:
    rv = poll(server, "/generator", transport="poll")
    assert rv.status_code == 400
    assert b"generator view and cannot be polled" in rv.content


@pytest.mark.parametrize("transport", [None, "poll", "longpoll", "eventsource"])
def test_authorize_applies_to_every_transport(server: Server, transport: str) -> None:
    params = {"transport": transport} if transport else {}
    rv = poll(server, "/events/secret-plans", **params)
    assert rv.status_code == 403
    assert b"Not allowed to subscribe to &#39;secret-plans&#39;" in rv.content
    assert server.stats()["channels"].get("secret-plans") is None


def test_switching_transports_loses_nothing(server: Server) -> None:
    raw = RawStream(server.url, "/events/switch")
    assert raw.open() == []  # a fresh client: the opening has no event
    sent = server.publish("switch", "{n}", count=2)
    got = [e.id for e in raw.events(2)]
    cursor = raw.parser.last_event_id
    raw.close()

    sent += server.publish("switch", "{n}", count=2)
    answer = poll(server, "/events/switch", transport="poll", lastEventId=cursor).json()
    got += [e["id"] for e in answer["events"]]

    sent += server.publish("switch", "{n}", count=2)
    answer = poll(
        server,
        "/events/switch",
        transport="longpoll",
        lastEventId=answer["lastEventId"],
    ).json()
    got += [e["id"] for e in answer["events"]]

    sent += server.publish("switch", "{n}", count=2)
    raw = RawStream(
        server.url, "/events/switch", {"Last-Event-ID": answer["lastEventId"]}
    )
    got += [e.id for e in raw.events(2)]
    raw.close()
    assert got == sent


def test_200_concurrent_longpolls(server: Server) -> None:
    (cursor,) = server.publish("many", "start")

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=250)
        async with httpx.AsyncClient(timeout=20, limits=limits) as client:
            params = {"transport": "longpoll", "lastEventId": cursor, "timeout": 3}
            return await asyncio.gather(
                *(
                    client.get(server.url + "/events/many", params=params)
                    for _ in range(200)
                )
            )

    answers: list[list[httpx.Response]] = []
    thread = threading.Thread(target=lambda: answers.append(asyncio.run(run())))
    thread.start()
    server.wait_for(lambda s: s["channels"].get("many") == 200)
    (sent,) = server.publish("many", "for all")
    thread.join(30)
    (responses,) = answers
    assert all(
        r.json()["events"] == [{"id": sent, "event": "message", "data": "for all"}]
        for r in responses
    )
    server.wait_for(lambda s: "many" not in s["channels"])


def test_gone_longpoll_client_is_removed(server: Server) -> None:
    (cursor,) = server.publish("leaver", "x")
    raw = RawStream(
        server.url, f"/events/leaver?transport=longpoll&lastEventId={cursor}&timeout=3"
    )
    server.wait_for(lambda s: s["channels"].get("leaver") == 1)
    raw.close()
    # Found at the next write: a heartbeat space, or the answer.
    server.wait_for(lambda s: "leaver" not in s["channels"], timeout=5)
