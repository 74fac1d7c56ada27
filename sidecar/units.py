"""User-typed times, durations and sizes: the one parser of each that every entry point uses (config,
API, CLI, CSV import, store).

A time is accepted as ISO 8601 (``2026-11-01``, ``2026-11-01T12:00:00Z``), POSIX seconds (a
number, or a string of digits), a duration (``"7d"``: that long from now, or ago for ``since``),
or, where a field allows it, empty / ``"never"`` (no time). Whatever the form, the result must
be finite and within 1970-01-01 .. 9999-12-31: anything else is refused with an error naming
the field, so nothing out of range ever reaches the store (where it would break every read).
"""

from __future__ import annotations

import datetime as dt
import math
import re

MIN_TIME = 0.0  # 1970-01-01T00:00:00Z
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z
NEVER = ("never", "none")

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_SECONDS = re.compile(r"^\s*[0-9]{1,15}(?:\.[0-9]{1,9})?\s*$")  # POSIX seconds, ASCII digits only
_TIME_HELP = 'expected an ISO 8601 date/time, POSIX seconds or a duration like "7d"'


class InvalidValue(ValueError):
    """A user-typed value that is refused; ``field`` names it, ``message`` says why (one line)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_duration(value: object) -> float:
    """``"90s"``, ``"1m"``, ``"2h"``, ``"7d"`` or a number of seconds (finite, not negative)."""
    if isinstance(value, bool):
        raise ValueError('expected a duration like "1h"')
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError("expected a finite, non-negative duration")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m and len(m.group(1)) <= 16:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError('expected a duration like "1h"')


def parse_size(value: object) -> int:
    """``"10MB"``, ``"512k"`` or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = re.match(r"^\s*(\d+)\s*([kmg]?)i?b?\s*$", value, re.I)
        if m:
            return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    raise ValueError('expected a size like "10MB" or a number of bytes')


def check_time(ts: float, field: str) -> float:
    """``ts`` itself if it is a finite POSIX time within 1970 .. 9999, else InvalidValue."""
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
        raise InvalidValue(field, "expected a finite time")
    if not MIN_TIME <= ts <= MAX_TIME:
        raise InvalidValue(field, "out of range: times must be within 1970-01-01 .. 9999-12-31")
    return float(ts)


def parse_time(value: object, field: str, *, now: float, past: bool = False, allow_never: bool = False) -> float | None:
    """A user-typed time as POSIX seconds (``None`` for empty, or "never" if ``allow_never``).

    Durations count back from ``now`` when ``past`` (``since=24h``), forward otherwise
    (``expires_at=30d``). Strings of digits and JSON numbers are POSIX seconds.
    """
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return check_time(value, field)
    if not isinstance(value, str):
        raise InvalidValue(field, _TIME_HELP)
    v = value.strip()
    if v.lower() in NEVER:
        if allow_never:
            return None
        raise InvalidValue(field, _TIME_HELP)
    if _SECONDS.match(v):
        return check_time(float(v), field)
    if len(v) > 64:
        raise InvalidValue(field, _TIME_HELP)
    try:
        d = parse_duration(v)
    except ValueError:
        pass
    else:
        return check_time(now - d if past else now + d, field)
    try:
        when = dt.datetime.fromisoformat(v.replace("Z", "+00:00") if v.endswith("Z") else v)
    except ValueError:
        raise InvalidValue(field, _TIME_HELP) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    try:
        return check_time(when.timestamp(), field)
    except (OverflowError, OSError, ValueError):  # e.g. 9999-12-31T23:59:59-05:00
        raise InvalidValue(field, "out of range: times must be within 1970-01-01 .. 9999-12-31") from None


def iso(ts: float | None) -> str:
    """``ts`` as ``YYYY-MM-DDTHH:MM:SSZ`` ("" for None)."""
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
