"""Bounded log lines about the events of one batch: a count, a few event ids, the reasons.

A batch of 1,000 hostile rows must not write 1,000 warnings, yet each failure must be seen
when it happens. So the loop collects what it wants to report while it publishes a batch and
writes one line per kind at the end: how many, the first few events, and the distinct reasons
with their counts (also bounded). Every row still carries its own reason in the outbox table
(``last_error``); the log line says where to look.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from relay.log import log_event
from relay.ports import OutboxRow

#: Events named in one line; the rest are counted.
SHOWN_EVENTS = 5
#: Distinct reasons named in one line (most frequent first); the rest are counted.
SHOWN_REASONS = 5


@dataclass
class BatchReport:
    """Events of one batch that share a log line: ``add`` each, then ``log`` once."""

    count: int = 0
    examples: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, row: OutboxRow, reason: str) -> None:
        self.count += 1
        if len(self.examples) < SHOWN_EVENTS:
            self.examples.append(f"{row.event_id} {row.subject[:200]!r}")
        self.reasons[reason[:300]] += 1

    def log(self, logger: logging.Logger, event: str, level: int) -> None:
        """One line for the whole batch (nothing when nothing was added)."""
        if not self.count:
            return
        common = self.reasons.most_common(SHOWN_REASONS)
        other = self.count - sum(n for _, n in common)
        reasons = "; ".join(f"{reason} (x{n})" for reason, n in common)
        if other:
            reasons += f"; {other} more with other reasons"
        log_event(
            logger, event, level=level, count=self.count,
            events=", ".join(self.examples) + (" ..." if self.count > len(self.examples) else ""),
            reasons=reasons,
        )  # fmt: skip
