"""The store on SQLite and on PostgreSQL: same code, same tests."""

import io
import time

import pytest
from sqlalchemy import inspect

from sidecar.store import counters
from sidecar.store.db import current_revision, make_engine, upgrade
from sidecar.suppression.address import AddressError
from sidecar.suppression.changefeed import ChangeCursor
from sidecar.suppression.store import SuppressionStore


@pytest.fixture
def store(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    yield SuppressionStore(engine)
    engine.dispose()


def test_upgrade_creates_schema_and_is_idempotent(db_url):
    engine = make_engine(db_url)
    upgrade(engine, "0001")
    assert current_revision(engine) == "0001"
    upgrade(engine)
    upgrade(engine)
    assert current_revision(engine) is not None
    tables = set(inspect(engine).get_table_names())
    assert {"suppressions", "changes", "events", "raw_messages", "ratelimit_counters"} <= tables
    engine.dispose()


def test_add_is_upsert_and_feeds_changes(store):
    store.add("Foo@Example.COM", reason="hard bounce")
    store.add("foo@example.com", reason="complaint", tenant="shop")
    store.add("foo@example.com", reason="manual")
    rows = store.get("FOO@example.com")
    assert [(r.tenant, r.reason) for r in rows] == [("", "manual"), ("shop", "complaint")]
    assert store.count() == 2
    assert store.remove("foo@EXAMPLE.com")
    assert not store.remove("foo@example.com")
    assert store.count() == 1
    feed = store.changes_since(0)
    assert [(r.address, r.tenant, r.active) for r in feed] == [
        ("foo@example.com", "", True), ("foo@example.com", "shop", True), ("foo@example.com", "", True),
        ("foo@example.com", "", False)]
    cursor = ChangeCursor(0)
    assert len(cursor.accept(feed, time.time())) == 4 and cursor.low == feed[-1].id


def test_bad_address_names_the_problem(store):
    with pytest.raises(AddressError, match="no '@'"):
        store.add("nobody", reason="x")
    with pytest.raises(AddressError, match="not a valid domain"):
        store.add("a@example..com", reason="x")


def test_import_export_and_load(store):
    now = time.time()
    csv_in = "address,tenant,reason,expires_at\n" + "".join(
        f"user{i}@Example.test,{'shop' if i % 2 else ''},hard bounce,{'' if i % 3 else '2000-01-01'}\n"
        for i in range(12000))
    assert store.import_csv(io.StringIO(csv_in), batch=5000) == 12000
    # duplicate rows in one file: last one wins
    assert store.import_csv(io.StringIO("address,reason\na@x.test,one\nA@x.test,two\n")) == 2
    assert [r.reason for r in store.get("a@x.test")] == ["two"]
    last, rows = store.load_active(now)
    assert len(rows) == 12001 - 4000   # the ones expired in 2000 are not loaded
    assert last >= 12002
    out = io.StringIO()
    assert store.export_csv(out) == 12001
    assert out.getvalue().splitlines()[0].startswith("address,tenant,reason,category,created_at,expires_at")
    page = list(store.iter_rows(tenant="shop", address_prefix="user1", limit=5))
    assert len(page) == 5 and all(r.tenant == "shop" and r.address.startswith("user1") for r in page)


def test_import_reports_the_bad_line(store):
    with pytest.raises(ValueError, match="line 3"):
        store.import_csv(io.StringIO("address\nok@x.test\nbroken\n"))
    with pytest.raises(ValueError, match="unknown columns: colour"):
        store.import_csv(io.StringIO("address,colour\nok@x.test,red\n"))


def test_counters_roundtrip_and_reset(store):
    engine = store.engine
    now = time.time()
    counters.save_counters(engine, {"r:a#0": now + 60, "r:a#1": now + 600, "r:b#0": now + 5}, now)
    counters.save_counters(engine, {"r:a#0": now + 120, "r:b#0": None}, now)
    assert dict(counters.load_counters(engine, now)) == {"r:a#0": now + 120, "r:a#1": now + 600}
    assert len(counters.counters_for(engine, "r:a")) == 2
    assert counters.reset_key(engine, "r:a", now) == 2
    assert counters.load_counters(engine, now) == []
    assert store.changes_since(0)[-1].kind == "limit-reset"


def test_retention_keeps_what_explains_a_suppression(store):
    from sqlalchemy import func, select

    from sidecar.store import retention
    from sidecar.store.models import Event, RawMessage

    engine = store.engine
    now = time.time()
    old = now - 100 * 86400
    with engine.begin() as conn:
        ids = []
        for i in range(3):
            mid = conn.execute(RawMessage.__table__.insert().values(
                sha256=f"{i:064d}", received_at=old, size=1, content=b"x", state="parsed")).inserted_primary_key[0]
            ids.append(conn.execute(Event.__table__.insert().values(
                created_at=old, kind="bounce", address=f"a{i}@x.test", tenant="",
                message_id=mid)).inserted_primary_key[0])
        conn.execute(Event.__table__.insert().values(created_at=now, kind="bounce", address="new@x.test", tenant=""))
        store.add("a0@x.test", reason="hard bounce", cause_event_ids=[ids[0]], conn=conn)
    assert retention.prune(engine, now, 90) == (2, 2)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Event)).scalar_one() == 2
        assert conn.execute(select(func.count()).select_from(RawMessage)).scalar_one() == 1
    assert retention.prune(engine, now, 0) == (0, 0)
