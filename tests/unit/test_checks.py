from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import nats.errors
import pytest

from outbox_client.policy import header_block_size as header_size
from outbox_client.policy import subject_problem
from outbox_client.streams import DEFAULT_STREAMS
from relay.checks import Admission, header_lines_size, outgoing_headers, oversize
from relay.classify import classify, refused
from relay.ports import Failure, OutboxRow, Verdict
from relay.queries import all_queries, query


def row(
    subject: str = "academic.course.created", payload: bytes = b"{}", **headers: str
) -> OutboxRow:
    return OutboxRow(1, uuid.uuid4(), subject, "k", 0, payload, headers, 0, datetime.now(UTC))


def test_header_size_matches_what_nats_py_writes() -> None:
    from nats.aio.client import _CRLF_, NATS_HDR_LINE

    headers = {"Nats-Msg-Id": str(uuid.uuid4()), "Vertector-Event-Type": "academic.x.y", "ü": "é"}
    block = bytearray(NATS_HDR_LINE + _CRLF_)
    for key, value in headers.items():
        block += key.encode() + b": " + value.encode() + _CRLF_
    block += _CRLF_
    assert header_size(headers) == len(block)


@pytest.mark.parametrize(
    ("subject", "problem"),
    [
        ("academic.course.created", None),
        ("", "empty"),
        ("academic.*.created", "wildcard"),
        ("academic.>", "wildcard"),
        ("academic course", "whitespace"),
        ("academic..course", "empty token"),
        (".academic", "empty token"),
        ("a" * 5000, "5000 characters"),
    ],
)
def test_subject_problems(subject: str, problem: str | None) -> None:
    found = subject_problem(subject)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_msg_id_is_always_the_event_id() -> None:
    r = row(**{"Vertector-Correlation-Id": "c"})
    assert outgoing_headers(r)["Nats-Msg-Id"] == str(r.event_id)


def test_a_forged_msg_id_is_refused_not_overwritten() -> None:
    reason = Admission(DEFAULT_STREAMS).refusal(row(**{"Nats-Msg-Id": "forged"}))
    assert reason is not None and "reserved" in reason
    assert refused(reason) == Failure(Verdict.POISON, reason)


def test_oversize_counts_the_headers() -> None:
    r = row(payload=b"x" * 1000)
    headers = outgoing_headers(r)
    assert oversize(r, headers, 1000 + header_size(headers)) is None
    reason = oversize(r, headers, 1000 + header_size(headers) - 1)
    assert reason is not None and "over the server's max_payload" in reason


def test_oversize_reserves_room_for_headers_still_to_come() -> None:
    """The relay sizes a message with room for the batch headers it may get: the same figure
    as the block with them in it."""
    r = row(payload=b"x" * 1000)
    headers = outgoing_headers(r)
    more = {"Nats-Batch-Id": "x" * 32, "Nats-Batch-Sequence": "1000", "Nats-Batch-Commit": "1"}
    assert header_size(headers) + header_lines_size(more) == header_size({**headers, **more})
    limit = 1000 + header_size({**headers, **more})
    assert oversize(r, headers, limit, reserve=header_lines_size(more)) is None
    reason = oversize(r, headers, limit - 1, reserve=header_lines_size(more))
    assert reason == (
        f"message of {limit} bytes (payload 1000 + headers) is over the server's max_payload "
        f"of {limit - 1}"
    )


def test_the_outgoing_header_block_is_held_to_jetstreams_limit() -> None:
    # Stored headers just under the limit; the relay's Nats-Msg-Id takes them over it.
    r = row(**{"Vertector-Padding": "x" * (65_535 - 12 - 4 - len("Vertector-Padding"))})
    assert Admission(DEFAULT_STREAMS).refusal(r) is None
    reason = oversize(r, outgoing_headers(r), 10_000_000)
    assert reason is not None and "header block of" in reason


def test_header_values_with_line_breaks_are_poison() -> None:
    r = row(**{"Vertector-Correlation-Id": "a\r\nInjected: yes"})
    reason = Admission(DEFAULT_STREAMS).refusal(r)
    assert reason is not None and "invalid headers" in reason


@pytest.mark.parametrize(
    ("exc", "verdict"),
    [
        (nats.errors.TimeoutError(), Verdict.TRANSIENT),
        (TimeoutError(), Verdict.TRANSIENT),
        (nats.errors.ConnectionClosedError(), Verdict.TRANSIENT),
        (nats.errors.OutboundBufferLimitError(), Verdict.TRANSIENT),
        (nats.errors.BadSubjectError(), Verdict.POISON),
        (nats.errors.BadHeaderError("x y"), Verdict.POISON),
        (nats.errors.MaxPayloadError(), Verdict.POISON),
        (RuntimeError("surprise"), Verdict.TRANSIENT),
    ],
)
def test_classify(exc: BaseException, verdict: Verdict) -> None:
    assert classify(exc).verdict is verdict


def test_every_query_name_used_by_the_code_exists() -> None:
    root = Path(__file__).resolve().parents[2] / "relay"
    source = "\n".join(path.read_text() for path in root.rglob("*.py"))
    used = set(re.findall(r'_call\(\s*"\w+",\s*"(\w+)"', source))
    used |= set(re.findall(r'\bquery\("(\w+)"\)', source))
    assert used, "the pattern no longer finds the names: fix this test"
    assert used <= set(all_queries()), used - set(all_queries())
    with pytest.raises(KeyError, match="no '-- nope --' block"):
        query("nope")
