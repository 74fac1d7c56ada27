"""The record of recipients: filters, day rollover, expiry, tenants, the engine's hook, the store."""

import time

import pytest
from twisted.internet import defer, task

from sidecar.config import ConfigError, load_config
from sidecar.policy.engine import GuardedDecider, PolicyEngine
from sidecar.policy.limits import RateLimiter
from sidecar.recipient_filters import DAY, DayFilters, RecipientRecorder, day_of, pair_hash
from sidecar.recipients import LOOKUP_MAX_AGE, InMemoryRecipients, open_lookup
from sidecar.store import recipient_days
from sidecar.store.db import make_engine, upgrade
from sidecar.suppression.index import SuppressionIndex
from tests.harness.policy import rcpt

NOW = 1_795_000_000.0  # 2026-11-18 ~ 08:53 UTC
RETENTION = 14 * DAY


def _view(rec: RecipientRecorder, node: str = "n1", stamp: float = 1.0) -> DayFilters:
    """What a lookup would see after ``rec`` flushed everything (no database)."""
    for day, pairs in rec.take().items():
        rec.apply(day, pairs)
    view = DayFilters()
    rows = rec.dirty()
    for d, data, _, _ in rows:
        view.put_day(d, [(node, stamp, data)])
    view.keep([d for d, *_ in rows], {d: frozenset(ts) for d, _, _, ts in rows})
    return view


def test_pair_hash_is_stable_and_tenant_separated():
    assert pair_hash("t", "a@example.test") == pair_hash("t", "a@example.test")
    assert pair_hash("t", "a@example.test") != pair_hash("u", "a@example.test")
    assert pair_hash("t", "a@example.test") != pair_hash("", "ta@example.test")
    # fixed across processes and releases (stored filters depend on it)
    assert pair_hash("", "a@example.test") == 115320995979845260381912097075340731316


def test_added_recipient_is_found_with_its_tenant_and_others_are_not():
    rec = RecipientRecorder(1000, 1e-6)
    rec.add("alice", "Bob@Example.TEST", NOW)
    rec.add("carol", "dave@example.test", NOW)
    view = _view(rec)
    assert view.tenants_for("bob@example.test", NOW, RETENTION) == {"alice"}  # match form (lower-cased)
    assert view.tenants_for("dave@example.test", NOW, RETENTION) == {"carol"}
    assert view.tenants_for("nobody@example.test", NOW, RETENTION) == frozenset()


def test_case_sensitive_local_part_keeps_the_local_part():
    rec = RecipientRecorder(1000, 1e-6, case_sensitive_local=True)
    rec.add("", "Bob@Example.TEST", NOW)
    view = _view(rec)
    assert view.tenants_for("Bob@example.test", NOW, RETENTION) == {""}
    assert view.tenants_for("bob@example.test", NOW, RETENTION) == frozenset()


def test_same_recipient_for_two_tenants_on_two_days():
    rec = RecipientRecorder(1000, 1e-6)
    rec.add("alice", "x@example.test", NOW)
    rec.add("bob", "x@example.test", NOW + DAY)
    view = _view(rec)
    assert view.tenants_for("x@example.test", NOW + DAY, RETENTION) == {"alice", "bob"}


def test_day_rollover_with_a_clock_starts_a_new_filter():
    clock = task.Clock()
    midnight = (day_of(NOW) + 1) * DAY
    clock.advance(midnight - 1)
    rec = RecipientRecorder(1000, 1e-6)
    rec.add("", "before@example.test", clock.seconds())
    clock.advance(2)
    rec.add("", "after@example.test", clock.seconds())
    pending = rec.take()
    assert sorted(pending) == [day_of(midnight) - 1, day_of(midnight)]
    assert pending[day_of(midnight) - 1] == {("", "before@example.test")}
    assert pending[day_of(midnight)] == {("", "after@example.test")}
    rec.add("", "later@example.test", clock.seconds())  # after take: a fresh set for the same day
    assert rec.take() == {day_of(midnight): {("", "later@example.test")}}


def test_expiry_after_retention():
    rec = RecipientRecorder(1000, 1e-6)
    rec.add("", "old@example.test", NOW)
    view = _view(rec)
    assert view.tenants_for("old@example.test", NOW + RETENTION - 1, RETENTION) == {""}
    # the whole day is kept while any of it is within the window, then dropped
    end_of_day = (day_of(NOW) + 1) * DAY
    assert view.tenants_for("old@example.test", end_of_day + RETENTION - 1, RETENTION) == {""}
    assert view.tenants_for("old@example.test", end_of_day + RETENTION, RETENTION) == frozenset()
    # nor is anything recorded later than the lookup's now counted
    assert view.tenants_for("old@example.test", NOW - DAY, RETENTION) == frozenset()


def test_two_nodes_same_size_are_or_ed_and_different_sizes_tested_apart():
    a, b, c = RecipientRecorder(1000, 1e-6), RecipientRecorder(1000, 1e-6), RecipientRecorder(50, 1e-3)
    a.add("t1", "a@example.test", NOW)
    b.add("t2", "b@example.test", NOW)
    c.add("t3", "c@example.test", NOW)
    rows: dict[int, list] = {}
    tenants: dict[int, set[str]] = {}
    for name, rec in (("a", a), ("b", b), ("c", c)):
        for day, pairs in rec.take().items():
            rec.apply(day, pairs)
        for d, data, _, ts in rec.dirty():
            rows.setdefault(d, []).append((name, 5.0, data))
            tenants.setdefault(d, set()).update(ts)
    view = DayFilters()
    for d, day_rows in rows.items():
        view.put_day(d, day_rows)
    view.keep(rows, {d: frozenset(t) for d, t in tenants.items()})
    assert len(view.blooms[day_of(NOW)]) == 2  # a | b, and c apart
    assert view.stale({(day_of(NOW), "a"): 5.0, (day_of(NOW), "b"): 5.0, (day_of(NOW), "c"): 5.0}) == []
    assert view.stale({(day_of(NOW), "a"): 6.0, (day_of(NOW), "b"): 5.0, (day_of(NOW), "c"): 5.0}) == [day_of(NOW)]
    assert view.tenants_for("a@example.test", NOW, RETENTION) == {"t1"}
    assert view.tenants_for("b@example.test", NOW, RETENTION) == {"t2"}
    assert view.tenants_for("c@example.test", NOW, RETENTION) == {"t3"}


def test_measured_false_positive_rate_is_near_the_configured_one():
    rec = RecipientRecorder(20000, 1e-2)
    for i in range(20000):
        rec.add("", f"r{i}@example.test", NOW)
    view = _view(rec)
    fp = sum(bool(view.tenants_for(f"never{i}@example.test", NOW, RETENTION)) for i in range(20000))
    assert all(view.tenants_for(f"r{i}@example.test", NOW, RETENTION) for i in range(0, 20000, 97))
    assert 50 < fp < 400, fp  # 1% of 20,000 = 200


def test_put_back_keeps_pairs_for_the_next_flush():
    rec = RecipientRecorder(1000, 1e-6)
    rec.add("", "a@example.test", NOW)
    pending = rec.take()
    rec.add("", "b@example.test", NOW)
    rec.put_back(pending)
    assert rec.take() == {day_of(NOW): {("", "a@example.test"), ("", "b@example.test")}}


def test_saved_drops_old_days_from_memory_but_keeps_dirty_ones():
    rec = RecipientRecorder(1000, 1e-6)
    for d in (0, 1, 2, 3):
        rec.apply(day_of(NOW) - d, [("", "x@example.test")])
    rec.saved([day_of(NOW), day_of(NOW) - 1, day_of(NOW) - 2], NOW)
    assert sorted(rec.filters) == [day_of(NOW) - 3, day_of(NOW) - 1, day_of(NOW)]  # day-3 not saved yet
    assert [d for d, *_ in rec.dirty()] == [day_of(NOW) - 3]


def test_in_memory_fake_honours_retention():
    r = InMemoryRecipients(retention=DAY)
    r.add("t", "a@example.test", NOW)
    assert r.tenants_for("a@example.test", NOW + 10) == {"t"}
    assert r.tenants_for("a@example.test", NOW + DAY + 1) == frozenset()


# -- config ---------------------------------------------------------------------------------------


def test_config_defaults_and_errors_name_the_key(tmp_path):
    cfg = load_config(None)
    assert cfg.recipients.enabled and cfg.recipients.retention == 14 * DAY
    assert cfg.recipients.false_positive_rate == 1e-6 and cfg.recipients.expected_per_day == 1_000_000
    p = tmp_path / "c.toml"
    for text, where in (
        ("false_positive_rate = 2", "recipients.false_positive_rate"),
        ("expected_per_day = 0", "recipients.expected_per_day"),
        ('retention = "2h"', "recipients.retention"),
        ("flush_interval = 0", "recipients.flush_interval"),
    ):
        p.write_text(f"[recipients]\n{text}\n")
        with pytest.raises(ConfigError, match=f"^{where}:"):
            load_config(p)


# -- the policy engine's hook ---------------------------------------------------------------------


class Recorded(list):
    def __call__(self, tenant, recipient, now):
        self.append((tenant, recipient, now))


def _engine(tmp_path, toml="", limiter=None):
    p = tmp_path / "c.toml"
    p.write_text(toml)
    cfg = load_config(p)
    index = SuppressionIndex(False, ())
    rec = Recorded()
    return PolicyEngine(cfg, index, limiter or RateLimiter(cfg.ratelimit.rules), record=rec), index, rec


LIMIT = """
[[ratelimit.rules]]
name = "per-app"
key = ["sasl_username"]
count = "recipients"
limits = [{ rate = 1, per = "1h" }]
"""


def test_engine_records_recipients_let_through_only(tmp_path):
    e, index, rec = _engine(tmp_path, LIMIT)
    index.put("dead@example.test", "", "hard bounce", NOW, None)
    assert e.decide(rcpt(recipient="ok@example.test", sasl_username="app"), NOW) == "DUNNO"
    assert e.decide(rcpt(recipient="dead@example.test", sasl_username="other"), NOW).startswith("550")
    assert e.decide(rcpt(recipient="late@example.test", sasl_username="app"), NOW).startswith("DEFER_IF_PERMIT")
    assert e.decide({**rcpt(recipient="x@example.test"), "protocol_state": "DATA"}, NOW) == "DUNNO"
    assert rec == [("app", "ok@example.test", NOW)]


def test_engine_records_the_tenant_as_it_computes_it(tmp_path):
    e, _, rec = _engine(tmp_path, '[suppression]\ntenant_from = "sender_domain"\n')
    e.decide(rcpt(recipient="r@example.test", sasl_username="app", sender="news@Shop.EXAMPLE"), NOW)
    assert rec == [("shop.example", "r@example.test", NOW)]


class DeferredLimiter:
    """A shared backend's answer that comes later (as the Redis limiter's does)."""

    def __init__(self, hit):
        self.hit = hit
        self.pending: list[defer.Deferred] = []

    def __bool__(self):
        return True

    def check(self, attrs, state, now):
        d = defer.Deferred()
        self.pending.append(d)
        return d


def test_engine_records_on_the_deferred_path_once_the_answer_lets_it_through(tmp_path):
    lim = DeferredLimiter(None)
    e, _, rec = _engine(tmp_path, limiter=lim)
    decide = GuardedDecider(e, "DUNNO", lambda: NOW)
    ok = decide(rcpt(recipient="a@example.test", sasl_username="app"))
    refused = decide(rcpt(recipient="b@example.test", sasl_username="app"))
    assert rec == []
    got: list[str] = []
    ok.addCallback(got.append)
    refused.addCallback(got.append)
    lim.pending[0].callback(None)
    lim.pending[1].callback(("r", "k", "450 4.7.1 slow down"))
    assert got == ["DUNNO", "450 4.7.1 slow down"]
    assert rec == [("app", "a@example.test", NOW)]


# -- the store ------------------------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(eng)
    return eng


def test_flush_then_lookup_through_the_store_and_prune(tmp_path, engine):
    cfg = load_config(None)
    rec = RecipientRecorder(1000, 1e-6)
    rec.add("alice", "a@example.test", NOW)
    rec.add("bob", "b@example.test", NOW + DAY)
    assert recipient_days.flush(engine, rec, "n1", rec.take(), NOW + DAY) == 2
    lookup = open_lookup(cfg, engine)
    assert lookup.tenants_for("a@example.test", NOW + DAY) == {"alice"}
    assert lookup.tenants_for("b@example.test", NOW + DAY) == {"bob"}
    assert lookup.tenants_for("c@example.test", NOW + DAY) == frozenset()
    # a later flush is seen by the same (cached) lookup, once its last reading is LOOKUP_MAX_AGE old
    rec.add("carol", "c@example.test", NOW + DAY)
    recipient_days.flush(engine, rec, "n1", rec.take(), NOW + DAY + 5)
    time.sleep(LOOKUP_MAX_AGE)
    assert lookup.tenants_for("c@example.test", NOW + DAY) == {"carol"}
    # the old day leaves the store once out of the window
    later = (day_of(NOW) + 1) * DAY + cfg.recipients.retention
    assert recipient_days.prune(engine, later, cfg.recipients.retention) == 1
    assert lookup.tenants_for("a@example.test", later) == frozenset()
    assert lookup.tenants_for("b@example.test", later) == {"bob"}


def test_a_lookup_within_max_age_of_its_last_reading_reads_nothing(engine):
    rec = RecipientRecorder(1000, 1e-6)
    rec.add("alice", "a@example.test", NOW)
    recipient_days.flush(engine, rec, "n1", rec.take(), NOW)
    lookup = recipient_days.StoredRecipients(engine, 14 * DAY, max_age=3600)
    assert lookup.tenants_for("a@example.test", NOW) == {"alice"}
    rec.add("carol", "c@example.test", NOW)
    recipient_days.flush(engine, rec, "n1", rec.take(), NOW + 5)
    assert lookup.tenants_for("c@example.test", NOW) == frozenset()  # the reading of a moment ago
    assert lookup.tenants_for("c@example.test", NOW + DAY) == {"carol"}  # another window: read again
    assert recipient_days.StoredRecipients(engine, 14 * DAY).tenants_for("c@example.test", NOW) == {"carol"}


def test_a_restarted_node_keeps_what_it_flushed_earlier_that_day(engine):
    first = RecipientRecorder(1000, 1e-6)
    first.add("", "before@example.test", NOW)
    recipient_days.flush(engine, first, "n1", first.take(), NOW)
    second = RecipientRecorder(1000, 1e-6)  # the same node after a restart
    second.add("", "after@example.test", NOW + 60)
    recipient_days.flush(engine, second, "n1", second.take(), NOW + 60)
    lookup = recipient_days.StoredRecipients(engine, RETENTION)
    assert lookup.tenants_for("before@example.test", NOW + 60) == {""}
    assert lookup.tenants_for("after@example.test", NOW + 60) == {""}


def test_open_lookup_is_one_cached_lookup_per_engine(engine, tmp_path):
    cfg = load_config(None)
    first = open_lookup(cfg, engine)
    assert open_lookup(cfg, engine) is first
    other = make_engine(f"sqlite:///{tmp_path}/other.db")
    assert open_lookup(cfg, other) is not first


def test_two_nodes_in_one_store(engine):
    for node, addr in (("n1", "one@example.test"), ("n2", "two@example.test")):
        rec = RecipientRecorder(1000, 1e-6)
        rec.add("t", addr, NOW)
        recipient_days.flush(engine, rec, node, rec.take(), NOW)
    lookup = recipient_days.StoredRecipients(engine, RETENTION)
    assert lookup.tenants_for("one@example.test", NOW) == {"t"}
    assert lookup.tenants_for("two@example.test", NOW) == {"t"}


def test_disabled_record_corroborates_nothing(tmp_path, engine):
    p = tmp_path / "c.toml"
    p.write_text("[recipients]\nenabled = false\n")
    rec = RecipientRecorder(1000, 1e-6)
    rec.add("", "a@example.test", NOW)
    recipient_days.flush(engine, rec, "n1", rec.take(), NOW)
    assert open_lookup(load_config(p), engine).tenants_for("a@example.test", NOW) == frozenset()


def test_a_failed_flush_loses_nothing(tmp_path):
    bare = make_engine(f"sqlite:///{tmp_path}/bare.db")  # no schema yet: every statement fails
    rec = RecipientRecorder(1000, 1e-6)
    rec.add("", "first@example.test", NOW)
    pending = rec.take()
    with pytest.raises(Exception, match="recipient_filters"):
        recipient_days.flush(bare, rec, "n1", pending, NOW)
    assert pending == {day_of(NOW): {("", "first@example.test")}}  # not applied: the caller puts it back
    rec.put_back(pending)
    upgrade(bare)
    recipient_days.flush(bare, rec, "n1", rec.take(), NOW)
    # applied in memory but the write fails: the filter stays dirty and goes out with the next flush
    with bare.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE recipient_filters RENAME TO gone")
    rec.add("", "second@example.test", NOW)
    with pytest.raises(Exception, match="recipient_filters"):
        recipient_days.flush(bare, rec, "n1", rec.take(), NOW + 5)
    assert [d for d, *_ in rec.dirty()] == [day_of(NOW)]
    with bare.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE gone RENAME TO recipient_filters")
    recipient_days.flush(bare, rec, "n1", rec.take(), NOW + 10)
    lookup = recipient_days.StoredRecipients(bare, RETENTION)
    assert lookup.tenants_for("first@example.test", NOW + 10) == {""}
    assert lookup.tenants_for("second@example.test", NOW + 10) == {""}


def test_recorder_answers_for_pairs_not_flushed_yet_and_either_lookup_unions():
    from sidecar.recipient_filters import RecipientRecorder
    from sidecar.recipients import EitherLookup, InMemoryRecipients

    now = 1_800_000_000.0
    rec = RecipientRecorder(1000, 1e-6)
    rec.add("app", "Pending@Example.TEST", now)
    assert rec.tenants_for("pending@example.test", now) == {"app"}  # pending
    taken = rec.take()
    assert rec.tenants_for("pending@example.test", now) == {"app"}  # taken by a flush, not applied
    for day, pairs in taken.items():
        rec.apply(day, pairs)
    rec.take()
    assert rec.tenants_for("pending@example.test", now) == {"app"}  # in this node's filter
    assert rec.tenants_for("other@example.test", now) == frozenset()
    stored = InMemoryRecipients()
    stored.add("shop", "pending@example.test", now)
    assert EitherLookup(rec, stored).tenants_for("pending@example.test", now) == {"app", "shop"}
