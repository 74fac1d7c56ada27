"""The PostgreSQL side of a bulk import: the checked rows are COPYed into a temporary staging table
while they are checked, then written from it in chunks by the server alone.

A temporary table is the session's own: nobody else sees it, it is not WAL-logged, and it
disappears with the connection, so a bad row found late (the import then writes nothing) or a
process killed half-way leaves nothing behind. COPYing while checking lets the server parse
the rows on the other core while this process checks the next ones; the spool file and the
per-chunk COPY of the earlier form are gone. Each chunk is then two statements over a range of
the staging table's ``seq`` (the file's order): the upsert (the last row of each (address,
tenant) in the chunk, ``DISTINCT ON``) and the change feed (every row, in file order), in one
transaction, so running servers learn every chunk as it commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    MetaData,
    Table,
    Text,
    bindparam,
    exists,
    insert,
    literal,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable, Index

from sidecar.store.models import Change, Suppression

IMPORT_COLUMNS = ("address", "tenant", "reason", "category", "source", "note", "created_at", "expires_at")
UPSERT_COLUMNS = ("reason", "category", "source", "note", "active", "created_at", "updated_at", "expires_at")

STAGING = Table(
    "sidecar_import",
    MetaData(),
    *[Column(c, Float if c.endswith("_at") else Text) for c in IMPORT_COLUMNS],
    Column("seq", BigInteger),
    prefixes=["TEMPORARY"],
)
_cols = [STAGING.c[c] for c in IMPORT_COLUMNS]
_part = (STAGING.c.seq >= bindparam("first"), STAGING.c.seq < bindparam("end"))
_latest = (
    select(*_cols, literal(True), bindparam("now", type_=Float))
    .where(*_part)
    .ext(postgresql.distinct_on(STAGING.c.address, STAGING.c.tenant))
    .order_by(STAGING.c.address, STAGING.c.tenant, STAGING.c.seq.desc())
)
_ins = postgresql.insert(Suppression).from_select([*IMPORT_COLUMNS, "active", "updated_at"], _latest)
INSERT_NEW = _ins
UPSERT = _ins.on_conflict_do_update(
    index_elements=["address", "tenant"], set_={k: _ins.excluded[k] for k in UPSERT_COLUMNS}
)
FEED = insert(Change).from_select(  # ids in file order: a later row of an address wins
    ["kind", "address", "tenant", "active", "reason", "created_at", "expires_at", "changed_at"],
    select(
        literal("suppression"),
        STAGING.c.address,
        STAGING.c.tenant,
        literal(True),
        STAGING.c.reason,
        STAGING.c.created_at,
        STAGING.c.expires_at,
        bindparam("now", type_=Float),
    )
    .where(*_part)
    .order_by(STAGING.c.seq),
)


def stage(conn: Connection, rows: Iterable[tuple[Any, ...]]) -> int:
    """COPY ``rows`` (checked, in file order; a bad one raises and the caller's transaction rolls
    the table back) into the session's staging table; the number of rows."""
    conn.execute(DropTable(STAGING, if_exists=True))
    conn.execute(CreateTable(STAGING))
    raw: Any = conn.connection.driver_connection  # psycopg.Connection, in this transaction
    names = ", ".join(c.name for c in STAGING.c)
    n = 0
    with raw.cursor() as cur, cur.copy(f"COPY {STAGING.name} ({names}) FROM STDIN") as copy:
        write = copy.write_row
        for n, row in enumerate(rows, start=1):
            write((*row, n))
    conn.execute(CreateIndex(Index("sidecar_import_seq", STAGING.c.seq)))
    conn.exec_driver_sql(f"ANALYZE {STAGING.name}")
    return n


def write_part(conn: Connection, first: int, end: int, now: float, plain: bool = False) -> bool:
    """Rows ``first`` .. ``end - 1`` (seq) of the staging table: upserted, and appended to the feed.

    ``plain``: the table was empty when the import began, so a key can only be there already if
    an earlier chunk had it or another writer added it meanwhile: a plain INSERT is tried first
    (in a savepoint; the upsert's conflict check costs ~40% more of the server's CPU), and on a
    conflict the chunk is upserted after all. Returns whether the next chunk may try it too."""
    params = {"first": first, "end": end, "now": now}
    if plain:
        try:
            with conn.begin_nested():
                conn.execute(INSERT_NEW, params)
        except IntegrityError:
            plain = False
            conn.execute(UPSERT, params)
    else:
        conn.execute(UPSERT, params)
    conn.execute(FEED, params)
    return plain


def unstage(conn: Connection) -> None:
    conn.execute(DropTable(STAGING, if_exists=True))


def is_empty(conn: Connection) -> bool:
    """Whether the suppressions table holds no row (one index probe)."""
    return not conn.execute(select(exists().select_from(Suppression))).scalar_one()
