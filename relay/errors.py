"""Every exception the relay raises derives from :class:`RelayError`."""

from __future__ import annotations


class RelayError(Exception):
    """Root of the relay's exceptions."""


class ConfigError(RelayError):
    """Settings are missing or contradict each other; the message names the fix."""


class StoreError(RelayError):
    """PostgreSQL could not be reached or refused a statement."""


class PublishError(RelayError):
    """NATS could not be reached or its JetStream API did not answer. One message's failed
    publish is not raised: it is a verdict (``relay.classify``)."""


class MissingStreamError(ConfigError):
    """A stream the relay is configured with does not exist on the server."""


def cause(exc: BaseException, waited: float | None = None) -> str:
    """``Type: message`` of a driver error, saying how long we waited when it has no message
    (a timeout's text is empty)."""
    text = str(exc).strip()
    if not text and waited is not None:
        text = f"no answer within {waited:g} s"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
