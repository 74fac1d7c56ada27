"""StateSync (the service's periodic jobs) on a task.Clock, with the in-memory suppression store."""

from __future__ import annotations

import gc

import pytest
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock, Cooperator

from sidecar.config import Config, LimitConfig, RateLimitRule
from sidecar.policy.limits import RateLimiter
from sidecar.store.db import make_engine, upgrade
from sidecar.suppression.index import SuppressionIndex
from sidecar.suppression.memory import MemorySuppressionStore
from sidecar.sync import StateSync
from tests.harness.policy import rcpt

T0 = 1_795_000_000.0


@pytest.fixture
def world():
    clock = Clock()
    clock.advance(T0)
    store = MemorySuppressionStore()
    engine = make_engine("sqlite://")  # only for the counters, refusals and retention jobs
    upgrade(engine)
    index = SuppressionIndex(False, ())
    limiter = RateLimiter(
        [RateLimitRule(name="r", key=("sender",), limits=(LimitConfig(5, 60.0, 0),), count="recipients")]
    )
    sync = StateSync(Config(), store, engine, clock, maybeDeferred, index, limiter)
    yield clock, store, index, limiter, sync
    if sync.running:
        sync.stopService()
    gc.unfreeze()
    engine.dispose()


def test_load_then_the_change_feed_on_each_tick(world):
    clock, store, index, limiter, sync = world
    store.add("old@x.test", reason="hard", now=T0 - 100)
    store.add("gone@x.test", reason="hard", now=T0 - 100, expires_at=T0 - 1)
    sync.load()
    assert sync.ready and len(index) == 1 and index.lookup("old@x.test", "", T0) is not None
    sync.startService()

    store.add("new@x.test", reason="complaint", now=T0, expires_at=T0 + 40)
    store.remove("old@x.test", now=T0)
    assert index.lookup("new@x.test", "", T0) is None  # not before the next tick
    clock.advance(Config().database.sync_interval)
    assert index.lookup("new@x.test", "", clock.seconds()) is not None
    assert index.lookup("old@x.test", "", clock.seconds()) is None
    assert sync.db_ok and sync.cursor.high == store.last_change_id()


def test_limit_reset_counters_saved_and_housekeeping(world):
    clock, store, index, limiter, sync = world
    sync.load()
    sync.startService()
    req = rcpt(sender="a@shop.test")
    assert limiter.check(req, "RCPT", clock.seconds()) is None
    assert "r:a@shop.test" in limiter.dirty
    clock.advance(1.0)  # ratelimit.persist_interval
    assert not limiter.dirty and sync.db_ok

    store.reset_limit("r:a@shop.test")
    clock.advance(0.5)
    assert "r:a@shop.test" not in limiter.state

    store.add("brief@x.test", reason="soft", now=clock.seconds(), expires_at=clock.seconds() + 10)
    clock.advance(0.5)
    assert len(index) == 1
    assert limiter.check(req, "RCPT", clock.seconds()) is None
    clock.advance(30.0)  # housekeeping: expired entries and idle keys go
    clock.advance(0)  # the prune's next slice (callLater(0))
    assert len(index) == 0 and not limiter.state


def test_a_failed_poll_is_logged_and_retried_next_tick(world, caplog):
    clock, store, index, limiter, sync = world
    sync.load()
    calls = []

    def broken(*a):
        calls.append(a)
        raise RuntimeError("database is locked")

    store.changes_since = broken  # type: ignore[method-assign]
    sync.startService()
    assert len(calls) == 1 and "database changes sync failed" in caplog.text
    clock.advance(0.5)
    assert len(calls) == 2
    del store.changes_since
    store.add("later@x.test", reason="hard", now=clock.seconds())
    clock.advance(0.5)
    assert len(calls) == 2 and len(index) == 1 and sync.db_ok


@pytest.fixture
def recording():
    """StateSync with a record of recipients; one slice of hashing per reactor turn."""
    from sidecar.recipient_filters import RecipientRecorder

    clock = Clock()
    clock.advance(T0)
    engine = make_engine("sqlite://")
    upgrade(engine)
    rec = RecipientRecorder(10_000, 1e-6)
    limiter = RateLimiter([])
    sync = StateSync(
        Config(), MemorySuppressionStore(), engine, clock, maybeDeferred, SuppressionIndex(False, ()), limiter, rec
    )
    turns: list = []  # the reactor turns the flush asked for, run one at a time by the test
    sync._cooperator = Cooperator(terminationPredicateFactory=lambda: lambda: True, scheduler=turns.append)
    yield turns, engine, rec, sync
    gc.unfreeze()
    engine.dispose()


def test_the_recipients_flush_hashes_a_slice_per_reactor_turn(recording):
    from sidecar.recipient_filters import APPLY_SLICE
    from sidecar.store.recipient_days import StoredRecipients

    turns, engine, rec, sync = recording
    n = APPLY_SLICE * 3 + 1  # four slices
    for i in range(n):
        rec.add("t1", f"u{i}@x.test", T0)
    d = sync.flush_recipients()
    ran = 0
    while not d.called:
        assert turns and ran < 10
        turns.pop(0)()
        ran += 1
        assert d.called or sum(f.bloom.approx_items > 0 for f in rec.filters.values()) == 1
    assert ran == 5 and d.result is None  # a slice per turn, then one more that finds the task done
    assert not any(f.dirty for f in rec.filters.values())
    lookup = StoredRecipients(engine, Config().recipients.retention)
    assert all(lookup.tenants_for(f"u{i}@x.test", T0) == {"t1"} for i in (0, n // 2, n - 1))
    assert lookup.tenants_for("never@x.test", T0) == frozenset()


def test_stopping_during_a_flush_still_saves_every_recipient(recording):
    from sidecar.store.recipient_days import StoredRecipients

    turns, engine, rec, sync = recording
    sync.startService()
    for i in range(600):
        rec.add("", f"v{i}@x.test", T0)
    d = sync.flush_recipients()
    turns.pop(0)()  # one slice hashed, the rest still pending
    assert not d.called
    sync.stopService()  # the flush is cut short; the last flush at stop writes everything
    assert d.called
    lookup = StoredRecipients(engine, Config().recipients.retention)
    assert all(lookup.tenants_for(f"v{i}@x.test", T0) == {""} for i in range(0, 600, 7))
