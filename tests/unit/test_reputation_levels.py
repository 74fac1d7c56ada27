"""The pure level machine: the issue's four scenarios, hour by hour, with the time passed in."""

import pytest

from sidecar.config import ReputationConfig
from sidecar.reputation.levels import HOUR, Bucket, Level, LevelMachine, TenantState, release, wilson_lower

START = 1_795_000_000.0 // HOUR * HOUR  # on an hour


class Tenant:
    """Hourly buckets and the machine stepped at the end of every hour."""

    def __init__(self, **cfg):
        self.m = LevelMachine(ReputationConfig(**cfg))
        self.buckets: dict[int, Bucket] = {}
        self.st = TenantState()
        self.now = START
        self.history: list[tuple[int, int]] = []

    def hour(self, sends=0, bounces=0, complaints=0, hours=1):
        for _ in range(hours):
            h = int(self.now // HOUR)
            self.buckets[h] = Bucket(h, sends, bounces, complaints)
            self.now += HOUR
            self.evaluate()

    def evaluate(self):
        a = self.m.assess(self.buckets.values(), self.now - 1, self.st.window_start)
        self.st, t = self.m.step(self.st, a, self.now - 1)
        if t is not None:
            self.history.append((t.before, t.after))
        return a


def test_wilson_lower_bound():
    assert wilson_lower(0, 0) == 0.0
    assert wilson_lower(1, 300) < 0.001  # one complaint in 300 sends: 0.33% point, bound far lower
    assert 0.08 < wilson_lower(100, 1000) < 0.1
    assert wilson_lower(5, 5) < 1.0


def test_small_volume_noise_does_nothing():
    t = Tenant()
    # 150 sends a day, several bounces and a complaint: under both minimum volumes for days...
    for _ in range(3):
        t.hour(sends=10, bounces=1, hours=1)
        t.hour(hours=23)
    t.hour(sends=20, bounces=3, complaints=1)
    assert t.st.level == Level.NORMAL and t.history == []
    # ...and one complaint in 300 sends is over 0.3% but its lower bound is not: at most warn
    t2 = Tenant()
    t2.hour(sends=300, complaints=1)
    assert t2.st.level == Level.NORMAL  # under min_sends_complaints: the complaint rate does not act
    t3 = Tenant(min_sends_complaints=200)
    t3.hour(sends=300, complaints=1)
    assert t3.st.level == Level.WARN  # the point rate enters warn; 3-5 need the lower bound


def test_no_volume_keeps_level():
    t = Tenant()
    t.st = TenantState(Level.THROTTLE, START)
    t.hour(hours=48)  # nothing sent for two days: not 0%, no step down
    assert t.st.level == Level.THROTTLE


def test_steady_three_percent_reaches_warn_only():
    t = Tenant()
    t.hour(sends=1000, bounces=30, hours=24 * 5)
    assert t.st.level == Level.WARN
    assert t.history == [(1, 2)]


def test_bad_list_holds_within_the_hour_stays_then_steps_down_after_release():
    t = Tenant()
    t.hour(sends=500, bounces=5, hours=24)
    assert t.st.level == Level.NORMAL
    t.hour(sends=400, bounces=80)  # a bad list import: 20% hard bounces in one hour
    assert t.st.level == Level.HOLD and t.history == [(1, 4)]  # skips 2 and 3
    t.hour(sends=500, bounces=2, hours=24)  # a clean day: hold is operator only
    assert t.st.level == Level.HOLD
    t.st = release(t.st, Level.THROTTLE, t.now)
    # the window starts at the release: the bad hour is not read again
    t.hour(sends=500, bounces=5, hours=5)
    assert t.st.level == Level.THROTTLE
    t.hour(sends=500, bounces=5, hours=2)
    assert t.st.level == Level.WARN
    t.hour(sends=500, bounces=5, hours=7)
    assert t.st.level == Level.NORMAL
    assert t.history == [(1, 4), (3, 2), (2, 1)]


def test_complaints_over_three_days_push_a_large_tenant_to_throttle_then_hold():
    t = Tenant()
    t.hour(sends=20_000, complaints=2, hours=24)  # 0.01%: fine
    assert t.st.level == Level.NORMAL
    t.hour(sends=20_000, complaints=60, hours=24)  # day 2: 0.3% that day
    assert t.st.level == Level.THROTTLE
    t.hour(sends=20_000, complaints=130, hours=24)  # day 3: 0.65% that day
    assert t.st.level == Level.HOLD
    assert [after for _, after in t.history] == [2, 3, 4]


def test_escalation_skips_levels_and_exempt_never_moves():
    t = Tenant()
    t.hour(sends=1000, bounces=60)  # 6%: lower bound 4.7%
    assert t.st.level == Level.THROTTLE and t.history == [(1, 3)]
    t = Tenant()
    t.st = TenantState(exempt=True)
    t.hour(sends=1000, bounces=500)
    assert t.st.level == Level.NORMAL and t.history == []


@pytest.mark.parametrize("bounces,level", [(19, 1), (20, 2), (100, 4), (200, 5)])
def test_thresholds_at_1000_sends(bounces, level):
    m = LevelMachine(ReputationConfig(bad_list_sends=10**9))
    a = m.assess([Bucket(int(START // HOUR), 1000, bounces)], START + 10)
    assert m.entered(a)[0] == level
