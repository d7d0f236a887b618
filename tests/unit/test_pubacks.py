"""Reading PubAcks: every reply, errors included, becomes a result (nats-io/nats.py#985)."""

from __future__ import annotations

import json
from typing import Any

from nats.aio.msg import Msg

from relay.ports import Ack, Failure, Verdict
from relay.pubacks import read_puback


def reply(body: Any = None, headers: dict[str, str] | None = None) -> Msg:
    data = b"" if body is None else json.dumps(body).encode()
    return Msg(_client=None, subject="_INBOX.x.1", data=data, headers=headers)  # type: ignore[arg-type]


def test_an_ack_and_a_duplicate() -> None:
    assert read_puback(reply({"stream": "S", "seq": 7})) == Ack("S", 7, False)
    assert read_puback(reply({"stream": "S", "seq": 7, "duplicate": True})) == Ack("S", 7, True)


def test_a_full_stream_is_a_refusal_to_retry() -> None:
    error = {"code": 503, "err_code": 10077, "description": "maximum messages exceeded"}
    result = read_puback(reply({"error": error}))
    assert result == Failure(Verdict.REFUSED, "jetstream 503 10077: maximum messages exceeded")


def test_a_message_over_the_stream_limit_is_poison() -> None:
    error = {"code": 400, "err_code": 10054, "description": "message size exceeds maximum"}
    result = read_puback(reply({"error": error}))
    assert isinstance(result, Failure) and result.verdict is Verdict.POISON


def test_no_responders_and_garbage() -> None:
    no_responders = read_puback(reply(headers={"Status": "503"}))
    assert isinstance(no_responders, Failure) and no_responders.verdict is Verdict.NO_STREAM
    garbage = Msg(_client=None, subject="x", data=b"{not json")  # type: ignore[arg-type]
    for answer in (garbage, reply({"what": 1}), reply([1]), reply({"stream": "S", "seq": "7"})):
        result = read_puback(answer)
        assert isinstance(result, Failure) and result.verdict is Verdict.POISON, answer
        assert "reply is not a PubAck" in result.reason
