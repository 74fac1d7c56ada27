from twisted.internet.task import Clock

from sidecar import ratelimit
from sidecar.ratelimit import Window


def run(window, clock, n, tat=None):
    allowed = 0
    for _ in range(n):
        v = ratelimit.check(window, tat, clock.seconds())
        if v.allowed:
            tat = v.tat
            allowed += 1
    return allowed, tat


def test_capacity_is_rate_plus_burst():
    clock = Clock()
    clock.advance(1000)
    allowed, _ = run(Window(10, 60, 5), clock, 100)
    assert allowed == 15


def test_refills_at_rate():
    clock = Clock()
    clock.advance(1000)
    w = Window(10, 60)
    allowed, tat = run(w, clock, 10)
    assert allowed == 10
    assert not ratelimit.check(w, tat, clock.seconds()).allowed
    clock.advance(6)  # one emission interval
    v = ratelimit.check(w, tat, clock.seconds())
    assert v.allowed and v.remaining == 0
    clock.advance(60)
    assert ratelimit.usage(w, v.tat, clock.seconds()) == (0, 10)


def test_denied_does_not_change_state_and_gives_retry_after():
    clock = Clock()
    w = Window(2, 10)
    _, tat = run(w, clock, 2)
    v = ratelimit.check(w, tat, clock.seconds())
    assert not v.allowed and v.tat == tat
    assert abs(v.retry_after - 5.0) < 1e-6


def test_check_without_consume_and_force():
    clock = Clock()
    w = Window(1, 60)
    v = ratelimit.check(w, None, clock.seconds(), consume=False)
    assert v.allowed
    tat = ratelimit.force(w, None, clock.seconds())
    assert not ratelimit.check(w, tat, clock.seconds()).allowed
    assert ratelimit.usage(w, tat, clock.seconds()) == (1, 0)
    assert ratelimit.is_idle(tat, clock.seconds() + 60)
