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
        ("foo@example.com", "", True),
        ("foo@example.com", "shop", True),
        ("foo@example.com", "", True),
        ("foo@example.com", "", False),
    ]
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
        for i in range(12000)
    )
    assert store.import_csv(io.StringIO(csv_in), batch=5000) == 12000
    # duplicate rows in one file: last one wins
    assert store.import_csv(io.StringIO("address,reason\na@x.test,one\nA@x.test,two\n")) == 2
    assert [r.reason for r in store.get("a@x.test")] == ["two"]
    last, rows = store.load_active(now)
    assert len(rows) == 12001 - 4000  # the ones expired in 2000 are not loaded
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
            mid = conn.execute(
                RawMessage.__table__.insert().values(
                    sha256=f"{i:064d}", received_at=old, size=1, content=b"x", state="parsed"
                )
            ).inserted_primary_key[0]
            ids.append(
                conn.execute(
                    Event.__table__.insert().values(
                        created_at=old, kind="bounce", address=f"a{i}@x.test", tenant="", message_id=mid
                    )
                ).inserted_primary_key[0]
            )
        conn.execute(Event.__table__.insert().values(created_at=now, kind="bounce", address="new@x.test", tenant=""))
        store.add("a0@x.test", reason="hard bounce", cause_event_ids=[ids[0]], conn=conn)
    assert retention.prune(engine, now, 90) == (2, 2)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Event)).scalar_one() == 2
        assert conn.execute(select(func.count()).select_from(RawMessage)).scalar_one() == 1
    assert retention.prune(engine, now, 0) == (0, 0)


def _feed(store, after=0):
    """The whole change feed from ``after``, read in pages as a running server reads it."""
    cursor, out = ChangeCursor(after), []
    while True:
        page = store.changes_since(cursor.low, limit=7000)
        fresh = cursor.accept(page, time.time())
        out += fresh
        if not fresh:
            return out


@pytest.mark.parametrize("batch", [None, 3])
def test_import_keeps_every_column_and_feeds_each_row_in_file_order(store, batch):
    store.add("old@x.test", reason="manual", note="before")
    start = store.changes_since(0)[-1].id
    csv_in = (
        "address,tenant,reason,category,created_at,expires_at,source,note\n"
        'a@X.test,,hard bounce,mailbox,2020-01-02T03:04:05Z,,api,"tab here, ""quoted"""\n'
        "b@x.test,shop,,,,2999-01-01,,\\N\n"
        "A@x.test,,complaint,,,,,\n"
        "old@x.test,,hard bounce,,,,,\n"
        "c@x.test,,x,,,,,\n"
        "a@x.test,,again,,,,,\n"
    )
    assert store.import_csv(io.StringIO(csv_in), default_reason="imported", batch=batch) == 6
    (a,) = store.get("a@x.test")
    assert (a.reason, a.category, a.source, a.note) == ("again", None, "import", None)
    (b,) = store.get("b@x.test")
    assert (b.tenant, b.reason, b.note, b.expires_at) == ("shop", "imported", "\\N", 32472144000.0)
    (old,) = store.get("old@x.test")
    assert (old.reason, old.note) == ("hard bounce", None)
    feed = _feed(store, start)
    assert [(r.address, r.tenant, r.reason) for r in feed] == [
        ("a@x.test", "", "hard bounce"),
        ("b@x.test", "shop", "imported"),
        ("a@x.test", "", "complaint"),
        ("old@x.test", "", "hard bounce"),
        ("c@x.test", "", "x"),
        ("a@x.test", "", "again"),
    ]
    assert feed[0].created_at == 1577934245.0 and all(r.active and r.kind == "suppression" for r in feed)


def test_import_category_note_and_source_round_trip(store):
    store.import_csv(io.StringIO('address,category,source,note\nn@x.test,policy,crm,"a, b c\\\\d"\n'))
    (n,) = store.get("n@x.test")
    assert (n.category, n.source, n.note) == ("policy", "crm", "a, b c\\\\d")


def test_large_import_reaches_a_reader_of_the_change_feed(store):
    """Every imported row is in the feed a running server reads (several COPY chunks on PostgreSQL)."""
    n = 60_000
    csv_in = "address\n" + "".join(f"u{i}@d{i % 7}.test\n" for i in range(n))
    shown = []
    assert store.import_csv(io.StringIO(csv_in), batch=25_000, progress=shown.append) == n
    assert shown == [25_000, 50_000, 60_000]
    feed = _feed(store)
    assert len(feed) == n and {r.address for r in feed} == {f"u{i}@d{i % 7}.test" for i in range(n)}
    assert store.count() == n


def test_a_running_server_learns_every_row_of_an_import(pg_url, tmp_path):
    """`sidecar suppressions import` (several COPY chunks) while a server on the same PostgreSQL
    reads the change feed and another writer adds suppressions in between: all of them apply."""
    import threading

    from tests.harness.policy import rcpt
    from tests.harness.sidecar import SidecarProcess, run_cli

    n = 120_000
    csv_path = tmp_path / "in.csv"
    csv_path.write_text("address,reason\n" + "".join(f"imp{i}@d{i % 11}.test,hard bounce\n" for i in range(n)))
    sc = SidecarProcess(tmp_path / "serve", pg_url, '[ingest]\nsocket = ""\n')
    sc.start()
    engine = make_engine(pg_url)
    other = SuppressionStore(engine)
    stop = threading.Event()
    added: list[str] = []

    def writer() -> None:
        while not stop.is_set():
            added.append(f"side{len(added)}@x.test")
            other.add(added[-1], reason="manual")
            time.sleep(0.01)

    t = threading.Thread(target=writer)
    t.start()
    try:
        try:
            out = run_cli("suppressions", "import", str(csv_path), "--json", "--no-progress", db=pg_url)
            assert '"imported": 120000' in out.stdout
        finally:
            stop.set()
            t.join()
        want = n + len(added)
        t0 = time.monotonic()
        while True:
            gauge = next(
                float(line.split()[-1])
                for line in sc.metrics().splitlines()
                if line.startswith("sidecar_suppressions ")
            )
            if gauge == want or time.monotonic() - t0 > 15:
                break
            time.sleep(0.1)
        assert gauge == want and len(added) > 5
        c = sc.connect()
        for a in ("imp0@d0.test", f"imp{n - 1}@d{(n - 1) % 11}.test", added[0], added[-1]):
            assert c.ask(rcpt(recipient=a)).startswith("550"), a
        c.close()
    finally:
        sc.stop()
        engine.dispose()
