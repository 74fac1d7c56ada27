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
