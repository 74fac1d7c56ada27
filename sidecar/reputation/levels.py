"""The five reputation levels and the pure machine that moves a tenant between them.

No database, no reactor: the hourly counts and ``now`` are passed in (docs/reputation.md).

* Rates act only above a minimum volume in the window; no volume keeps the level.
* Level 2 is entered on the rate itself; levels 3-5 need the Wilson 95% lower bound of the rate
  to reach the threshold, so a few events in a small sample move nothing.
* A bad list (many sends and a large share of hard bounces within one hour) enters level 4.
* Escalation is immediate and may skip levels; levels 2 and 3 step down one level at a time
  once the rates have stayed under the leave thresholds for the cool-down; 4 and 5 stay until
  an operator acts. After a release the window does not reach back before it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

HOUR = 3600
Z95 = 1.959963984540054


class Level(IntEnum):
    NORMAL = 1
    WARN = 2
    THROTTLE = 3
    HOLD = 4
    PAUSE = 5


NAMES = {1: "normal", 2: "warn", 3: "throttle", 4: "hold", 5: "pause"}
OPERATOR_ONLY = frozenset({Level.HOLD, Level.PAUSE})


def level_name(level: int) -> str:
    return NAMES.get(level, str(level))


@dataclass(frozen=True, slots=True)
class Bucket:
    """One tenant's counts for one hour (``hour`` = hours since the epoch, UTC)."""

    hour: int
    sends: int = 0
    hard_bounces: int = 0
    complaints: int = 0


@dataclass(frozen=True, slots=True)
class Assessment:
    """The counts over the window and the rates that may act (None: too little volume)."""

    sends: int
    hard_bounces: int
    complaints: int
    bounce_rate: float | None
    complaint_rate: float | None
    bad_list: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "sends": self.sends,
            "hard_bounces": self.hard_bounces,
            "complaints": self.complaints,
            "bounce_rate": self.bounce_rate,
            "complaint_rate": self.complaint_rate,
            "bad_list": self.bad_list,
        }


@dataclass(frozen=True, slots=True)
class TenantState:
    """A tenant's level and the times that decide its next move."""

    level: int = Level.NORMAL
    since: float = 0.0  # when the current level was entered
    calm_since: float | None = None  # rates under this level's leave thresholds since then
    window_start: float = 0.0  # the last release: counts before it are not read
    exempt: bool = False  # never moved automatically


@dataclass(frozen=True, slots=True)
class Transition:
    before: int
    after: int
    reason: str
    assessment: Assessment


def wilson_lower(k: int, n: int, z: float = Z95) -> float:
    """The Wilson score interval's lower bound for ``k`` successes in ``n`` trials (0 when n is 0)."""
    if n <= 0:
        return 0.0
    p = min(k, n) / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z2 / n))


class LevelMachine:
    """Thresholds from ``reputation`` config (a :class:`~sidecar.config.ReputationConfig`)."""

    def __init__(self, rc: Any) -> None:
        self.rc = rc
        # (level, bounce threshold, complaint threshold), highest first
        self.enter = (
            (Level.PAUSE, rc.pause_bounce, rc.pause_complaint),
            (Level.HOLD, rc.hold_bounce, rc.hold_complaint),
            (Level.THROTTLE, rc.throttle_bounce, rc.throttle_complaint),
            (Level.WARN, rc.warn_bounce, rc.warn_complaint),
        )
        self.leave = {
            Level.WARN: (rc.warn_leave_bounce, rc.warn_leave_complaint),
            Level.THROTTLE: (rc.throttle_leave_bounce, rc.throttle_leave_complaint),
        }

    def assess(self, buckets: Iterable[Bucket], now: float, window_start: float = 0.0) -> Assessment:
        """Sum the buckets inside the window (and not before ``window_start``, a release)."""
        first = max(now - self.rc.window, window_start)
        first_hour = math.floor(first / HOUR)
        # The hour a release fell in is read only from the release on: its earlier counts are
        # not separable, so that hour is dropped when the release was not on its first second.
        if first == window_start and window_start > first_hour * HOUR:
            first_hour += 1
        sends = bounces = complaints = 0
        bad_list = False
        rc = self.rc
        for b in buckets:
            if b.hour < first_hour or b.hour * HOUR > now:
                continue
            sends += b.sends
            bounces += b.hard_bounces
            complaints += b.complaints
            if b.sends >= rc.bad_list_sends and b.hard_bounces >= rc.bad_list_bounce * b.sends:
                bad_list = True
        return Assessment(
            sends,
            bounces,
            complaints,
            bounces / sends if sends >= rc.min_sends_bounces else None,
            complaints / sends if sends >= rc.min_sends_complaints else None,
            bad_list,
        )

    def entered(self, a: Assessment) -> tuple[int, str]:
        """The highest level the counts call for, and why (NORMAL, "" when none)."""
        for level, bounce, complaint in self.enter:
            exact = level == Level.WARN  # 3-5 need the Wilson lower bound to reach the threshold
            if a.bounce_rate is not None:
                r = a.bounce_rate if exact else wilson_lower(a.hard_bounces, a.sends)
                if r >= bounce:
                    return level, f"bounce rate {a.bounce_rate:.2%} (threshold {bounce:.2%})"
            if a.complaint_rate is not None:
                r = a.complaint_rate if exact else wilson_lower(a.complaints, a.sends)
                if r >= complaint:
                    return level, f"complaint rate {a.complaint_rate:.3%} (threshold {complaint:.3%})"
            if level == Level.HOLD and a.bad_list:
                return level, f"bad list: at least {self.rc.bad_list_bounce:.0%} hard bounces within one hour"
        return Level.NORMAL, ""

    def calm(self, level: int, a: Assessment) -> bool:
        """Rates measurable and under ``level``'s leave thresholds (no volume is not calm)."""
        bounce, complaint = self.leave[Level(level)]
        if a.bounce_rate is None or a.bounce_rate >= bounce:
            return False
        return a.complaint_rate is None or a.complaint_rate < complaint

    def step(self, st: TenantState, a: Assessment, now: float) -> tuple[TenantState, Transition | None]:
        """The tenant's next state for the counts ``a`` at ``now``, and the transition if any."""
        if st.exempt:
            return st, None
        target, why = self.entered(a)
        if target > st.level:
            return TenantState(target, now, None, st.window_start), Transition(st.level, target, why, a)
        if st.level in OPERATOR_ONLY or st.level == Level.NORMAL:
            return st, None
        if a.bounce_rate is None:  # too little volume to tell: the level and its cool-down stay
            return st, None
        if not self.calm(st.level, a):  # rates over the leave thresholds restart the cool-down
            return (st if st.calm_since is None else replace(st, calm_since=None)), None
        if st.calm_since is None:
            return replace(st, calm_since=now), None
        if now - st.calm_since < self.rc.cooldown:
            return st, None
        after = st.level - 1
        reason = f"rates under the level {st.level} leave thresholds for {self.rc.cooldown / 3600:g} h"
        return TenantState(after, now, None, st.window_start), Transition(st.level, after, reason, a)


def release(st: TenantState, to: int, now: float) -> TenantState:
    """An operator's release: the new level, and the window starts again from ``now``."""
    return TenantState(to, now, None, now, st.exempt)
