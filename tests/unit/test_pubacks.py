"""Reading PubAcks: every answer, errors included, becomes a typed reply (nats-io/nats.py#985),
and one module (relay.classify) says what each means for the event."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats.errors
import pytest
from nats.aio.msg import Msg

from relay.classify import POISON_API_CODES, judge, judge_no_responders
from relay.ports import Failure, PublishResult, Stored, Verdict
from relay.pubacks import (
    ApiError,
    ApiSilent,
    NoReply,
    NoStream,
    PermissionDenied,
    PubAcks,
    StreamFound,
    read_reply,
)


def reply(body: Any = None, headers: dict[str, str] | None = None) -> Msg:
    data = b"" if body is None else json.dumps(body).encode()
    return Msg(_client=None, subject="_INBOX.x.1", data=data, headers=headers)  # type: ignore[arg-type]


def read_puback(msg: Msg) -> PublishResult:
    return judge(read_reply(msg))


def test_an_ack_and_a_duplicate() -> None:
    assert read_puback(reply({"stream": "S", "seq": 7})) == Stored("S", 7, False)
    assert read_puback(reply({"stream": "S", "seq": 7, "duplicate": True})) == Stored("S", 7, True)


def test_a_full_stream_is_a_refusal_to_retry() -> None:
    error = {"code": 503, "err_code": 10077, "description": "maximum messages exceeded"}
    result = read_puback(reply({"error": error}))
    assert result == Failure(Verdict.REFUSED, "jetstream 503 10077: maximum messages exceeded")


def test_a_message_over_the_stream_limit_is_poison() -> None:
    error = {"code": 400, "err_code": 10054, "description": "message size exceeds maximum"}
    result = read_puback(reply({"error": error}))
    assert isinstance(result, Failure) and result.verdict is Verdict.POISON


@pytest.mark.parametrize(
    "err_code",
    # header too big, rollup not permitted, wrong last sequence, TTL disabled, over the
    # stream's max message size, expected stream mismatch, wrong last msg id, sealed stream
    [10097, 10111, 10071, 10166, 10054, 10060, 10070, 10109],
)
def test_refusals_that_can_never_succeed_are_poison(err_code: int) -> None:
    result = judge(ApiError(400, err_code, "x"))
    assert result == Failure(Verdict.POISON, f"jetstream {err_code}: {POISON_API_CODES[err_code]}")


@pytest.mark.parametrize(
    "err_code",
    # full stream, cluster unavailable, insufficient resources, stream offline, duplicate in
    # process, too many requests, expected-last-seq-per-subject not ready, unknown
    [10077, 10008, 10023, 10118, 10158, 10167, 10163, 99999],
)
def test_refusals_that_may_clear_are_retried_for_their_key(err_code: int) -> None:
    result = judge(ApiError(503, err_code, "x"))
    assert isinstance(result, Failure) and result.verdict is Verdict.REFUSED


def test_no_responders_no_reply_and_garbage() -> None:
    no_responders = read_puback(reply(headers={"Status": "503"}))
    assert isinstance(no_responders, Failure) and no_responders.verdict is Verdict.NO_RESPONDERS
    assert judge(NoReply()) == Failure(Verdict.TRANSIENT, "timeout waiting for PubAck")
    garbage = Msg(_client=None, subject="x", data=b"{not json")  # type: ignore[arg-type]
    nested = Msg(_client=None, subject="x", data=b"[" * 5000)  # type: ignore[arg-type]
    answers = [garbage, nested, reply({"what": 1}), reply([1]), reply({"stream": "S", "seq": "7"})]
    for answer in [*answers, reply(headers={"Status": "408"})]:
        result = read_puback(answer)
        assert isinstance(result, Failure) and result.verdict is Verdict.POISON, answer
        assert "reply is not a PubAck" in result.reason


def test_no_responders_is_poison_only_once_the_api_confirms_no_stream_captures_it() -> None:
    """An election answers 'no responders' like a missing stream: the API's answer settles it."""
    electing = judge_no_responders(StreamFound("ACADEMIC_EVENTS"), 20)
    assert electing == Failure(
        Verdict.NO_RESPONDERS, "stream ACADEMIC_EVENTS has no leader: election or lost quorum"
    )
    silent = judge_no_responders(ApiSilent("TimeoutError"), 20)
    assert silent == Failure(
        Verdict.TRANSIENT, "no responders; JetStream API did not answer: TimeoutError"
    )
    gone = judge_no_responders(NoStream(), 20)
    assert gone.verdict is Verdict.POISON and gone.reason.endswith("gave up after 20 attempts")


async def test_a_permission_violation_settles_the_oldest_publish_to_its_subject() -> None:
    acks = PubAcks()
    _, first = acks.expect("Payroll.Salaries")
    _, second = acks.expect("Payroll.Salaries")
    _, other = acks.expect("academic.course.created")
    # nats-py hands error_cb the server's -ERR text, lower-cased.
    error = nats.errors.Error('nats: permissions violation for publish to "payroll.salaries"')
    assert acks.on_error(error)
    assert first.done() and first.result() == PermissionDenied("payroll.salaries")
    assert not second.done() and not other.done()
    assert not acks.on_error(nats.errors.Error("nats: some other protocol error"))
    denied = judge(first.result())
    assert isinstance(denied, Failure) and denied.verdict is Verdict.POISON
    assert "permissions violation" in denied.reason
    for future in (second, other):
        future.cancel()
    await asyncio.sleep(0)
    assert not acks.on_error(error), "a cancelled publish is not settled again"


async def test_settled_publishes_are_forgotten() -> None:
    """A reply resolves its publish and forgets it; publishes cancelled after the timeout are
    forgotten at a later prune, so a relay timing out for hours holds no more than a bounded
    number of them."""
    acks = PubAcks()
    inbox, future = acks.expect("academic.course.created")
    msg = Msg(_client=None, subject=inbox, data=json.dumps({"stream": "S", "seq": 1}).encode())  # type: ignore[arg-type]
    await acks._on_reply(msg)
    assert future.result() == Stored("S", 1, False)
    assert not acks._waiting
    for _ in range(50_000):
        acks.expect("academic.course.created")[1].cancel()
    assert len(acks._waiting) <= 2 * 4096
    _, live = acks.expect("payroll.salaries")
    for _ in range(20_000):
        acks.expect("academic.course.created")[1].cancel()
    error = nats.errors.Error('nats: permissions violation for publish to "payroll.salaries"')
    assert acks.on_error(error), "a waiting publish survives the prunes"
    assert live.result() == PermissionDenied("payroll.salaries")
