"""Reading ``pgoutput`` (protocol 1, ``messages 'true'``) as PostgreSQL's slot functions return
it: rows of ``(lsn, data)``, where ``data`` is one protocol message.

Only what WAL capture needs is read: Begin (commit time), logical decoding Message, Commit
(its end LSN: the position the slot may be advanced to once the transaction is settled).
Relation and row messages (a publication with tables) are skipped. A non-transactional
message is a transaction of its own.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from relay.errors import StoreError

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # PostgreSQL timestamps count from here
_BEGIN = struct.Struct(">qqI")  # final LSN, commit time (µs), xid
_COMMIT = struct.Struct(">bqqq")  # flags, commit LSN, end LSN, commit time
_MESSAGE_HEAD = struct.Struct(">bq")  # flags (1: transactional), LSN


@dataclass(slots=True)
class Transaction:
    """One decoded transaction: its messages (prefix, content) in commit order."""

    end_lsn: int
    committed_at: datetime
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    changes: int = 0  # rows of the slot function's output it took (begin and commit included)
    #: False for a non-transactional message, a "transaction" of its own: decoded at once,
    #: whether or not the transaction that wrote it commits.
    transactional: bool = True


def _time(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _message(data: bytes) -> tuple[bool, str, bytes]:
    flags, _lsn = _MESSAGE_HEAD.unpack_from(data, 1)
    at = 1 + _MESSAGE_HEAD.size
    end = data.index(b"\0", at)
    prefix = data[at:end].decode()
    (length,) = struct.unpack_from(">I", data, end + 1)
    content = data[end + 5 : end + 5 + length]
    return bool(flags & 1), prefix, content


def closes_transaction(data: bytes) -> bool:
    """Whether pgoutput message ``data`` ends a transaction: a commit, or a non-transactional
    message (a transaction of its own)."""
    kind = data[:1]
    return kind == b"C" or (kind == b"M" and len(data) > 1 and not data[1] & 1)


def ends_transaction(lsn: int, data: bytes) -> int | None:
    """The end LSN of the transaction that slot row ``(lsn, data)`` ends (a commit, or a
    non-transactional message: a transaction of its own); None for any other row."""
    kind = data[:1]
    try:
        if kind == b"C":
            return int(_COMMIT.unpack_from(data, 1)[2])
        if kind == b"M" and not _MESSAGE_HEAD.unpack_from(data, 1)[0] & 1:
            return lsn
    except struct.error:
        return None
    return None


def transactions(rows: Iterable[tuple[int, bytes]]) -> Iterator[Transaction]:
    """Complete transactions, in commit order. ``rows``: (lsn, data) as the slot returns them."""
    current: Transaction | None = None
    for lsn, data in rows:
        kind = data[:1]
        try:
            if kind == b"B":
                _, committed, _ = _BEGIN.unpack_from(data, 1)
                current = Transaction(end_lsn=0, committed_at=_time(committed), changes=1)
            elif kind == b"C":
                if current is None:
                    raise StoreError("pgoutput: a commit without its begin")
                _, _, end_lsn, _ = _COMMIT.unpack_from(data, 1)
                current.end_lsn = end_lsn
                current.changes += 1
                yield current
                current = None
            elif kind == b"M":
                transactional, prefix, content = _message(data)
                if current is not None and transactional:
                    current.messages.append((prefix, content))
                    current.changes += 1
                else:
                    lone = Transaction(
                        end_lsn=lsn, committed_at=datetime.now(UTC), changes=1,
                        transactional=False,
                    )  # fmt: skip
                    lone.messages.append((prefix, content))
                    yield lone
            elif current is not None:
                current.changes += 1  # relation, insert, ...: not ours
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise StoreError(f"pgoutput: unreadable {kind!r} message at {lsn}: {exc}") from exc
