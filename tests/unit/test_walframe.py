"""The WAL frame (outbox_client/walframe.py) and the pgoutput reader (relay/pgoutput.py)."""

from __future__ import annotations

import json
import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outbox_client.capture import capture_mode, set_capture
from outbox_client.errors import OutboxError
from outbox_client.walframe import (
    WAL_PREFIX,
    FrameError,
    _decode_checked,
    decode,
    encode,
    headers_json,
)
from relay.errors import StoreError
from relay.pgoutput import transactions


def test_a_frame_round_trips_every_field() -> None:
    event_id = uuid.uuid4()
    headers = {"Vertector-Event-Type": "academic.course.updated", "k": "välue"}
    frame = encode(event_id, "academic.course.updated", "academic.course.updated", "CS101",
                   b'{"x":1}\x00\xff', headers)  # fmt: skip
    got = decode(frame)
    assert (got.event_id, got.event_type, got.subject, got.partition_key) == (
        event_id, "academic.course.updated", "academic.course.updated", "CS101",
    )  # fmt: skip
    assert got.headers == headers and got.payload == b'{"x":1}\x00\xff'


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Vertector-Event-Type": "academic.course.updated", "k": "välue", "q": 'a"b\\c'},
        {"t": "tab\there", "e": "\u2028\U0001f600", "\u00e9": "x"},
        {"n": 1, "f": 1.5, "b": True, "z": None},  # not what a producer sends: json.dumps's way
        {1: "int key", None: "none key"},
    ],
)
def test_the_headers_are_the_bytes_json_dumps_writes(headers: dict[str, str]) -> None:
    """The frame's header block is compact ``json.dumps`` output, byte for byte, whichever way
    encode() builds it."""
    assert headers_json(headers) == json.dumps(headers, separators=(",", ":"))


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"\x01abc", "shorter than"),
        (b"\x02" + bytes(16) + struct.pack(">IIII", 0, 0, 0, 2) + b"{}", "version 2"),
        (b"\x01" + bytes(16) + struct.pack(">IIII", 0, 0, 0, 99) + b"{}", "truncated"),
        (b"\x01" + bytes(16) + struct.pack(">IIII", 1, 0, 0, 2) + b"\xff{}", "UTF-8"),
        (b"\x01" + bytes(16) + struct.pack(">IIII", 0, 0, 0, 2) + b"{x", "not JSON"),
    ],
)
def test_a_bad_frame_is_a_frame_error_naming_why(frame: bytes, why: str) -> None:
    with pytest.raises(FrameError, match=why):
        decode(frame)


def _frame(key: str = "k", event_type: str = "t", headers: object = None) -> bytes:
    return encode(uuid.uuid4(), event_type, "academic.x", key, b"{}", headers or {})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (_frame(key="k\x00"), "partition key holds a NUL"),
        (_frame(event_type="\x00"), "event type holds a NUL"),
        (_frame(headers={"x": "a\x00"}), "headers hold a NUL"),
        (_frame(headers={"x\x00": "a"}), "headers hold a NUL"),
        (_frame(headers={"x": [[["\x00"]]]}), "headers hold a NUL"),
    ],
)
def test_a_frame_with_nul_in_its_text_is_a_frame_error(frame: bytes, why: str) -> None:
    """PostgreSQL text cannot hold NUL: such an event could not even be quarantined as it is
    (the relay then quarantines the frame's raw bytes with this reason)."""
    with pytest.raises(FrameError, match=why):
        decode(frame)


def test_a_header_spelling_out_backslash_u0000_is_no_nul() -> None:
    assert decode(_frame(headers={"x": "\\u0000"})).headers == {"x": "\\u0000"}


def _begin(xid: int = 7) -> bytes:
    return b"B" + struct.pack(">qqI", 100, 0, xid)


def _message(content: bytes, transactional: bool = True, prefix: str = WAL_PREFIX) -> bytes:
    return (b"M" + struct.pack(">bq", int(transactional), 120) + prefix.encode() + b"\0"
            + struct.pack(">I", len(content)) + content)  # fmt: skip


def _commit(end_lsn: int) -> bytes:
    return b"C" + struct.pack(">bqqq", 0, 150, end_lsn, 0)


def test_pgoutput_transactions_in_order_with_their_messages_and_end() -> None:
    rows = [
        (100, _begin()), (120, _message(b"a")), (130, _message(b"b")), (200, _commit(200)),
        (210, _message(b"hb", transactional=False, prefix="other")),
        (220, _begin()), (230, b"R" + b"relation"), (300, _commit(300)),
    ]  # fmt: skip
    got = list(transactions(rows))
    assert [(t.end_lsn, t.messages, t.changes) for t in got] == [
        (200, [(WAL_PREFIX, b"a"), (WAL_PREFIX, b"b")], 4),
        (210, [("other", b"hb")], 1),
        (300, [], 3),
    ]
    assert [t.transactional for t in got] == [True, False, True]


def test_pgoutput_garbage_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="unreadable"):
        list(transactions([(1, b"B\x00")]))
    with pytest.raises(StoreError, match="commit without"):
        list(transactions([(1, _commit(5))]))


def test_capture_mode_from_code_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_CAPTURE", "wal")
    set_capture(None)
    assert capture_mode() == "wal"
    set_capture("table")
    assert capture_mode() == "table"
    monkeypatch.setenv("OUTBOX_CAPTURE", "bogus")
    set_capture(None)
    with pytest.raises(OutboxError, match="OUTBOX_CAPTURE must be 'table' or 'wal'"):
        capture_mode()
    monkeypatch.delenv("OUTBOX_CAPTURE")
    set_capture(None)
    assert capture_mode() == "table"
    with pytest.raises(OutboxError, match="got 'kafka'"):
        set_capture("kafka")  # type: ignore[arg-type]


_text = st.text(st.characters(codec="utf-8"), max_size=30)


@given(
    st.uuids(), _text, _text, _text, st.dictionaries(_text, _text, max_size=4), st.binary(),
    st.integers(0, 200), st.binary(max_size=3),
)  # fmt: skip
def test_the_one_decode_reads_what_the_field_walk_reads(
    event_id: uuid.UUID, kind: str, to: str, key: str, headers: dict[str, str], payload: bytes,
    cut: int, garbage: bytes,
) -> None:  # fmt: skip
    """decode()'s fast path (one decode, cut by the lengths) and the field-by-field walk give
    the same frame, or the same error, for every frame encode writes, cut short or followed by
    stray bytes; and the event id is a uuid.UUID equal to the one written."""
    frame = encode(event_id, kind, to, key, payload, headers)
    for candidate in (frame, frame[:cut], frame[:cut] + garbage, garbage + frame[cut:]):
        try:
            expected: object = _decode_checked(candidate)
        except FrameError as exc:
            expected = str(exc)
        try:
            got: object = decode(candidate)
        except FrameError as exc:
            got = str(exc)
        assert got == expected
    if "\0" in kind + to + key + "".join(headers) + "".join(headers.values()):
        return  # a FrameError, the same both ways (above)
    got_frame = decode(frame)
    assert isinstance(got_frame.event_id, uuid.UUID) and got_frame.event_id == event_id
    assert str(got_frame.event_id) == str(event_id) and hash(got_frame.event_id) == hash(event_id)
    assert (got_frame.partition_key, got_frame.headers, got_frame.payload) == (
        key,
        headers,
        payload,
    )
