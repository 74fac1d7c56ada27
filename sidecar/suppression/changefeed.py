"""Reading the change feed safely when ids commit out of order.

On PostgreSQL a sequence hands out ids at INSERT time, so a transaction that started
earlier may commit a smaller id after a larger one was already read. The cursor keeps
the highest id below which everything has been applied (``low``), remembers which
larger ids it has applied, and re-reads from ``low`` until the gaps fill, or gives a
gap up after ``gap_timeout`` seconds (a rolled-back transaction leaves a gap forever).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

MAX_TRACKED_GAPS = 100_000


class ChangeCursor:
    def __init__(self, start: int = 0, gap_timeout: float = 10.0) -> None:
        self.low = start
        self.gap_timeout = gap_timeout
        self.applied: set[int] = set()
        self.gaps: dict[int, float] = {}

    @property
    def high(self) -> int:
        return max(self.applied, default=self.low)

    def accept(self, rows: Iterable[Sequence[Any]], now: float) -> list[Sequence[Any]]:
        """The rows (first column: id) not applied before, in id order; then advance ``low``."""
        fresh = []
        for r in rows:
            cid = r[0]
            if cid <= self.low or cid in self.applied:
                continue
            self.applied.add(cid)
            fresh.append(r)
        top = self.high
        if top - self.low - len(self.applied) > MAX_TRACKED_GAPS:
            # Far too many holes to track (a huge rolled-back import?): give them up at once.
            self.gaps.clear()
            self.low = top
            self.applied.clear()
            return fresh
        for i in range(self.low + 1, top):
            if i not in self.applied and i not in self.gaps:
                self.gaps[i] = now
        while True:
            nxt = self.low + 1
            if nxt in self.applied:
                self.applied.discard(nxt)
            elif nxt in self.gaps and now - self.gaps[nxt] >= self.gap_timeout:
                pass
            else:
                break
            self.gaps.pop(nxt, None)
            self.low = nxt
        return fresh
