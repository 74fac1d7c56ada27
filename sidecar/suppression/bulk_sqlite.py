"""The SQLite side of a bulk import: the checked rows are staged in a private temporary database
attached to the import's own connection, then written from it in chunks by SQLite alone.

``ATTACH DATABASE ''`` gives the connection an anonymous temporary file that nobody else can
open and that disappears with the connection (or the process), so a bad row found late (the
import then writes nothing) or a process killed half-way leaves nothing behind; writing to it
takes no lock on the real database. Binding parameters one by one costs more than SQLite's own
writes (a million rows of eight columns: ~4.5 s of binding, against ~2.5 s for the upserts
themselves from a staged table), so each staged row carries only what varies from row to row:
its address, its times, and a small integer naming its combination of tenant, reason,
category, source and note (an import list has a handful). Each chunk is then two statements
over a range of the staging table's rowid (the file's order): the upsert (rows in file order,
so a later row of the same (address, tenant) wins) and the change feed (every row, in file
order), in one transaction, so running servers learn every chunk as it commits.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from itertools import repeat
from typing import Any

from sqlalchemy import Connection

from sidecar.store.models import Change, Suppression
from sidecar.suppression.bulk_pg import IMPORT_COLUMNS, UPSERT_COLUMNS
from sidecar.suppression.rows import Batch, Uniform, flatten

SCHEMA = "sidecar_import"  # the attached temporary database
COMBO_MEMO = 10_000  # combinations remembered; past that the memo starts again (memory stays flat)
STAGE_BATCH = 20_000  # rows bound per executemany

_FROM = (
    f"FROM {SCHEMA}.rows r JOIN {SCHEMA}.combos c ON c.id = r.combo "
    "WHERE r.rowid >= :first AND r.rowid < :end ORDER BY r.rowid"
)
UPSERT = (
    f"INSERT INTO {Suppression.__tablename__} ({', '.join(IMPORT_COLUMNS)}, active, updated_at) "
    "SELECT r.address, c.tenant, c.reason, c.category, c.source, c.note, coalesce(r.created_at, :now), "
    f"r.expires_at, 1, :now {_FROM} "
    f"ON CONFLICT (address, tenant) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in UPSERT_COLUMNS)}"
)
FEED = (
    f"INSERT INTO {Change.__tablename__} "
    "(kind, address, tenant, active, reason, created_at, expires_at, changed_at) "
    f"SELECT 'suppression', r.address, c.tenant, 1, c.reason, coalesce(r.created_at, :now), r.expires_at, :now {_FROM}"
)


def stage(dbapi: Any, batches: Iterable[Batch], now: float) -> int:
    """Attach the staging database to ``dbapi`` (a sqlite3 connection outside any transaction) and
    write the rows of ``batches`` (checked, in file order; a bad one raises, and ``unstage``
    discards what was staged) into it; the number of rows. Row ``n`` of the file has rowid ``n``."""
    dbapi.execute(f"ATTACH DATABASE '' AS {SCHEMA}")
    dbapi.execute(f"PRAGMA {SCHEMA}.journal_mode = OFF")  # never rolled back: discarded whole on failure
    dbapi.execute(f"CREATE TABLE {SCHEMA}.rows (address TEXT, combo INTEGER, created_at REAL, expires_at REAL)")
    dbapi.execute(
        f"CREATE TABLE {SCHEMA}.combos (id INTEGER PRIMARY KEY, tenant TEXT, reason TEXT, category TEXT, "
        "source TEXT, note TEXT)"
    )
    # Two forms of a row: binding None costs as much as a text (the driver's adaptation path), so a
    # row with neither time of its own binds two values, not four. Runs of one form go together.
    put_rows = (
        f"INSERT INTO {SCHEMA}.rows (address, combo) VALUES (?, ?)",
        f"INSERT INTO {SCHEMA}.rows VALUES (?, ?, ?, ?)",
    )
    put_combo = f"INSERT INTO {SCHEMA}.combos VALUES (?, ?, ?, ?, ?, ?)"
    memo: dict[tuple[Any, ...], int] = {}
    batch: list[tuple[Any, ...]] = []
    combos: list[tuple[Any, ...]] = []
    n = form = 0

    ids = itertools.count(1)

    def combo_of(key: tuple[Any, ...]) -> int:
        combo = memo.get(key)
        if combo is None:
            if len(memo) >= COMBO_MEMO:
                memo.clear()
            combo = memo[key] = next(ids)
            combos.append((combo, *key))
        return combo

    for part in batches:
        if isinstance(part, Uniform) and part.rest[5] == now and part.rest[6] is None:
            # a uniform batch: its addresses bound straight from the list, no row built in Python
            combo = combo_of(part.rest[:5])
            n += _flush(dbapi, put_rows[form], batch, put_combo, combos)
            dbapi.executemany(put_rows[0], zip(part.addresses, repeat(combo)))
            n += len(part.addresses)
            continue
        for addr, tenant, reason, category, source, note, created, expires in flatten([part]):
            combo = combo_of((tenant, reason, category, source, note))
            if created == now and expires is None:
                if form:
                    n += _flush(dbapi, put_rows[form], batch, put_combo, combos)
                    form = 0
                batch.append((addr, combo))
            else:
                if not form:
                    n += _flush(dbapi, put_rows[form], batch, put_combo, combos)
                    form = 1
                batch.append((addr, combo, None if created == now else created, expires))
            if len(batch) >= STAGE_BATCH:
                n += _flush(dbapi, put_rows[form], batch, put_combo, combos)
    n += _flush(dbapi, put_rows[form], batch, put_combo, combos)
    dbapi.commit()
    return n


def _flush(dbapi: Any, put_row: str, batch: list[Any], put_combo: str, combos: list[Any]) -> int:
    n = len(batch)
    if combos:
        dbapi.executemany(put_combo, combos)
        combos.clear()
    if batch:
        dbapi.executemany(put_row, batch)
        batch.clear()
    return n


def write_part(conn: Connection, first: int, end: int, now: float) -> None:
    """Rows ``first`` .. ``end - 1`` (1-based, the file's order): upserted, and appended to the feed."""
    dbapi: Any = conn.connection.driver_connection  # sqlite3, in this transaction
    params = {"first": first, "end": end, "now": now}
    dbapi.execute(UPSERT, params)
    dbapi.execute(FEED, params)


def unstage(dbapi: Any) -> None:
    """Discard the staging database (outside any transaction)."""
    if dbapi.in_transaction:
        dbapi.rollback()
    if any(r[1] == SCHEMA for r in dbapi.execute("PRAGMA database_list")):
        dbapi.execute(f"DETACH DATABASE {SCHEMA}")
