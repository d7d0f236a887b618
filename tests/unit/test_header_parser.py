"""The consumer's NATS client parses message headers with a cheaper loop than nats-py's; it
must give exactly nats-py's result for any header block."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client

from outbox_client.client import _Client

TYPICAL = (
    b"Nats-Msg-Id: 0194f1c2-7b1e-7c3a-9d2e-5f6a7b8c9d0e\r\n"
    b"Vertector-Partition-Key: CS101\r\nVertector-Event-Type: academic.course.updated\r\n"
    b"traceparent:00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
    b"Vertector-Source-Service:\tschedule-service\r\n"
    + "Vertector-Correlation-Id: req-\u00e9\u4e2d\r\n".encode()
    + b"Bad Name: skipped\r\nBad\x1fName: skipped\r\nNo colon here\r\n\xff\xfe: skipped\r\n"
    + b"Value: caf\xc3\r\n\r\n"
)


def test_typical_and_malformed_headers_parse_as_nats_py_parses_them() -> None:
    ours = _Client._parse_header_lines(TYPICAL)
    assert ours == Client._parse_header_lines(TYPICAL)
    assert ours["Vertector-Partition-Key"] == "CS101"
    assert ours["Vertector-Correlation-Id"] == "req-\u00e9\u4e2d"
    assert not any(" " in key or "\x1f" in key for key in ours)


lines = st.lists(
    st.tuples(
        st.binary(max_size=12) | st.sampled_from([b"A B", b"A\x1cB", b"\xc3\xa9", b" Key "]),
        st.sampled_from([b":", b": ", b":\t", b"", b"::"]),
        st.binary(max_size=12) | st.sampled_from([b"\xff", b"\xe2\x82", b" v "]),
    ),
    max_size=8,
)


@given(lines)
def test_any_header_block_parses_as_nats_py_parses_it(
    parts: list[tuple[bytes, bytes, bytes]],
) -> None:
    raw = b"\r\n".join(name + sep + value for name, sep, value in parts) + b"\r\n\r\n"
    assert _Client._parse_header_lines(raw) == Client._parse_header_lines(raw)


@given(st.binary(max_size=200))
def test_any_bytes_parse_as_nats_py_parses_them(raw: bytes) -> None:
    assert _Client._parse_header_lines(raw) == Client._parse_header_lines(raw)
