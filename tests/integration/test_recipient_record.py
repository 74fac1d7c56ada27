"""The record of recipients end to end: `sidecar serve` records, flushes, the ingester's lookup sees it."""

import time

import pytest
from sqlalchemy import select

from sidecar.config import load_config
from sidecar.recipient_filters import DAY, RecipientRecorder, day_of
from sidecar.recipients import open_lookup
from sidecar.store import recipient_days
from sidecar.store.db import make_engine, upgrade
from sidecar.store.models import RecipientFilter
from tests.harness.policy import rcpt
from tests.harness.sidecar import SidecarProcess, run_cli

FAST = """
[recipients]
flush_interval = "200ms"
node = "{node}"
"""


def _seen(cfg_path, db, address, want, timeout=5.0):
    """Poll the ingester's lookup until ``address`` has the tenants ``want``; the time it took."""
    engine = make_engine(db)
    lookup = open_lookup(load_config(cfg_path), engine)
    t0 = time.monotonic()
    while True:
        got = lookup.tenants_for(address, time.time())
        if got == want:
            engine.dispose()
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"{address}: {got} after {timeout} s, expected {want}"
        time.sleep(0.05)


def test_serve_records_what_it_lets_through_and_the_lookup_sees_it(tmp_path):
    db = f"sqlite:///{tmp_path}/sidecar.db"
    sc = SidecarProcess(tmp_path, db, FAST.format(node="relay-1"))
    try:
        # suppressed before the server starts: every RCPT of it is refused (never let through, never recorded)
        run_cli("suppressions", "add", "dead@example.test", "--reason", "hard bounce", db=db)
        sc.start()
        c = sc.connect()
        assert c.ask(rcpt(recipient="Alive@Example.TEST", sasl_username="app")) == "DUNNO"
        t0 = time.monotonic()
        while not c.ask(rcpt(recipient="dead@example.test", sasl_username="app")).startswith("550"):
            assert time.monotonic() - t0 < 2
            time.sleep(0.05)
        _seen(sc.config, db, "alive@example.test", {"app"})
        _seen(sc.config, db, "dead@example.test", frozenset(), timeout=0)  # refused: not recorded
        r = run_cli("recipients", "check", "<ALIVE@example.test>", db=db, config=sc.config, check=False)
        assert (r.returncode, r.stdout) == (0, "alive@example.test: recorded for tenant(s) 'app'\n"), r.stderr
        r = run_cli("recipients", "check", "dead@example.test", "--json", db=db, config=sc.config, check=False)
        assert r.returncode == 1 and '"recorded": false' in r.stdout, r.stderr
        text = sc.metrics()
        values = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines() if ln.startswith("sidecar_recip")}
        assert values["sidecar_recipient_record_adds_total"] == 1
        assert values["sidecar_recipient_record_bytes"] == 3594397  # 1,000,000 a day at 1e-6: 3.6 MB
        assert round(values["sidecar_recipient_record_items"]) == 1
    finally:
        sc.stop()


def test_the_last_recipients_are_written_at_shutdown(tmp_path):
    db = f"sqlite:///{tmp_path}/sidecar.db"
    sc = SidecarProcess(tmp_path, db, '[recipients]\nflush_interval = "1h"\nnode = "relay-1"\n')
    try:
        sc.start()
        c = sc.connect()
        time.sleep(0.3)  # past the flush TimerService's first (immediate) run
        assert c.ask(rcpt(recipient="last@example.test", sasl_username="app")) == "DUNNO"
        c.close()
    finally:
        sc.stop()
    _seen(sc.config, db, "last@example.test", {"app"}, timeout=0)


@pytest.fixture
def relays(tmp_path, pg_url):
    run_cli("db", "upgrade", db=pg_url)
    started = []
    for i, host in enumerate(("127.0.0.2", "127.0.0.3")):
        sc = SidecarProcess(tmp_path / f"node{i}", pg_url, FAST.format(node=f"relay-{i}"), host=host)
        sc.start()
        started.append(sc)
    yield started
    for sc in started:
        sc.stop()


def test_two_relays_on_postgresql_each_record_and_the_lookup_sees_both(relays, pg_url):
    a, b = relays
    assert a.connect().ask(rcpt(recipient="via-a@example.test", sasl_username="alice")) == "DUNNO"
    assert b.connect().ask(rcpt(recipient="via-b@example.test", sasl_username="bob")) == "DUNNO"
    assert b.connect().ask(rcpt(recipient="via-a@example.test", sasl_username="bob")) == "DUNNO"
    _seen(a.config, pg_url, "via-a@example.test", {"alice", "bob"})
    _seen(b.config, pg_url, "via-b@example.test", {"bob"})
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        nodes = sorted(
            conn.execute(select(RecipientFilter.node).where(RecipientFilter.day == day_of(time.time()))).scalars()
        )
    engine.dispose()
    assert nodes == ["relay-0", "relay-1"]


def test_expiry_of_the_record(db_url):
    """On both databases: a day's filter is found until the window passes it, then pruned."""
    engine = make_engine(db_url)
    upgrade(engine)
    now = 1_795_000_000.0
    retention = 14 * DAY
    rec = RecipientRecorder(10000, 1e-6)
    rec.add("t", "old@example.test", now)
    recipient_days.flush(engine, rec, "n1", rec.take(), now)
    rec.add("t", "old@example.test", now + 10)  # a second flush of the same day: an upsert
    rec.add("t", "new@example.test", now + 10 * DAY)
    recipient_days.flush(engine, rec, "n1", rec.take(), now + 10 * DAY)
    lookup = recipient_days.StoredRecipients(engine, retention)
    end = (day_of(now) + 1) * DAY + retention
    assert lookup.tenants_for("old@example.test", end - 1) == {"t"}
    assert recipient_days.prune(engine, end - 1, retention) == 0
    assert lookup.tenants_for("old@example.test", end) == frozenset()
    assert recipient_days.prune(engine, end, retention) == 1
    assert lookup.tenants_for("new@example.test", end) == {"t"}
    assert recipient_days.StoredRecipients(engine, retention).tenants_for("old@example.test", end - 1) == frozenset()
    engine.dispose()


def test_a_bounce_right_after_the_rcpt_is_corroborated_before_any_flush(tmp_path):
    """A remote MX that refuses at RCPT makes Postfix bounce within a second: the hand-off service
    in `sidecar serve` also asks this relay's own unflushed record, so the bounce suppresses."""
    from tests.harness.ingest import HARD, ingest, q, variant

    db = tmp_path / "sidecar.db"
    sc = SidecarProcess(tmp_path, f"sqlite:///{db}", '[recipients]\nflush_interval = "1h"\nnode = "relay-1"\n')
    try:
        sc.start()
        time.sleep(0.3)  # past the flush TimerService's first (immediate) run
        c = sc.connect()
        assert c.ask(rcpt(recipient="Hard1@example.test", sasl_username="app")) == "DUNNO"
        r = ingest(db, variant(HARD, 1), config=sc.config)
        assert r.returncode == 0, r.stderr
        assert q(db, "SELECT address, reason FROM suppressions WHERE active") == [("hard1@example.test", "hard bounce")]
        assert q(db, "SELECT count(*) FROM recipient_filters") == [(0,)]  # nothing flushed yet
    finally:
        sc.stop()
