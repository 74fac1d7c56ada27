"""Reputation on a real SQLite file: counts, evaluation, attribution by the ingester, the CLI,
the API and the running policy server's levels."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select

from sidecar.config import ReputationConfig
from sidecar.reputation import store
from sidecar.reputation.evaluate import ReputationError, change, evaluate_all
from sidecar.reputation.levels import HOUR, LevelMachine
from sidecar.store.db import make_engine, upgrade
from sidecar.store.models import Event, ReputationMessage
from sidecar.webhooks.outbox import event_payload
from tests.harness.api import ApiServer, call
from tests.harness.ingest import HARD, ingest, q, recorded, variant
from tests.harness.policy import rcpt
from tests.harness.sidecar import run_cli

WRITE, READ = "rep-write-token", "rep-read-token"


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "s.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    return path, engine


def test_counts_from_two_writers_add_up_and_evaluation_escalates_once(db):
    path, engine = db
    other = make_engine(f"sqlite:///{path}")  # a second relay on the same store
    now = time.time()
    hour = store.hour_of(now)
    store.save(engine, {("acme", hour): (300, 0, 0)}, [])
    store.save(other, {("acme", hour): (300, 0, 0), ("calm", hour): (500, 0, 0)}, [])
    with engine.begin() as conn:
        store.add_counts(conn, {("acme", hour): (0, 60, 0)})
    with engine.connect() as conn:
        assert [(b.sends, b.hard_bounces) for b in store.buckets(conn, now - HOUR)["acme"]] == [(600, 60)]
    machine = LevelMachine(ReputationConfig())
    ev = evaluate_all(engine, machine, now)
    assert [(c.tenant, c.before, c.after) for c in ev.changes] == [("acme", 1, 3)]  # 10%: lower bound 7.9%
    assert evaluate_all(other, machine, now + 1).changes == []  # already there: nothing twice
    assert store.levels(engine) == {"acme": 3}
    audits = q(path, "SELECT tenant, action, decision FROM events WHERE kind = 'reputation'")
    assert audits == [("acme", "changed", "level 1 -> 3")]


def test_compare_and_set_drops_a_stale_change(db):
    _, engine = db
    now = time.time()
    change(engine, "acme", "set-level", "ops", "test", now, to=2)
    with engine.connect() as conn:
        stale = store.states(conn)["acme"]
    change(engine, "acme", "set-level", "ops", "test", now, to=3)
    with engine.begin() as conn:
        assert not store.write_state(conn, "acme", stale, stale.state, "late", now)
    assert store.levels(engine) == {"acme": 3}


def test_operator_changes_are_checked_and_audited_and_webhooked(db):
    path, engine = db
    now = time.time()
    with pytest.raises(ReputationError, match="nothing to release"):
        change(engine, "acme", "release", "ops", "why", now, to=3)
    with pytest.raises(ReputationError, match="reason"):
        change(engine, "acme", "set-level", "ops", " ", now, to=5)
    change(engine, "acme", "set-level", "ops", "complaints from Gmail", now, to=5)
    c = change(engine, "acme", "release", "ops", "list cleaned", now + 10, to=3)
    assert (c.before, c.after) == (5, 3)
    with engine.connect() as conn:
        st = store.states(conn)["acme"].state
        rows = conn.execute(select(Event.__table__).where(Event.kind == "reputation").order_by(Event.id)).all()
    assert st.window_start == now + 10  # the window restarts at the release
    etype, _, body = event_payload(rows[-1])
    assert etype == "reputation.released"
    assert body["data"]["from"] == 5 and body["data"]["to"] == 3 and body["data"]["by"] == "ops"
    assert body["data"]["why"] == "list cleaned"
    assert event_payload(rows[0])[0] == "reputation.level_changed"


def test_ingester_counts_newly_suppressed_hard_bounces_against_our_tenant(tmp_path):
    db = tmp_path / "s.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    # the record names two tenants for the address; the DSN's original queue id picks bob
    with engine.begin() as conn:
        conn.execute(
            ReputationMessage.__table__.insert(),
            [{"queue_id": "8AFA3224909", "tenant": "bob", "node": "n", "held": False, "created_at": time.time()}],
        )
    prelude = recorded(("alice", "hard1@example.test"), ("bob", "hard1@example.test"))
    assert ingest(db, HARD.read_bytes(), python_prelude=prelude).returncode == 0
    assert q(db, "SELECT tenant, sends, hard_bounces, complaints FROM reputation_counts") == [("bob", 0, 1, 0)]
    # the same address again (a repeat or a forgery): already suppressed, counts nothing more
    assert ingest(db, variant(HARD, 1), python_prelude=prelude).returncode == 0
    assert q(db, "SELECT sum(hard_bounces) FROM reputation_counts") == [(1,)]


def test_ingester_without_our_data_counts_nothing(tmp_path):
    db = tmp_path / "s.db"
    prelude = recorded(("alice", "hard1@example.test"), ("bob", "hard1@example.test"))  # ambiguous, no queue id
    assert ingest(db, HARD.read_bytes(), python_prelude=prelude).returncode == 0
    assert q(db, "SELECT count(*) FROM events WHERE decision LIKE 'suppress-hard%'") == [(1,)]
    assert q(db, "SELECT count(*) FROM reputation_counts") == [(0,)]


def one_line_error(res, needle):
    assert res.returncode == 2, (res.stdout, res.stderr)
    err = res.stderr.strip()
    assert "\n" not in err and "Traceback" not in err and needle in err, err


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ApiServer(
        tmp_path_factory.mktemp("reputation"),
        f'[[api.tokens]]\ntoken = "{WRITE}"\nscope = "write"\nname = "ops-bot"\n'
        f'[[api.tokens]]\ntoken = "{READ}"\nscope = "read"\n'
        '[reputation]\nsync_interval = "0.2s"\n',
    )
    s.start()
    yield s
    s.stop()


def wait_for(f, timeout=10.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = f()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.mark.parametrize("mode", ["db", "api"])
def test_cli_set_release_list_show_and_the_policy_server_follows(server, mode):
    tenant = f"cli-{mode}"
    extra = ("--api", server.url, "--token", WRITE) if mode == "api" else ()

    def cli(*args):
        return run_cli("reputation", *args, *extra, db=server.db, config=server.config, check=False)

    one_line_error(cli("release", tenant, "--reason", "r"), "nothing to release")
    one_line_error(cli("show", "bad\x01tenant"), "tenant")
    res = cli("set-level", tenant, "5", "--reason", "spam complaints", "--by", "carol")
    assert res.returncode == 0 and "level 1 -> 5" in res.stdout, res.stderr
    client = server.connect()
    req = rcpt(sasl_username=tenant, recipient="x@example.test")
    assert wait_for(lambda: client.ask(req) == "DEFER_IF_PERMIT 4.7.1 sending paused")
    rows = [json.loads(line) for line in cli("list", "--json").stdout.splitlines()]
    assert {"tenant": tenant, "level": 5} == {
        k: v for k, v in next(r for r in rows if r["tenant"] == tenant).items() if k in ("tenant", "level")
    }
    res = cli("release", tenant, "--reason", "cleaned up", "--json")
    assert json.loads(res.stdout)["to"] == 3, res.stderr
    assert wait_for(lambda: client.ask(req) == "DUNNO")
    shown = json.loads(cli("show", tenant, "--json").stdout)
    assert shown["level"] == 3 and shown["name"] == "throttle" and "cleaned up" in shown["reason"]
    who = "carol" if mode == "db" else "carol (api token ops-bot)"
    audits = q(
        server.db.removeprefix("sqlite:///"),  # type: ignore[arg-type]
        "SELECT diagnostic FROM events WHERE kind = 'reputation' AND tenant = ? ORDER BY id",
        tenant,
    )
    assert json.loads(audits[0][0])["by"] == who


def test_api_checks_scope_and_body(server):
    st, body = call(server.url, "POST", "/reputation/api-t/level", READ, {"level": 4, "reason": "x"})
    assert st == 403
    st, body = call(server.url, "POST", "/reputation/api-t/level", WRITE, {"level": 9, "reason": "x"})
    assert st == 400 and body["error"]["field"] == "level"
    st, body = call(server.url, "POST", "/reputation/api-t/level", WRITE, {"level": 4})
    assert st == 400 and body["error"]["field"] == "reason"
    st, body = call(server.url, "POST", "/reputation/api-t/level", WRITE, {"level": 4, "reason": "review"})
    assert st == 200 and body["to"] == 4
    st, body = call(server.url, "POST", "/reputation/api-t/release", WRITE, {"level": 4, "reason": "x"})
    assert st == 400 and body["error"]["field"] == "level"
    st, body = call(server.url, "GET", "/reputation/api-t", READ)
    assert st == 200 and body["level"] == 4
    st, body = call(server.url, "POST", "/reputation/api-t/exempt", WRITE, {"reason": "trusted sender"})
    assert st == 200 and body["to"] == 1
    st, body = call(server.url, "GET", "/reputation", READ)
    assert any(r["tenant"] == "api-t" and r["exempt"] for r in body["items"])


def test_prune_keeps_the_window_and_held_messages(db):
    path, engine = db
    now = time.time()
    old, recent = store.hour_of(now - 8 * 86400), store.hour_of(now)
    store.save(
        engine,
        {("acme", old): (10, 0, 0), ("acme", recent): (20, 0, 0)},
        [("OLD1", "acme", "n", False, now - 8 * 86400), ("OLDHELD", "acme", "n", True, now - 8 * 86400)],
    )
    assert store.prune(engine, now, 7 * 86400) == (1, 1)
    assert q(path, "SELECT hour, sends FROM reputation_counts") == [(recent, 20)]
    assert q(path, "SELECT queue_id FROM reputation_messages") == [("OLDHELD",)]


def test_release_of_held_mail_alone_is_audited_without_a_level_change(db):
    path, engine = db
    now = time.time()
    change(engine, "acme", "set-level", "ops", "x", now, to=3)
    with pytest.raises(ReputationError, match="nothing to release"):
        change(engine, "acme", "release", "ops", "x", now, to=3)
    c = change(engine, "acme", "release", "ops", "held ones too", now, to=3, held=True)
    assert (c.before, c.after) == (3, 3)
    assert q(path, "SELECT action, decision FROM events WHERE kind = 'reputation' ORDER BY id")[-1] == (
        "released",
        "level 3 -> 3",
    )


def test_held_summary_counts_this_relays_held_mail_and_its_oldest(db):
    """What the "held mail older than a day" alert reads: held, not released, on this relay only."""
    _, engine = db
    assert store.held_summary(engine, "relay1") == (0, None)
    store.save(
        engine,
        {},
        [
            ("AAA1", "acme", "relay1", True, 1000.0),
            ("AAA2", "acme", "relay1", True, 5000.0),
            ("AAA3", "acme", "relay1", False, 10.0),  # accepted, not held
            ("BBB1", "acme", "relay2", True, 100.0),  # another relay's
        ],
    )
    assert store.held_summary(engine, "relay1") == (2, 1000.0)
    with engine.begin() as conn:
        store.clear_held(conn, "acme", "relay1")
    assert store.held_summary(engine, "relay1") == (0, None)
