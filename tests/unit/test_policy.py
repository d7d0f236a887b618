"""The message policy both ends apply (outbox_client.policy)."""

from __future__ import annotations

import doctest

import pytest

import outbox_client.policy as policy
from outbox_client.policy import MAX_HEADER_BLOCK, headers_problem, subject_problem

pytestmark = pytest.mark.unit


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(policy).failed == 0


@pytest.mark.parametrize(
    "subject",
    [
        "$JS.API.STREAM.PURGE.ACADEMIC_EVENTS",
        "$JS.API.STREAM.DELETE.NOTES_EVENTS",
        "$SYS.REQ.SERVER.PING",
        "$KV.registry.x",
        "$O.bucket.x",
        "_INBOX.abc",
        "_INBOX_relay.abc",
        "academic.course\x00created",
        "academic.cours\u00e9",
    ],
)
def test_reserved_and_odd_subjects_are_refused(subject: str) -> None:
    assert subject_problem(subject) is not None


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"x": 1}, "type int"),
        ({"x": None}, "type NoneType"),
        ([1, 2], "type list"),
        ("str", "type str"),
        ({"bad name": "v"}, "not a token"),
        ({"x": "a\r\nb"}, "CR, LF"),
        ({"Nats-Rollup": "all"}, "reserved"),
        ({"nats-expected-last-sequence": "3"}, "reserved"),
        ({"Nats-TTL": "1s"}, "reserved"),
        ({"Nats-Msg-Id": "forged"}, "reserved"),
        ({"Vertector-Replay": "forged"}, "replay_label"),
        ({"VERTECTOR-REPLAY": "forged"}, "never by a producer"),
        ({"k": "v" * MAX_HEADER_BLOCK}, "header block"),
    ],
)
def test_header_problems(headers: object, problem: str) -> None:
    assert problem in (headers_problem(headers) or "")


def test_good_headers_pass() -> None:
    assert headers_problem({"Vertector-Event-Type": "academic.course.created"}) is None
    assert headers_problem({"Nats-Msg-Id": "x"}, reserved_allowed=True) is None


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"x": 1}, "header 'x' has a value of type int: header values must be strings"),
        ({"x": None}, "header 'x' has a value of type NoneType: header values must be strings"),
        ({"x": "a\r\nb"}, "header 'x' contains CR, LF or NUL"),
        ({"y": "b\x00"}, "header 'y' contains CR, LF or NUL"),
        (
            {"x": "v" * MAX_HEADER_BLOCK},
            f"header block of {MAX_HEADER_BLOCK + 26} bytes (limit {MAX_HEADER_BLOCK})",
        ),
    ],
)
def test_names_seen_before_do_not_let_a_bad_value_through(
    values: dict[str, object], problem: str
) -> None:
    """The relay remembers header names it has accepted; the values are still checked, and the
    refusal reads as it did the first time."""
    assert headers_problem({"x": "fine", "y": "fine"}) is None  # these names are remembered
    assert (headers_problem({"x": "fine", "y": "fine"} | values) or "").startswith(problem)


def test_names_accepted_with_reserved_allowed_are_not_remembered_for_producers() -> None:
    assert headers_problem({"Nats-Msg-Id": "x", "a": "b"}, reserved_allowed=True) is None
    assert "reserved" in (headers_problem({"Nats-Msg-Id": "x", "a": "b"}) or "")
    # Many distinct name sets (hostile rows) keep the memory bounded.
    for i in range(10_000):
        assert headers_problem({f"h{i}": "v"}) is None
    assert len(policy._accepted_names) <= policy._REMEMBERED_NAME_SETS
