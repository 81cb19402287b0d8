from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_eventstream import Event
from flask_eventstream.testing import parse


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        (Event("hello"), b"data: hello\n\n"),
        (Event(""), b"data: \n\n"),
        (Event(), b"data: \n\n"),
        (Event("x\n"), b"data: x\ndata: \n\n"),
        (Event("a\nb"), b"data: a\ndata: b\n\n"),
        (Event("a\r\nb"), b"data: a\ndata: b\n\n"),
        (Event("a\rb"), b"data: a\ndata: b\n\n"),
        (Event("a\r\n\r\nb"), b"data: a\ndata: \ndata: b\n\n"),
        (Event(" lead"), b"data:  lead\n\n"),
        (Event("x", event="tick"), b"event: tick\ndata: x\n\n"),
        (Event("x", id="7"), b"id: 7\ndata: x\n\n"),
        (Event("x", id=""), b"id: \ndata: x\n\n"),
        (Event("x", event="e", id="1-0"), b"id: 1-0\nevent: e\ndata: x\n\n"),
        (Event("x", retry=0), b"retry: 0\ndata: x\n\n"),
        (Event("x", retry=2500), b"retry: 2500\ndata: x\n\n"),
        (Event(comment="ping"), b": ping\n"),
        (Event(comment=""), b": \n"),
        (Event(comment="a\nb\r\nc"), b": a\n: b\n: c\n"),
        (Event("x", comment="note"), b": note\ndata: x\n\n"),
        (Event("d", comment="c", id="1", event="e", retry=5),
         b": c\nid: 1\nevent: e\nretry: 5\ndata: d\n\n"),
        (Event("caf\u00e9 \u2603"), "data: caf\u00e9 \u2603\n\n".encode()),
        (Event("\ufeffbom"), "data: \ufeffbom\n\n".encode()),
    ],
)  # fmt: skip
def test_encode_exact_bytes(event: Event, wire: bytes) -> None:
    assert event.encode() == wire
    assert not event.encode().startswith(b"\xef\xbb\xbf")


def test_encode_is_cached() -> None:
    event = Event("x" * 1000)
    assert event.encode() is event.encode()


@pytest.mark.parametrize("field", ["event", "id"])
@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\r\nb", "\n"])
def test_line_break_in_event_or_id_is_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        Event("x", **{field: value})


@pytest.mark.parametrize("field", ["id", "event"])
def test_nul_in_id_or_event_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must not contain a NUL"):
        Event("x", **{field: "a\0b"})


@pytest.mark.parametrize("retry", [-1, 1.5, 1.0, True, False, "100"])
def test_retry_must_be_non_negative_int(retry: object) -> None:
    with pytest.raises(ValueError, match="retry"):
        Event("x", retry=retry)  # type: ignore[arg-type]


def test_data_must_be_str() -> None:
    with pytest.raises(TypeError, match="publish"):
        Event({"a": 1})  # type: ignore[arg-type]


def test_comment_only_event_dispatches_nothing() -> None:
    assert parse(Event(comment="x\ny").encode() + Event("after").encode()) == [
        Event("after", id="")
    ]


def test_to_dict_is_what_eventsource_delivers() -> None:
    assert Event("a\r\nb", id="1-0").to_dict() == {
        "id": "1-0",
        "event": "message",
        "data": "a\nb",
    }


_names = st.text(st.characters(blacklist_characters="\r\n\0", codec="utf-8"))
_ids = st.text(st.characters(blacklist_characters="\r\n\0", codec="utf-8"))


@given(data=st.text(st.characters(codec="utf-8")), event=_names, id=_ids)
def test_parse_of_encode_round_trips(data: str, event: str, id: str) -> None:
    (got,) = parse(Event(data, event=event or None, id=id).encode())
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert got.data == expected
    assert got.event == (event or None)
    assert got.id == id


def test_injected_fields_stay_data() -> None:
    payload = "\n\nevent: admin\ndata: x"
    (got,) = parse(Event(payload).encode())
    assert got.data == payload
    assert got.event is None


def test_encode_chunk_frames_the_encoded_bytes_as_gunicorn_does() -> None:
    event = Event("é", id="1-0")
    assert event.encode() == "id: 1-0\ndata: é\n\n".encode()
    assert event.encode_chunk() == b"12\r\n" + event.encode() + b"\r\n"
    big = Event("x" * 300)
    assert big.encode_chunk().startswith(b"%X\r\n" % len(big.encode()))
    assert big.encode_chunk().startswith(b"134\r\n")
