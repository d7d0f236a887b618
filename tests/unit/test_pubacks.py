"""Reading PubAcks: every answer, errors included, becomes a typed reply (nats-io/nats.py#985),
and one module (relay.classify) says what each means for the event."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats.errors
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.classify import POISON_API_CODES, judge, judge_no_responders
from relay.ports import Failure, PublishResult, Stored, Verdict
from relay.pubacks import (
    _PLAIN_PUBACK,
    AckGroup,
    ApiError,
    ApiSilent,
    NoReply,
    NoStream,
    PermissionDenied,
    PubAcks,
    StreamFound,
    _read_json_reply,
    read_reply,
)

Answer = tuple[bytes, dict[str, str] | None]


def reply(body: Any = None, headers: dict[str, str] | None = None) -> Answer:
    return (b"" if body is None else json.dumps(body).encode(), headers)


def read_puback(answer: Answer) -> PublishResult:
    return judge(read_reply(*answer))


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
    garbage: Answer = (b"{not json", None)
    nested: Answer = (b"[" * 5000, None)
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
    group = AckGroup(3)
    acks.expect(group, 0, "Payroll.Salaries")
    acks.expect(group, 1, "Payroll.Salaries")
    acks.expect(group, 2, "academic.course.created")
    # nats-py hands error_cb the server's -ERR text, lower-cased.
    error = nats.errors.Error('nats: permissions violation for publish to "payroll.salaries"')
    assert acks.on_error(error)
    assert group.replies == [PermissionDenied("payroll.salaries"), None, None]
    assert not acks.on_error(nats.errors.Error("nats: some other protocol error"))
    denied = judge(group.replies[0])  # type: ignore[arg-type]
    assert isinstance(denied, Failure) and denied.verdict is Verdict.POISON
    assert "permissions violation" in denied.reason
    await group.wait(0.01)  # the others time out: the group is closed
    assert not acks.on_error(error), "a publish judged a timeout is not settled again"
    assert group.replies[1:] == [None, None]


def _answer(acks: PubAcks, inbox: str, body: object) -> None:
    acks._on_reply(inbox.encode(), json.dumps(body).encode(), None)


async def test_a_group_waits_for_its_replies_and_then_takes_no_more() -> None:
    acks = PubAcks()
    acks._prefix, acks._skip = "_INBOX.x", len("_INBOX.x.")
    group = AckGroup(3)
    first = acks.expect(group, 0, "academic.course.created")
    acks.expect(group, 1, "academic.course.created")  # never answered
    third = acks.expect(group, 2, "academic.course.created")
    _answer(acks, third, {"stream": "S", "seq": 2})
    _answer(acks, first, {"stream": "S", "seq": 1})
    acks._on_reply(b"_INBOX.x.not-a-token", b"{}", None)  # someone else's: ignored
    await group.wait(0.05)
    assert group.replies == [Stored("S", 1, False), None, Stored("S", 2, False)]
    late = AckGroup(1)
    inbox = acks.expect(late, 0, "academic.course.created")
    acks.cancel(inbox)  # the publish was never sent: nothing to wait for
    await asyncio.wait_for(late.wait(60), 5)
    answered = AckGroup(2)
    for n in range(2):
        _answer(acks, acks.expect(answered, n, "a.b"), {"stream": "S", "seq": 3 + n})
    await asyncio.wait_for(answered.wait(60), 5)  # all in: no waiting out the time
    assert answered.replies == [Stored("S", 3, False), Stored("S", 4, False)]


async def test_settled_publishes_are_forgotten() -> None:
    """A reply resolves its publish and forgets it; publishes of groups closed after the
    timeout are forgotten at a later prune, so a relay timing out for hours holds no more
    than a bounded number of them."""
    acks = PubAcks()
    acks._prefix, acks._skip = "_INBOX.x", len("_INBOX.x.")
    group = AckGroup(1)
    _answer(acks, acks.expect(group, 0, "academic.course.created"), {"stream": "S", "seq": 1})
    assert group.replies == [Stored("S", 1, False)]
    assert not acks._waiting

    async def timed_out(count: int) -> None:
        for _ in range(count):
            gone = AckGroup(1)
            acks.expect(gone, 0, "academic.course.created")
            gone.closed = True  # what wait() leaves when its time is up

    await timed_out(50_000)
    assert len(acks._waiting) <= 2 * 4096
    live = AckGroup(1)
    acks.expect(live, 0, "payroll.salaries")
    await timed_out(20_000)
    error = nats.errors.Error('nats: permissions violation for publish to "payroll.salaries"')
    assert acks.on_error(error), "a waiting publish survives the prunes"
    assert live.replies == [PermissionDenied("payroll.salaries")]


_SPACE = st.sampled_from(["", " ", "\t", "\n", "\r", "\f", "  "])


@given(
    st.text(st.characters(codec="utf-8"), min_size=0, max_size=8) | st.sampled_from(["S", "ACADEMIC_EVENTS"]),
    st.sampled_from(["0", "1", "01", "42", "-1", "1.5", "9" * 19, "9" * 20, "true"]),
    st.sampled_from(["", ',"duplicate": true', ',"duplicate":true', ',"duplicate": false', ',"domain":"d"']),
    _SPACE, _SPACE, _SPACE, st.binary(max_size=2), st.booleans(),
)  # fmt: skip
def test_the_plain_puback_reader_says_what_the_json_reader_says(
    stream: str, seq: str, tail: str, space: str, other: str, end: str, stray: bytes,
    escaped: bool,
) -> None:  # fmt: skip
    """PubAcks as nats-server writes them skip the JSON parser; every reply, near or far from
    that shape, is read the same as json.loads reads it."""
    name = json.dumps(stream) if escaped else f'"{stream}"'
    data = f'{{"stream":{space}{name},{other}"seq":{seq}{tail}{end}}}'.encode()
    for candidate in (data, data + stray, stray + data, data.replace(b",", b"", 1)):
        assert read_reply(candidate, None) == _read_json_reply(candidate, None), candidate
    assert read_reply(data, {"Status": "503"}) == _read_json_reply(data, {"Status": "503"})


def test_the_pubacks_nats_server_writes() -> None:
    """As 2.9 and 2.15 answer (read off both servers): the first store, a duplicate."""
    for data, expected in [
        (b'{"stream":"ACKPROBE", "seq":1}', Stored("ACKPROBE", 1, False)),
        (b'{"stream":"ACKPROBE","seq":1}', Stored("ACKPROBE", 1, False)),
        (b'{"stream":"ACKPROBE", "seq":1,"duplicate": true}', Stored("ACKPROBE", 1, True)),
        (b'{"stream":"ACKPROBE","seq":1,"duplicate": true}', Stored("ACKPROBE", 1, True)),
    ]:
        assert read_reply(data, None) == expected == _read_json_reply(data, None)
        assert _PLAIN_PUBACK.fullmatch(data), "read without the JSON parser"
