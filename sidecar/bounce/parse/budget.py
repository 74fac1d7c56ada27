"""Size and time budgets of the bounce parser: one hostile message must not hold the service.

Every stage is bounded by size (bytes read, parts, nesting depth, header bytes, bytes decoded
per part, fields, recipients, bytes scanned, line length); the whole parse by a deadline
checked between stages, on a clock passed in (a unit test drives it). A stage that stops at
a limit says so: the :class:`~sidecar.bounce.parse.results.Limit` lands in ``ParsedMessage.limits``.

The sizes are far above any real bounce (in tests/data/bounces, 322 messages: the largest is
72 KB, the longest report text 59k characters, the longest line 2,619, the most recipients
3), so they change no result on real mail.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sidecar.bounce.parse.results import Limit

MAX_MESSAGE_BYTES = 10 * 1024 * 1024  # only this prefix of a message is parsed
MAX_HEADER_BYTES = 256 * 1024  # of one header block (the message's or a part's)
MAX_HEADERS = 2_000  # header fields kept per block
MAX_PARAM_HEADER = 4_096  # of a Content-Type/-Disposition (the stdlib's parameter split is quadratic)
MAX_PARTS = 200  # MIME parts visited
MAX_DEPTH = 8  # multipart nesting
MAX_TEXT = 200_000  # characters decoded from one part (bytes decoded: twice that at most)
MAX_SCAN = 256_000  # characters of report text (up to three parts) the field and pattern scans read
MAX_FIELD = 16_384  # characters of one DSN/ARF field value (continuation lines included)
MAX_RECIPIENTS = 1_000  # recipients extracted per message; the rest is only counted
MAX_LINE = 4_096  # a longer line is cut into pieces before any pattern sees it
MAX_DIAGNOSTIC = 16_384  # characters of a diagnostic the reason patterns search
FLUFL_BYTES = 64 * 1024  # flufl.bounce (the last resort) reads only this prefix ...
FLUFL_PARTS = 32  # ... with at most this many Content-Type headers in it
DEADLINE = 1.0  # seconds: after this, stages not yet run are skipped


class Budget:
    """The limits one parse hit, and its deadline on ``clock``."""

    __slots__ = ("clock", "deadline", "limits", "omitted")

    def __init__(self, clock: Callable[[], float] = time.monotonic, seconds: float = DEADLINE) -> None:
        self.clock = clock
        self.deadline = clock() + seconds
        self.limits: set[Limit] = set()
        self.omitted = 0  # recipients seen but not returned

    def omit(self, count: int) -> None:
        """``count`` recipients were seen but are not returned (over MAX_RECIPIENTS, or late)."""
        if count > 0:
            self.omitted += count
            self.limits.add(Limit.RECIPIENTS)

    def hit(self, limit: Limit) -> None:
        self.limits.add(limit)

    def expired(self) -> bool:
        """True (and noted) once the deadline has passed; checked between stages."""
        if Limit.DEADLINE in self.limits:
            return True
        if self.clock() > self.deadline:
            self.limits.add(Limit.DEADLINE)
            return True
        return False


def split_long_lines(text: str, width: int = MAX_LINE) -> tuple[str, bool]:
    """``text`` with every line longer than ``width`` cut into pieces (and whether one was)."""
    if len(text) <= width:
        return text, False
    lines = text.split("\n")
    if max(map(len, lines)) <= width:
        return text, False
    out: list[str] = []
    for line in lines:
        if len(line) <= width:
            out.append(line)
        else:
            out.extend(_pieces(line, width))
    return "\n".join(out), True


def _pieces(line: str, width: int) -> list[str]:
    """Cut at the last blank of each ``width`` window (mid-word only when there is none)."""
    out = []
    start = 0
    while len(line) - start > width:
        cut = line.rfind(" ", start + width // 2, start + width)
        cut = cut + 1 if cut > 0 else start + width
        out.append(line[start:cut])
        start = cut
    out.append(line[start:])
    return out
