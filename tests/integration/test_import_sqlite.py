"""The SQLite import's connection settings: raised page cache and no automatic checkpoint while it
writes, both restored afterwards (the pool keeps the connection), and the WAL checkpointed at the end."""

from __future__ import annotations

import io
import os
import sqlite3

from sidecar.store.db import make_engine, upgrade
from sidecar.suppression.store import SuppressionStore


def test_import_restores_the_connection_and_checkpoints(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine)
    with engine.connect() as conn:
        before = [conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("cache_size", "wal_autocheckpoint")]
    csv_in = "address,reason\n" + "".join(f"u{i}@example.test,imported\n" for i in range(1200))
    assert SuppressionStore(engine).import_csv(io.StringIO(csv_in), batch=500) == 1200
    assert engine.pool.checkedout() == 0
    with engine.connect() as conn:
        after = [conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("cache_size", "wal_autocheckpoint")]
    assert after == before
    assert os.path.getsize(f"{tmp_path}/s.db-wal") == 0  # checkpointed and truncated
    with sqlite3.connect(tmp_path / "s.db") as c:
        assert c.execute("SELECT count(*) FROM suppressions").fetchone() == (1200,)
        assert c.execute("SELECT count(*) FROM changes").fetchone() == (1200,)
    engine.dispose()


def test_staged_rows_keep_their_values_and_the_file_order(tmp_path, monkeypatch) -> None:
    """Rows of both staged forms (with and without times of their own) interleaved, more
    combinations than the memo keeps, a key repeated: every value as checked, the feed in file
    order, the last row of a key wins."""
    from sidecar.suppression import bulk_sqlite

    monkeypatch.setattr(bulk_sqlite, "COMBO_MEMO", 3)
    monkeypatch.setattr(bulk_sqlite, "STAGE_BATCH", 4)
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine)
    now = 1_800_000_000.25
    lines = ["address,tenant,reason,category,created_at,expires_at,source,note"]
    want = {}
    for i in range(40):
        created = "2026-01-02T03:04:05Z" if i % 3 == 1 else ""
        expires = "2030-01-01T00:00:00Z" if i % 5 == 2 else ""
        note = f"n{i % 7}" if i % 2 else ""
        addr, tenant = f"u{i % 30}@x.test", f"t{i % 30 % 4}"  # u0..u9 twice: the later row wins
        lines.append(f"{addr},{tenant},r{i % 6},c{i % 2},{created},{expires},s{i % 3},{note}")
        want[(addr, tenant)] = (
            f"r{i % 6}",
            f"c{i % 2}",
            f"s{i % 3}",
            note or None,
            1767323045.0 if created else now,
            1893456000.0 if expires else None,
        )
    store = SuppressionStore(engine)
    assert store.import_csv(io.StringIO("\n".join(lines) + "\n"), batch=7, now=now) == 40
    with sqlite3.connect(tmp_path / "s.db") as c:
        got = {
            (a, t): tuple(rest)
            for a, t, *rest in c.execute(
                "SELECT address, tenant, reason, category, source, note, created_at, expires_at FROM suppressions"
            )
        }
        feed = c.execute("SELECT address, tenant, reason FROM changes ORDER BY id").fetchall()
    assert got == want and len(got) == 30
    assert feed == [(f"u{i % 30}@x.test", f"t{i % 30 % 4}", f"r{i % 6}") for i in range(40)]
    assert not list(sqlite3.connect(tmp_path / "s.db").execute("PRAGMA database_list"))[1:]  # nothing attached
    engine.dispose()


def test_uniform_batches_and_row_by_row_batches_stage_in_file_order(tmp_path, monkeypatch) -> None:
    """Batches checked whole (sidecar.suppression.batch_check) bind their addresses straight from
    the list; between them, batches checked row by row: the values and the feed in file order."""
    from sidecar.suppression import batch_check, rows

    monkeypatch.setattr(rows, "CHECK_BATCH", 5)
    whole = []
    real = batch_check.fast_batch
    monkeypatch.setattr(batch_check, "fast_batch", lambda *a: whole.append(r := real(*a)) or r)
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine)
    now = 1_800_000_000.5
    lines, want = ["address,tenant,reason,expires_at"], {}
    for i in range(60):
        addr = f"u{i % 50}@x.test"  # u0..u9 again at the end: the later row wins
        if (i // 10) % 2 == 0:  # ten alike
            lines.append(f"{addr},,bounced,")
            want[addr] = ("", "bounced", None)
        else:  # ten that differ
            lines.append(f"{addr},t{i % 3},r{i % 2},{'2031-01-01T00:00:00Z' if i % 4 == 0 else ''}")
            want[addr] = (f"t{i % 3}", f"r{i % 2}", 1924992000.0 if i % 4 == 0 else None)
    store = SuppressionStore(engine)
    assert store.import_csv(io.StringIO("\n".join(lines) + "\n"), batch=7, now=now) == 60
    assert sum(w is not None for w in whole) >= 4
    with sqlite3.connect(tmp_path / "s.db") as c:
        got = {
            a: (t, r, e)
            for a, t, r, e in c.execute("SELECT address, tenant, reason, expires_at FROM suppressions").fetchall()
        }
        feed = [a for (a,) in c.execute("SELECT address FROM changes ORDER BY id")]
        (created,) = c.execute("SELECT DISTINCT created_at FROM suppressions").fetchone()
    assert got == want and feed == [f"u{i % 50}@x.test" for i in range(60)] and created == now
    engine.dispose()
