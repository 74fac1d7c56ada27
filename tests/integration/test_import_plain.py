"""PostgreSQL import into an empty table: plain INSERTs while no key conflicts, the upsert for a
chunk that meets a key already there (an earlier chunk's, another writer's) and for the rest;
the result is the upsert's either way: the last row of a key wins, every row is in the feed."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select, text

from sidecar.store.db import make_engine, upgrade
from sidecar.store.models import Change, Suppression
from sidecar.suppression import bulk_pg
from sidecar.suppression.store import SuppressionStore


@pytest.fixture
def spied(monkeypatch):
    tried = []
    real = bulk_pg.write_part

    def spy(conn, first, end, now, plain=False):
        tried.append(plain)
        return real(conn, first, end, now, plain)

    monkeypatch.setattr(bulk_pg, "write_part", spy)
    return tried


def _state(engine):
    with engine.connect() as conn:
        rows = dict(conn.execute(select(Suppression.address, Suppression.reason)).all())
        feed = conn.execute(select(func.count()).select_from(Change)).scalar_one()
    return rows, feed


def test_plain_inserts_until_a_later_chunk_repeats_a_key(pg_url, spied) -> None:
    engine = make_engine(pg_url)
    upgrade(engine)
    lines = [f"u{i}@x.test,first" for i in range(30)] + ["u3@x.test,again"] + [f"v{i}@x.test,r" for i in range(19)]
    n = SuppressionStore(engine).import_csv(io.StringIO("address,reason\n" + "\n".join(lines) + "\n"), batch=10)
    assert n == 50
    assert spied == [True, True, True, True, False]  # chunk 4 (u3 again) conflicts: upserted, and the rest
    rows, feed = _state(engine)
    assert len(rows) == 49 and rows["u3@x.test"] == "again" and rows["u29@x.test"] == "first" and feed == 50
    n = SuppressionStore(engine).import_csv(io.StringIO("address,reason\nu5@x.test,second\n"))
    assert spied[5:] == [False]  # not empty: the upsert from the start
    assert _state(engine)[0]["u5@x.test"] == "second"
    engine.dispose()


def test_a_key_another_writer_added_meanwhile_is_upserted(pg_url, monkeypatch) -> None:
    engine = make_engine(pg_url)
    upgrade(engine)
    store = SuppressionStore(engine)
    real, results = bulk_pg.write_part, []

    def other_writer_first(conn, first, end, now, plain=False):
        if first == 11:  # between chunks 1 and 2: a bounce records u15
            with engine.begin() as other:
                other.execute(
                    text(
                        "INSERT INTO suppressions (address, tenant, reason, source, active, created_at, updated_at) "
                        "VALUES ('u15@x.test', '', 'bounce', 'bounce', true, 1, 1)"
                    )
                )
        results.append(real(conn, first, end, now, plain))
        return results[-1]

    monkeypatch.setattr(bulk_pg, "write_part", other_writer_first)
    csv_in = "address,reason\n" + "".join(f"u{i}@x.test,imported\n" for i in range(30))
    assert store.import_csv(io.StringIO(csv_in), batch=10) == 30
    assert results == [True, False, False]
    rows, feed = _state(engine)
    assert len(rows) == 30 and set(rows.values()) == {"imported"} and feed == 30
    engine.dispose()
