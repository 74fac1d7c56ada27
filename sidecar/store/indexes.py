"""The suppressions table's secondary indexes: dropped by a large import and built again at its
end (sidecar.suppression.bulk), and re-created wherever one is missing.

An import that dies between dropping and rebuilding them (killed, out of memory, the machine
down) leaves the table without them; ``restore_indexes`` re-creates any index the models declare
for the table that the database lacks. ``upgrade`` (serve, ``sidecar db upgrade`` and every
command that opens the database, the next import too) calls it.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine, Index, Table, inspect
from sqlalchemy.schema import CreateIndex, DropIndex

from sidecar.store.models import Suppression

log = logging.getLogger("sidecar.store")

# Every index of the table except the primary key and the (address, tenant) unique constraint,
# which the upserts need: created_at, and the API list filters' (reason|category|tenant|tenant+reason, id).
TABLE: Table = Suppression.__table__  # type: ignore[assignment]
BULK_INDEXES: tuple[Index, ...] = tuple(sorted(TABLE.indexes, key=lambda ix: str(ix.name)))


def missing_indexes(conn: Connection) -> list[Index]:
    """The BULK_INDEXES the database lacks (one catalogue read)."""
    have = {ix["name"] for ix in inspect(conn).get_indexes(Suppression.__tablename__)}
    return [ix for ix in BULK_INDEXES if ix.name not in have]


def drop_indexes(conn: Connection) -> None:
    for ix in BULK_INDEXES:
        conn.execute(DropIndex(ix, if_exists=True))


def create_indexes(conn: Connection, indexes: tuple[Index, ...] | list[Index] = BULK_INDEXES) -> None:
    """CREATE INDEX IF NOT EXISTS each (another process may have restored some meanwhile).
    On PostgreSQL with ``maintenance_work_mem`` raised for this transaction (the sort of a
    million rows' index keys in memory instead of in temporary files)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
    for ix in indexes:
        conn.execute(CreateIndex(ix, if_not_exists=True))


def restore_indexes(engine: Engine) -> list[str]:
    """Re-create the suppressions table's indexes an interrupted bulk import left dropped; the names
    created (usually none: then this is one catalogue read and nothing else)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(Suppression.__tablename__):
            return []
        missing = missing_indexes(conn)
    if not missing:
        return []
    log.warning(
        "suppressions: re-creating %d missing index(es) (%s): an earlier bulk import did not finish",
        len(missing),
        ", ".join(str(ix.name) for ix in missing),
    )
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # several relays starting at once: one builds, the others find them
            from sidecar.store.db import UPGRADE_LOCK

            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({UPGRADE_LOCK})")
        create_indexes(conn, missing)
    return [str(ix.name) for ix in missing]
