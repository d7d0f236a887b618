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
