"""Credentials out of text: the one place that masks secrets inside URLs before they are printed.

A password in a URL's user info (``scheme://user:password@host``), a NATS token given as the
user (``nats://token@host``) and a ``password=`` query parameter are replaced by ``***``.

>>> redact("nats://relay:s3cret@nats:4222,nats://t0ken@other:4222")
'nats://relay:***@nats:4222,nats://***@other:4222'
>>> redact("postgresql://app:pw@db/app?sslmode=require&password=pw")
'postgresql://app:***@db/app?sslmode=require&password=***'
>>> redact("postgresql://app@db/app")
'postgresql://app@db/app'
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://user[:password]@ — user info ends at the last '@' before the host's '/', '?' or space.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^\s/?#,]*)@")
_QUERY_SECRET = re.compile(r"(?i)\b(password|passwd|token|secret)=[^&\s#]*")
# Schemes where a lone user name is a token (NATS accepts nats://TOKEN@host).
_TOKEN_SCHEMES = ("nats://", "tls://", "ws://", "wss://")


def _mask(match: re.Match[str]) -> str:
    scheme, info = match["scheme"], match["info"]
    user, colon, _ = info.partition(":")
    if colon:
        return f"{scheme}{user}:{MASK}@"
    if scheme.lower() in _TOKEN_SCHEMES:
        return f"{scheme}{MASK}@"
    return match.group(0)


def redact(text: str) -> str:
    """``text`` with every credential inside a URL masked (see the module docstring)."""
    if "://" not in text and "=" not in text:
        return text
    return _QUERY_SECRET.sub(lambda m: f"{m[1]}={MASK}", _USERINFO.sub(_mask, text))
