"""A large import drops the suppressions table's secondary indexes and builds them again at its end;
a small one into a large table keeps them; and an import killed half-way leaves them to the next
`sidecar db upgrade` (or serve, or any command), which re-creates them."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import time

import pytest
from sqlalchemy import func, inspect, select

from sidecar.store.db import make_engine, upgrade
from sidecar.store.indexes import BULK_INDEXES
from sidecar.store.models import Change, Suppression
from sidecar.suppression.bulk import REBUILD_MIN_ROWS
from sidecar.suppression.store import SuppressionStore
from tests.harness.sidecar import BIN, run_cli

NAMES = {str(ix.name) for ix in BULK_INDEXES}


def _indexes(engine) -> set[str]:
    with engine.connect() as conn:
        return {ix["name"] for ix in inspect(conn).get_indexes(Suppression.__tablename__)} & NAMES


def _csv(n: int, start: int = 0) -> str:
    return "address,tenant,reason\n" + "".join(f"u{i}@d{i % 7}.test,t{i % 3},r{i % 5}\n" for i in range(start, n))


def test_the_declared_indexes_are_the_five_the_api_lists_use() -> None:
    assert {
        "ix_suppressions_created_at",
        "ix_suppressions_reason_id",
        "ix_suppressions_category_id",
        "ix_suppressions_tenant_id",
        "ix_suppressions_tenant_reason_id",
    } == NAMES


def test_a_large_import_rebuilds_the_indexes_and_a_small_one_keeps_them(db_url, caplog) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    store = SuppressionStore(engine)
    caplog.set_level(logging.INFO, logger="sidecar.store")
    n = REBUILD_MIN_ROWS + 1
    assert store.import_csv(io.StringIO(_csv(n)), batch=20_000) == n
    assert "indexes dropped: True" in caplog.text and "indexes rebuilt" in caplog.text
    assert _indexes(engine) == NAMES
    caplog.clear()
    # the same rows again (upserts, nothing new) and 1 more: the table is as large as the import
    assert store.import_csv(io.StringIO(_csv(n + 1)), batch=20_000) == n + 1
    assert "indexes dropped: True" in caplog.text
    caplog.clear()
    assert store.import_csv(io.StringIO(_csv(n + 10, n + 1))) == 9  # below the threshold
    assert "indexes dropped: False" in caplog.text and "indexes rebuilt" not in caplog.text
    assert _indexes(engine) == NAMES
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Suppression).where(Suppression.active)).scalar() == n + 10
        assert conn.execute(select(func.count(func.distinct(Change.address)))).scalar() == n + 10
        # the rebuilt indexes answer the API's filtered lists
        q = select(func.count()).select_from(Suppression).where(Suppression.tenant == "t1", Suppression.reason == "r2")
        assert conn.execute(q).scalar() == len([i for i in range(n + 10) if i % 3 == 1 and i % 5 == 2])
    engine.dispose()


def test_an_import_that_fails_half_way_still_rebuilds_the_indexes(tmp_path, monkeypatch) -> None:
    from sidecar.suppression import bulk, bulk_sqlite

    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine)
    calls = []
    real = bulk_sqlite.write_part

    def fail_second(conn, first, end, now):  # type: ignore[no-untyped-def]
        calls.append(end - first)
        if len(calls) == 2:
            raise OSError("disk gone")
        real(conn, first, end, now)

    monkeypatch.setattr(bulk_sqlite, "write_part", fail_second)
    try:
        SuppressionStore(engine).import_csv(io.StringIO(_csv(REBUILD_MIN_ROWS)), batch=30_000)
    except bulk.ImportIncomplete as e:
        assert "committing 30,000 of 50,000 rows" in str(e)
    else:
        raise AssertionError("the import did not fail")
    assert _indexes(engine) == NAMES
    engine.dispose()


def _wait_until_half_way(proc: subprocess.Popen, engine) -> None:
    """Until the import's indexes are gone and some rows are committed (not all)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        assert proc.poll() is None, "the import finished before it could be killed half-way"
        with engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(Suppression)).scalar()
        if rows and not _indexes(engine):
            return
        time.sleep(0.02)
    raise AssertionError("the import never reached its writes")


def test_indexes_come_back_after_an_import_killed_half_way(db_url, tmp_path) -> None:
    n = 150_000  # three chunks of 50,000: killed after the first commits
    src = tmp_path / "in.csv"
    src.write_text(_csv(n))
    run_cli("db", "upgrade", db=db_url)
    engine = make_engine(db_url)
    proc = subprocess.Popen(
        [str(BIN), "suppressions", "import", str(src), "--no-progress", "--db", db_url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_half_way(proc, engine)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with engine.connect() as conn:
        assert 0 < conn.execute(select(func.count()).select_from(Suppression)).scalar() < n
    assert _indexes(engine) == set()  # killed between dropping and rebuilding them
    out = run_cli("db", "upgrade", db=db_url)
    assert "re-creating 5 missing index(es)" in out.stderr
    assert _indexes(engine) == NAMES
    engine.dispose()


def test_a_bad_last_row_of_a_large_file_writes_nothing(db_url) -> None:
    """The rows are staged (COPY on PostgreSQL) while they are checked: a bad row at the very end
    still leaves the database as it was, its indexes too, and the next import works."""
    engine = make_engine(db_url)
    upgrade(engine)
    store = SuppressionStore(engine)
    n = REBUILD_MIN_ROWS + 5
    with pytest.raises(ValueError, match=f"^line {n + 2}: address: "):
        store.import_csv(io.StringIO(_csv(n) + "not-an-address,t,r\n"))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Suppression)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(Change)).scalar() == 0
    assert _indexes(engine) == NAMES
    assert store.import_csv(io.StringIO(_csv(10))) == 10
    engine.dispose()
