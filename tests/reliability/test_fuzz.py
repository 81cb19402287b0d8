"""Fuzzing the real server: whatever a client sends, the answer is never a
500 and never a broken frame; whatever is published arrives exactly.
"""

from __future__ import annotations

import json
import re
import socket
import typing as t
from urllib.parse import quote_from_bytes

import pytest
from clients import FastPublisher
from clients import RawStream
from conftest import serve
from conftest import Server
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

from flask_eventstream.testing import parse

FUZZ = settings(
    max_examples=400,  # a few seconds a test against a real server
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# Short waits: a long-poll with nothing to answer ends in 50 ms.
fuzz_server = serve(config={"POLL_TIMEOUT": 0.05, "HEARTBEAT": 0.05})


# Bytes as they may come off the network: any byte but the ones that end a
# header line, invalid UTF-8 included. A header value may be as long as
# gunicorn lets through to the app (a line of 8,190 bytes): a short random
# pattern repeated (drawn byte by byte, it overran hypothesis's buffer and
# four examples in five were thrown away, none of them long).
_raw = st.binary(max_size=64)
_long = st.tuples(st.binary(min_size=1, max_size=16), st.integers(4_000, 8_000))
_value = _raw | _long.map(lambda p: (p[0] * 8_000)[: p[1]])
_header_value = _value.map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_cursor = (
    st.sampled_from([b"", b"0-0", b"1-1", b"99999999999999999999-0"]) | _header_value
)
_query = st.dictionaries(
    st.sampled_from([b"transport", b"lastEventId", b"timeout", b"other"]),
    st.sampled_from([b"eventsource", b"poll", b"longpoll", b"0", b"0.1", b"nan"])
    | _raw,
    max_size=4,
)
_path = st.sampled_from([b"/stream/", b"/events/", b"/count?n=", b"/"])


def _request(
    path: bytes, channel: bytes, query: dict[bytes, bytes], headers: list[bytes]
) -> bytes:
    target = path + quote_from_bytes(channel, safe=b",").encode()
    if query:
        sep = b"&" if b"?" in target else b"?"
        target += sep + b"&".join(
            quote_from_bytes(k).encode() + b"=" + quote_from_bytes(v).encode()
            for k, v in query.items()
        )
    lines = [b"GET " + target + b" HTTP/1.0", b"Host: fuzz", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _exchange(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request``; return the status, headers and the body read until
    it ends or, for a stream, until its first complete block.
    """
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # the server may answer before the whole request was sent
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"no answer to {request[:200]!r}"
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        streaming = headers.get("content-type", "").startswith("text/event-stream")
        while True:
            if streaming and (body.endswith(b"\n\n") or body.endswith(b":\n")):
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(status_line.split()[1]), headers, body


_FIELD_LINE = re.compile(r"(|:.*|(id|event|data|retry)(: ?.*)?)")


@FUZZ
@given(
    path=_path,
    channel=st.sampled_from([b"news", b"a,b", b"secret", b"a" * 129]) | _raw,
    query=_query,
    cursor=_cursor,
    origin=_header_value,
    accept=_header_value,
)
def test_fuzzed_requests_get_no_500_and_no_broken_frame(
    fuzz_server: Server,
    path: bytes,
    channel: bytes,
    query: dict[bytes, bytes],
    cursor: bytes,
    origin: bytes,
    accept: bytes,
) -> None:
    headers = [b"Origin: " + origin, b"Accept: " + accept]
    if cursor:
        headers.append(
            b"Last-Event-ID: " + cursor.replace(b"\r", b"").replace(b"\n", b"")
        )
    status, answer, body = _exchange(
        fuzz_server, _request(path, channel, query, headers)
    )
    assert status < 500, (status, body[:300])
    if status != 200:
        return
    kind = answer.get("content-type", "")
    if kind.startswith("text/event-stream"):
        text = body.decode("utf-8")  # never a broken character
        assert text.endswith("\n"), text
        for line in text.split("\n"):
            assert _FIELD_LINE.fullmatch(line), line
        parse(body)
    elif kind.startswith("application/json"):
        answer_json = json.loads(body)
        assert set(answer_json) >= {"events", "lastEventId", "retry"}


@pytest.fixture(scope="module")
def reader(fuzz_server: Server) -> t.Iterator[tuple[RawStream, FastPublisher]]:
    stream = RawStream(fuzz_server.url, "/stream/fuzzed")
    stream.open()
    publisher = FastPublisher(fuzz_server.url)
    yield stream, publisher
    stream.close()
    publisher.close()


def _arrives_exactly(
    reader: tuple[RawStream, FastPublisher], data: str, event: str | None
) -> None:
    stream, publisher = reader
    status, answer = publisher.post("fuzzed", data, event)
    if status == 400:
        # Refused whole, with the reason: an event name with a line break or
        # a NUL, or one of the library's own.
        assert event is not None, answer
        refused = any(c in event for c in "\r\n\0")
        assert refused or event.startswith("eventstream-"), answer
        return
    assert status == 200, answer
    (got,) = stream.events(1)
    assert got.id == answer[0]
    # A line break in data is CRLF, CR or LF on the wire; each arrives as LF.
    assert got.data == data.replace("\r\n", "\n").replace("\r", "\n")
    assert got.event == (event or None)


@FUZZ
@given(
    data=st.text(st.characters(codec="utf-8"), max_size=2000),
    event=st.none() | st.text(st.characters(codec="utf-8"), max_size=40),
)
def test_fuzzed_events_arrive_exactly(
    reader: tuple[RawStream, FastPublisher], data: str, event: str | None
) -> None:
    _arrives_exactly(reader, data, event)


@pytest.mark.parametrize(
    "data",
    [
        "\n\nevent: admin\ndata: x",
        "\r\n\r\nid: 1\r\nretry: 0\r\n\r\n",
        "data: \n\n\n:",
        "x" * 60000,
    ],
)
def test_injected_fields_arrive_as_one_event(
    reader: tuple[RawStream, FastPublisher], data: str
) -> None:
    _arrives_exactly(reader, data, None)
