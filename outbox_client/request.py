"""Typed request/reply over NATS (the product description's roadmap item).

>>> reply = await request(client, "schedule.course.get", GetCourse(code="CS101"),
...                       CourseInfo, timeout=2)  # doctest: +SKIP
>>> sub = await serve(client, "schedule.course.get", GetCourse, answer)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ValidationError

from outbox_client.client import NATSClient
from outbox_client.errors import OutboxError

logger = logging.getLogger("outbox_client.request")

Req = TypeVar("Req", bound=BaseModel)
Resp = TypeVar("Resp", bound=BaseModel)

ERROR_HEADER = "Vertector-Error"


class RequestError(OutboxError):
    """Root of request/reply failures."""


class NoResponderError(RequestError):
    """Nobody listens on the subject."""


class RequestTimeoutError(RequestError):
    """A responder exists but did not answer in time."""


class RemoteError(RequestError):
    """The responder answered with an error."""


async def request(
    client: NATSClient,
    subject: str,
    payload: BaseModel,
    response_type: type[Resp],
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - the NATS request timeout, passed through
) -> Resp:
    """Send ``payload`` and parse the answer as ``response_type``."""
    try:
        msg = await client.nc.request(subject, payload.model_dump_json().encode(), timeout=timeout)
    except nats.errors.NoRespondersError as exc:
        raise NoResponderError(f"no responder on {subject!r}: is its service running?") from exc
    except nats.errors.TimeoutError as exc:
        raise RequestTimeoutError(f"no answer on {subject!r} within {timeout} s") from exc
    if msg.headers and ERROR_HEADER in msg.headers:
        raise RemoteError(f"{subject}: {msg.headers[ERROR_HEADER]}")
    try:
        return response_type.model_validate_json(msg.data)
    except ValidationError as exc:
        raise RemoteError(f"{subject}: answer is not a {response_type.__name__}: {exc}") from exc


async def serve(
    client: NATSClient,
    subject: str,
    request_type: type[Req],
    handler: Callable[[Req], Awaitable[BaseModel]],
    *,
    queue: str = "",
) -> Subscription:
    """Answer requests on ``subject`` with ``handler``; a queue group shares the load.

    Invalid requests and handler exceptions are answered with an error header (the requester
    raises :class:`RemoteError`), never left to time out.
    """

    async def on_msg(msg: Msg) -> None:
        headers: dict[str, str] | None = None
        body = b""
        try:
            answer = await handler(request_type.model_validate_json(msg.data))
            body = answer.model_dump_json().encode()
        except ValidationError as exc:
            headers = {ERROR_HEADER: f"invalid {request_type.__name__}: {exc.error_count()} errors"}
        except Exception as exc:  # reported to the requester, not swallowed
            logger.exception("request handler failed on %s", subject)
            headers = {ERROR_HEADER: f"{type(exc).__name__}: {exc}"[:500].replace("\n", " ")}
        if headers is None:
            await msg.respond(body)
        else:
            await client.nc.publish(msg.reply, body, headers=headers)

    subscription: Subscription = await client.nc.subscribe(subject, queue=queue, cb=on_msg)
    return subscription
