"""GCRA (generic cell rate algorithm): a pure rate limiter; time is passed in.

A window ``rate`` per ``per`` seconds with ``burst`` behaves as a bucket holding
``rate + burst`` units that refills at ``rate`` per ``per``. The whole state of one
key and window is a single float, the theoretical arrival time (TAT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Window:
    rate: int
    per: float
    burst: int = 0

    @property
    def interval(self) -> float:
        """Seconds one unit 'costs' (emission interval)."""
        return self.per / self.rate

    @property
    def capacity(self) -> int:
        return self.rate + self.burst


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    tat: float  # new state (unchanged when not allowed or when only checking)
    remaining: int  # units still available after this decision
    retry_after: float  # seconds until one unit is available (0 when allowed)


def step(tat: float | None, now: float, interval: float, limit: float, cost: int = 1) -> float | None:
    """The GCRA step: the new TAT when ``cost`` units fit at ``now``, else None.

    ``interval`` is the window's emission interval and ``limit`` its ``capacity * interval``:
    the hot path passes them precomputed. ``check`` is this step with the figures around it.
    """
    new_tat = (now if tat is None or tat < now else tat) + cost * interval
    return new_tat if new_tat - now <= limit + 1e-9 else None


def check(window: Window, tat: float | None, now: float, cost: int = 1, consume: bool = True) -> Verdict:
    """Would ``cost`` units be admitted at ``now``? Returns the new TAT when consumed."""
    t = window.interval
    limit = window.capacity * t
    base = now if tat is None or tat < now else tat
    new_tat = step(tat, now, t, limit, cost)
    if new_tat is None:
        retry = base + cost * t - now - limit
        return Verdict(False, base if tat is not None else now, _remaining(base, now, t, limit), retry)
    final = new_tat if consume else base
    return Verdict(True, final, _remaining(new_tat, now, t, limit), 0.0)


def force(window: Window, tat: float | None, now: float, cost: int = 1) -> float:
    """Consume ``cost`` units whatever the state (commit of an already admitted message)."""
    base = now if tat is None or tat < now else tat
    return base + cost * window.interval


def usage(window: Window, tat: float | None, now: float) -> tuple[int, int]:
    """(used, remaining) units at ``now``."""
    t = window.interval
    limit = window.capacity * t
    base = now if tat is None or tat < now else tat
    rem = _remaining(base, now, t, limit)
    return window.capacity - rem, rem


def _remaining(tat: float, now: float, t: float, limit: float) -> int:
    return max(0, int(math.floor((limit - (tat - now)) / t + 1e-9)))


def is_idle(tat: float, now: float) -> bool:
    """A key whose TAT has passed holds no state worth keeping."""
    return tat <= now
