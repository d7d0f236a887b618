"""The consumer's NATS client parses message headers with a cheaper loop than nats-py's; it
must give exactly nats-py's result for any header block."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client

from outbox_client.client import OutboxNATSClient, _header_block

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
    ours = OutboxNATSClient._parse_header_lines(TYPICAL)
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
    assert OutboxNATSClient._parse_header_lines(raw) == Client._parse_header_lines(raw)


@given(st.binary(max_size=200))
def test_any_bytes_parse_as_nats_py_parses_them(raw: bytes) -> None:
    assert OutboxNATSClient._parse_header_lines(raw) == Client._parse_header_lines(raw)


# --- writing: the relay's publishes ------------------------------------------------------------


async def _sent(client: Client, headers: dict[str, object]) -> bytes | str:
    """What ``client`` writes for one publish with ``headers``, or the error it raises."""
    sent: list[bytes] = []

    async def send_command(cmd: bytes, priority: bool = False) -> None:
        sent.append(cmd)

    client._send_command = send_command  # type: ignore[method-assign]
    try:
        await client._send_publish("academic.x", "_INBOX.r.1", b"{}", 2, headers)  # type: ignore[arg-type]
    except Exception as exc:  # nats-py's own error for a bad header: ours must raise it too
        return f"{type(exc).__name__}: {exc}"
    assert client.stats["out_msgs"] == 1 and client.stats["out_bytes"] == 2
    (cmd,) = sent
    return cmd


RELAY_HEADERS = {
    "Vertector-Event-Type": "academic.course.updated",
    "Vertector-Schema-Version": "1",
    "Vertector-Source-Service": "schedule-service",
    "Vertector-Producer": "outbox-client",
    "Vertector-Correlation-Id": "req-\u00e9\u4e2d",
    "Vertector-Partition-Key": "CS101",
    "Nats-Msg-Id": "0194f1c2-7b1e-7c3a-9d2e-5f6a7b8c9d0e",
}


async def test_a_relay_publish_writes_the_bytes_nats_py_writes() -> None:
    ours = await _sent(OutboxNATSClient(), RELAY_HEADERS)
    assert ours == await _sent(Client(), RELAY_HEADERS)
    assert isinstance(ours, bytes) and ours.startswith(b"HPUB academic.x _INBOX.r.1 ")
    assert b"\r\nVertector-Partition-Key: CS101\r\n" in ours
    # Written by our join, not by nats-py's loop: the block is the one in the command.
    block = _header_block(RELAY_HEADERS)
    assert block is not None and block.startswith(b"NATS/1.0\r\n") and block in ours
    # The second time the names are known: the same bytes again.
    assert await _sent(OutboxNATSClient(), RELAY_HEADERS) == ours
    # Names too long to be remembered are checked each time, and written the same.
    long_names = RELAY_HEADERS | {"X-" + "a" * 2000: "v"}
    for _ in range(2):
        assert await _sent(OutboxNATSClient(), long_names) == await _sent(Client(), long_names)


header_names = st.text(max_size=10) | st.sampled_from(
    ["Nats-Msg-Id", " Padded ", "Bad Name", "Bad:Name", "", "caf\u00e9", "A\x1fB"]
)
header_values = (
    st.text(max_size=12)
    | st.sampled_from([" v ", "a\r\nb", "a\nb", "\u2028x\x1c", "caf\u00e9", ""])
    | st.integers()
    | st.none()
)


@given(st.dictionaries(header_names, header_values, max_size=6))
async def test_any_headers_are_written_as_nats_py_writes_them(headers: dict[str, object]) -> None:
    assert await _sent(OutboxNATSClient(), headers) == await _sent(Client(), headers)


def test_headers_nats_py_would_judge_or_rewrite_are_left_to_its_loop() -> None:
    for headers in ({" Padded ": "v"}, {"Bad Name": "v"}, {"": "v"}, {"A": "a\r\nb"},
                    {"A": 1}):  # fmt: skip
        assert _header_block(headers) is None, headers
    assert _header_block({"A": " v "}) == b"NATS/1.0\r\nA: v\r\n\r\n"  # stripped, as nats-py
