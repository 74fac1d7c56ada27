"""Bulk paths of the suppression store: import (rows or CSV, staged, then written in chunks) and export.

SuppressionStore.import_rows, import_csv and export_csv delegate here; the per-row writes and the
reads stay in sidecar.suppression.store.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    func,
    literal,
    select,
)

from sidecar.store.indexes import create_indexes, drop_indexes
from sidecar.store.models import Suppression
from sidecar.suppression import bulk_pg, bulk_sqlite, checker
from sidecar.suppression.fields import check_text
from sidecar.suppression.rows import CSV_FIELDS, Batch, CsvRows, csv_escape, flatten
from sidecar.units import check_time, iso

if TYPE_CHECKING:
    from sidecar.suppression.store import SuppressionStore

__all__ = ["PG_IMPORT_CHUNK", "ImportIncomplete", "export_csv", "import_csv", "import_rows"]
log = logging.getLogger("sidecar.store")


class ImportIncomplete(RuntimeError):
    """The database failed while an already validated import was being written; says what was committed."""


# -- bulk import -------------------------------------------------------------------------------
PG_IMPORT_CHUNK = 50_000
SQLITE_IMPORT_CHUNK = 50_000  # ~0.3 s of write lock each on this machine kind (other writers wait)
REBUILD_MIN_ROWS = 50_000  # an import this large into a table no larger rebuilds the secondary indexes


# Page cache of the importing connection while it writes (KiB, as SQLite's negative cache_size):
# the (address, tenant) index of a million rows is ~60 MB; with the default 2 MB cache, each chunk
# re-read and re-wrote most of its pages. Restored after the import (the connection is pooled).
SQLITE_IMPORT_CACHE_KIB = 64 * 1024


class _Writer:
    """The import's one connection (on PostgreSQL its staging table is the session's; on SQLite
    the staging database is attached to it): ``stage`` the checked rows, then ``begin()`` for
    each transaction and ``write_part`` in it."""

    def __init__(self, conn: Connection, pg: bool) -> None:
        self.conn, self.pg = conn, pg
        self.plain = False  # PostgreSQL: try plain INSERTs (the table was empty; bulk_pg.write_part)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.conn.begin():
            yield self.conn

    def stage(self, batches: Iterable[Batch], now: float) -> int:
        if self.pg:
            with self.begin() as conn:
                return bulk_pg.stage(conn, flatten(batches))
        return bulk_sqlite.stage(self.conn.connection.driver_connection, batches, now)

    def write_part(self, conn: Connection, first: int, end: int, now: float) -> None:
        if self.pg:
            self.plain = bulk_pg.write_part(conn, first, end, now, self.plain)
        else:
            bulk_sqlite.write_part(conn, first, end, now)


@contextmanager
def _writer(engine: Engine, pg: bool) -> Iterator[_Writer]:
    """The import's _Writer. SQLite: the connection's page cache raised to
    SQLITE_IMPORT_CACHE_KIB and its automatic WAL checkpoints off meanwhile, then one checkpoint
    at the end (which also makes every chunk durable: with ``synchronous=NORMAL`` the WAL is
    synced at checkpoints). A checkpoint after every chunk re-wrote the index pages each chunk
    had touched: 11.2 -> 6.4 s of wall for 500,000 rows. Both settings are restored and the
    staging database detached (the pool keeps the connection)."""
    with engine.connect() as conn:
        w = _Writer(conn, pg)
        if pg:
            try:
                yield w
            finally:
                if conn.in_transaction():
                    conn.rollback()
                with contextlib.suppress(Exception), w.begin():
                    bulk_pg.unstage(conn)
            return
        dbapi: Any = conn.connection.driver_connection
        (cache,) = dbapi.execute("PRAGMA cache_size").fetchone()
        (auto,) = dbapi.execute("PRAGMA wal_autocheckpoint").fetchone()
        dbapi.execute(f"PRAGMA cache_size = -{SQLITE_IMPORT_CACHE_KIB}")
        dbapi.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            yield w
        finally:
            if conn.in_transaction():
                conn.rollback()
            bulk_sqlite.unstage(dbapi)
            dbapi.execute(f"PRAGMA cache_size = {int(cache)}")
            dbapi.execute(f"PRAGMA wal_autocheckpoint = {int(auto)}")
            try:  # TRUNCATE: waits (busy_timeout) for readers on older snapshots, then empties the WAL
                dbapi.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except Exception as e:  # the rows are committed; the next automatic checkpoint does it
                log.warning("import: WAL checkpoint after the import failed: %s", e)


def import_rows(
    store: SuppressionStore,
    rows: Iterable[dict[str, str]],
    *,
    default_reason: str = "imported",
    default_tenant: str = "",
    default_expires: float | None = None,
    source: str = "import",
    batch: int | None = None,
    progress: Callable[[int], None] | None = None,
    now: float | None = None,
) -> int:
    """Upsert many suppressions (from CSV dicts), all or nothing. Raises ValueError naming the bad line.

    Two passes: every row is checked first, streamed so that memory stays flat, and staged as
    it is checked where only the import's own connection sees it: on SQLite a temporary database
    attached to it (sidecar.suppression.bulk_sqlite), on PostgreSQL the session's temporary
    table, by COPY (sidecar.suppression.bulk_pg); nothing anyone else can see is written unless
    all are good. Then the rows are written in chunks of
    ``batch`` rows (default SQLITE_IMPORT_CHUNK, PG_IMPORT_CHUNK), one transaction each, which
    also appends one change-feed row per input row, in file order; a later row for the same
    (address, tenant) wins. Chunks stay small because running servers read the change feed
    while the import goes on: a transaction holding many sequence ids open for long would
    leave a hole that ChangeCursor eventually gives up (after 10 s or 100,000 ids).
    An import of REBUILD_MIN_ROWS rows or more into a table no larger drops the table's
    secondary indexes before its writes and builds them again after (sidecar.store.indexes;
    if the process dies between, the next ``upgrade`` re-creates them).
    Should the database fail between chunks, ImportIncomplete says how many rows were
    committed (a re-run of the same file is safe: rows are upserts).
    Returns the number of input rows.
    """
    now = time.time() if now is None else now
    if default_expires is not None:
        check_time(default_expires, "expires_at")
    check_text("tenant", default_tenant)
    check_text("reason", default_reason)
    check_text("source", source)
    pg = store.engine.dialect.name == "postgresql"
    size = batch or (PG_IMPORT_CHUNK if pg else SQLITE_IMPORT_CHUNK)
    kw: dict[str, Any] = dict(
        default_reason=default_reason,
        default_tenant=default_tenant,
        default_expires=default_expires,
        source=source,
        now=now,
    )
    t0, c0 = time.monotonic(), time.process_time()
    checked = checker.checked(rows, store.canonical, **kw)  # in a child process for a CSV file
    with _writer(store.engine, pg) as w:
        begin = w.begin
        total = w.stage(checked, now)
        log.info(
            "import: %d rows checked in %.1f s (CPU %.1f s)", total, time.monotonic() - t0, time.process_time() - c0
        )
        t0, c0 = time.monotonic(), time.process_time()
        with begin() as conn:
            rebuild = _worth_rebuilding(conn, total)
            w.plain = pg and bulk_pg.is_empty(conn)
            if rebuild:
                drop_indexes(conn)
        done = 0
        try:
            while done < total:
                end = min(done + size, total)
                try:
                    with begin() as conn:
                        w.write_part(conn, done + 1, end + 1, now)
                except Exception as e:
                    if not done:
                        raise
                    log.error("import stopped after committing %d of %d rows: %s", done, total, e)
                    raise ImportIncomplete(
                        f"import stopped after committing {done:,} of {total:,} rows "
                        f"(lines 2..{done + 1}): {type(e).__name__}"
                    ) from e
                done = end
                if progress:
                    progress(done)
            log.info(
                "import: %d rows written in %.1f s (CPU %.1f s; indexes dropped: %s)",
                *(total, time.monotonic() - t0, time.process_time() - c0, rebuild),
            )
        except Exception:
            if rebuild:
                _build_indexes(begin, after_failure=True)
            raise
        if rebuild:
            _build_indexes(begin)
    return total


def _build_indexes(begin: Callable[[], Any], after_failure: bool = False) -> None:
    """The dropped indexes built again, in one transaction. After a failed import a failure here
    is only logged (the import's own error is the one to report): the next ``upgrade`` (any
    command, serve, the next import) re-creates them (sidecar.store.indexes.restore_indexes)."""
    t0, c0 = time.monotonic(), time.process_time()
    try:
        with begin() as conn:
            create_indexes(conn)
    except Exception as e:
        if not after_failure:
            raise
        log.error("import: the suppressions table's indexes were not rebuilt (%s); the next start re-creates them", e)
        return
    log.info(
        "import: suppressions indexes rebuilt in %.1f s (CPU %.1f s)", time.monotonic() - t0, time.process_time() - c0
    )


def _worth_rebuilding(conn: Connection, rows: int) -> bool:
    """Whether an import of ``rows`` rows drops the table's secondary indexes (BULK_INDEXES) and builds
    them again at its end, instead of updating them row by row: when it brings at least
    REBUILD_MIN_ROWS rows and the table holds no more rows than that already (one sorted build
    of each then costs less than the row-by-row updates: 4.1 vs 1.8 s of SQLite's CPU per
    300,000 rows with and without them). The count reads at most ``rows + 1`` rows."""
    if rows < REBUILD_MIN_ROWS:
        return False
    head = select(literal(1)).select_from(Suppression).limit(rows + 1).subquery()
    return int(conn.execute(select(func.count()).select_from(head)).scalar_one()) <= rows


def import_csv(store: SuppressionStore, fh: IO[str], **kw: Any) -> int:
    """A CSV file (our export's format); a leading ' that our export adds is taken off (csv_unescape)."""
    return import_rows(store, CsvRows(fh), **kw)


def export_csv(
    store: SuppressionStore, fh: IO[str], *, progress: Callable[[int], None] | None = None, **filters: Any
) -> int:
    """Every row ``store.iter_rows(**filters)`` gives, as CSV (CSV_FIELDS; values csv_escape'd)."""
    w = csv.writer(fh)
    w.writerow(CSV_FIELDS)
    n = 0
    for r in store.iter_rows(**filters):
        w.writerow(
            [
                csv_escape(v)
                for v in (
                    r.address,
                    r.tenant,
                    r.reason,
                    r.category or "",
                    iso(r.created_at),
                    iso(r.expires_at),
                    r.source,
                    r.note or "",
                )
            ]
        )
        n += 1
        if progress and n % 10000 == 0:
            progress(n)
    return n
