"""Suppression store: SQLAlchemy Core over the shared schema (SQLite or PostgreSQL).

Every method is synchronous; the service runs them in its database thread pool, the
CLI and the ingester call them directly. Each write to a suppression also appends a
row to the change feed, which every running server reads (no full reloads).
"""

from __future__ import annotations

import csv
import logging
import pickle
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    MetaData,
    Table,
    Text,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql

from sidecar.store.db import dialect_insert
from sidecar.store.models import Change, Suppression, SuppressionCause
from sidecar.suppression.address import canonical
from sidecar.suppression.fields import check_text
from sidecar.suppression.rows import CSV_FIELDS, CsvRows, check_rows, csv_escape
from sidecar.units import check_time, iso

__all__ = ["CSV_FIELDS", "ImportIncomplete", "SuppressionRow", "SuppressionStore", "iso"]
log = logging.getLogger("sidecar.store")


class ImportIncomplete(RuntimeError):
    """The database failed while an already validated import was being written; says what was committed."""


@dataclass(frozen=True, slots=True)
class SuppressionRow:
    id: int
    address: str
    tenant: str
    reason: str
    category: str | None
    source: str
    note: str | None
    active: bool
    created_at: float
    updated_at: float
    expires_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "tenant": self.tenant,
            "reason": self.reason,
            "category": self.category,
            "source": self.source,
            "note": self.note,
            "active": self.active,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "expires_at": iso(self.expires_at) or None,
        }


# -- bulk import -------------------------------------------------------------------------------
# (address, tenant, reason, category, source, note, created_at, expires_at, final): final is False for
# a row that a later row of the same chunk supersedes; it still goes to the change feed, in file order.
ImportRow = tuple[str, str, str, str | None, str, str | None, float, float | None, bool]
IMPORT_COLUMNS = ("address", "tenant", "reason", "category", "source", "note", "created_at", "expires_at")
UPSERT_COLUMNS = ("reason", "category", "source", "note", "active", "created_at", "updated_at", "expires_at")
PG_IMPORT_CHUNK = 50_000


def _write_chunk(conn: Connection, rows: list[ImportRow], now: float) -> None:
    """One chunk by executemany (SQLite, or any database without COPY)."""
    ins = dialect_insert(conn, Suppression.__table__)
    ins = ins.on_conflict_do_update(
        index_elements=["address", "tenant"], set_={k: ins.excluded[k] for k in UPSERT_COLUMNS}
    )
    conn.execute(
        ins, [dict(zip(IMPORT_COLUMNS, r[:-1], strict=True), active=True, updated_at=now) for r in rows if r[-1]]
    )
    conn.execute(
        insert(Change),
        [
            {
                "kind": "suppression",
                "address": r[0],
                "tenant": r[1],
                "active": True,
                "reason": r[2],
                "created_at": r[6],
                "expires_at": r[7],
                "changed_at": now,
            }
            for r in rows
        ],
    )


def _write_chunk_pg(conn: Connection, rows: list[ImportRow], now: float) -> None:
    """One chunk on PostgreSQL: COPY into a temporary table, then upsert and feed from it."""
    cols = [Column(c, Float if c.endswith("_at") else Text) for c in IMPORT_COLUMNS]
    tmp = Table(
        "sidecar_import",
        MetaData(),
        *cols,
        Column("final", Boolean),
        Column("seq", BigInteger),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )
    tmp.create(conn)
    raw: Any = conn.connection.driver_connection  # psycopg.Connection, in this transaction
    names = ", ".join(c.name for c in tmp.c)
    with raw.cursor() as cur, cur.copy(f"COPY sidecar_import ({names}) FROM STDIN") as copy:
        for seq, r in enumerate(rows):
            copy.write_row((*r, seq))
    ins = postgresql.insert(Suppression).from_select(
        [*IMPORT_COLUMNS, "active", "updated_at"], select(*cols, literal(True), literal(now, Float)).where(tmp.c.final)
    )
    conn.execute(
        ins.on_conflict_do_update(
            index_elements=["address", "tenant"], set_={k: ins.excluded[k] for k in UPSERT_COLUMNS}
        )
    )
    conn.execute(
        insert(Change).from_select(  # ids in file order: a later row of an address wins
            ["kind", "address", "tenant", "active", "reason", "created_at", "expires_at", "changed_at"],
            select(
                literal("suppression"),
                tmp.c.address,
                tmp.c.tenant,
                literal(True),
                tmp.c.reason,
                tmp.c.created_at,
                tmp.c.expires_at,
                literal(now, Float),
            ).order_by(tmp.c.seq),
        )
    )


class SuppressionStore:
    def __init__(self, engine: Engine, case_sensitive_local: bool = False) -> None:
        self.engine = engine
        self.case_sensitive_local = case_sensitive_local

    def canonical(self, address: str) -> str:
        """Stored form: domain lower-cased; the local part too unless configured case-sensitive."""
        a = canonical(address)
        return a if self.case_sensitive_local else a.lower()

    # -- writes ------------------------------------------------------------------------------
    def add(
        self,
        address: str,
        *,
        tenant: str = "",
        reason: str,
        category: str | None = None,
        source: str = "manual",
        note: str | None = None,
        expires_at: float | None = None,
        now: float | None = None,
        cause_event_ids: Iterable[int] = (),
        conn: Connection | None = None,
    ) -> int:
        """Suppress ``address`` (for ``tenant``, "" = global). Returns the suppression id."""
        if conn is None:
            with self.engine.begin() as c:
                return self.add(
                    address,
                    tenant=tenant,
                    reason=reason,
                    category=category,
                    source=source,
                    note=note,
                    expires_at=expires_at,
                    now=now,
                    cause_event_ids=cause_event_ids,
                    conn=c,
                )
        now = time.time() if now is None else now
        addr = self.canonical(address)
        for name, value in (
            ("tenant", tenant),
            ("reason", reason),
            ("category", category),
            ("source", source),
            ("note", note),
        ):
            check_text(name, value)
        if expires_at is not None:
            check_time(expires_at, "expires_at")
        row = dict(
            address=addr,
            tenant=tenant,
            reason=reason,
            category=category,
            source=source,
            note=note,
            active=True,
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
        )
        ins = dialect_insert(conn, Suppression.__table__).values(**row)
        ins = ins.on_conflict_do_update(
            index_elements=["address", "tenant"],
            set_={
                k: ins.excluded[k]
                for k in ("reason", "category", "source", "note", "active", "created_at", "updated_at", "expires_at")
            },
        )
        conn.execute(ins)
        sid = conn.execute(
            select(Suppression.id).where(Suppression.address == addr, Suppression.tenant == tenant)
        ).scalar_one()
        ids = list(cause_event_ids)
        if ids:
            conn.execute(
                dialect_insert(conn, SuppressionCause.__table__).on_conflict_do_nothing(),
                [{"suppression_id": sid, "event_id": e} for e in ids],
            )
        conn.execute(
            insert(Change).values(
                kind="suppression",
                address=addr,
                tenant=tenant,
                active=True,
                reason=reason,
                created_at=now,
                expires_at=expires_at,
                changed_at=now,
            )
        )
        return sid

    def remove(self, address: str, *, tenant: str = "", now: float | None = None) -> bool:
        """Reactivate ``address``: the row stays (history), marked inactive."""
        now = time.time() if now is None else now
        addr = self.canonical(address)
        with self.engine.begin() as conn:
            res = conn.execute(
                update(Suppression)
                .where(Suppression.address == addr, Suppression.tenant == tenant, Suppression.active.is_(True))
                .values(active=False, updated_at=now)
            )
            if not res.rowcount:
                return False
            conn.execute(
                insert(Change).values(kind="suppression", address=addr, tenant=tenant, active=False, changed_at=now)
            )
            return True

    def import_rows(
        self,
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

        Two passes: every row is checked first (streamed, normalised rows spooled to a temporary
        file, so memory stays flat); nothing is written unless all are good. Then the rows are
        written in chunks of ``batch`` rows (default 5,000 on SQLite, PG_IMPORT_CHUNK on
        PostgreSQL), one transaction each, which also appends one change-feed row per input
        row, in file order; a later row for the same (address, tenant) wins.
        On PostgreSQL a chunk is COPYed into a temporary table and upserted from it by two
        statements. Chunks stay small because running servers read the change feed while
        the import goes on: a transaction holding many sequence ids open for long would
        leave a hole that ChangeCursor eventually gives up (after 10 s or 100,000 ids).
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
        pg = self.engine.dialect.name == "postgresql"
        size = batch or (PG_IMPORT_CHUNK if pg else 5000)
        write = _write_chunk_pg if pg else _write_chunk
        kw: dict[str, Any] = dict(
            default_reason=default_reason,
            default_tenant=default_tenant,
            default_expires=default_expires,
            source=source,
            now=now,
        )
        total = 0
        with tempfile.SpooledTemporaryFile(max_size=32 << 20) as spool:
            chunk: list[ImportRow] = []
            where: dict[tuple[str, str], int] = {}  # (address, tenant) -> its last row in chunk
            for row in check_rows(rows, self.canonical, **kw):
                key = (row[0], row[1])
                prev = where.get(key)
                if prev is not None:  # the later row wins
                    chunk[prev] = (*chunk[prev][:-1], False)
                where[key] = len(chunk)
                chunk.append((*row, True))
                if len(chunk) >= size:
                    pickle.dump(chunk, spool, pickle.HIGHEST_PROTOCOL)
                    total += len(chunk)
                    chunk, where = [], {}
            if chunk:
                pickle.dump(chunk, spool, pickle.HIGHEST_PROTOCOL)
                total += len(chunk)
            spool.seek(0)
            done = 0
            while done < total:
                part: list[ImportRow] = pickle.load(spool)
                try:
                    with self.engine.begin() as conn:
                        write(conn, part, now)
                except Exception as e:
                    if not done:
                        raise
                    log.error("import stopped after committing %d of %d rows: %s", done, total, e)
                    raise ImportIncomplete(
                        f"import stopped after committing {done:,} of {total:,} rows "
                        f"(lines 2..{done + 1}): {type(e).__name__}"
                    ) from e
                done += len(part)
                if progress:
                    progress(done)
        return total

    def import_csv(self, fh: IO[str], **kw: Any) -> int:
        """A CSV file (our export's format); a leading ' that our export adds is taken off (csv_unescape)."""
        return self.import_rows(CsvRows(fh), **kw)

    # -- reads -------------------------------------------------------------------------------
    def iter_rows(
        self,
        *,
        active_only: bool = True,
        tenant: str | None = None,
        reason: str | None = None,
        address_prefix: str | None = None,
        after_id: int = 0,
        limit: int | None = None,
        chunk: int = 10000,
    ) -> Iterator[SuppressionRow]:
        q = select(*[c for c in Suppression.__table__.c]).order_by(Suppression.id)
        if active_only:
            q = q.where(Suppression.active.is_(True))
        if tenant is not None:
            q = q.where(Suppression.tenant == tenant)
        if reason is not None:
            q = q.where(Suppression.reason == reason)
        if address_prefix:
            q = q.where(Suppression.address.startswith(address_prefix, autoescape=True))
        left = limit
        last = after_id
        while left is None or left > 0:
            n = chunk if left is None else min(chunk, left)
            with self.engine.connect() as conn:
                rows = conn.execute(q.where(Suppression.id > last).limit(n)).all()
            for r in rows:
                yield SuppressionRow(*r)
            if len(rows) < n:
                return
            last = rows[-1][0]
            if left is not None:
                left -= len(rows)

    def get(self, address: str) -> list[SuppressionRow]:
        addr = self.canonical(address)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*Suppression.__table__.c).where(Suppression.address == addr).order_by(Suppression.tenant)
            ).all()
        return [SuppressionRow(*r) for r in rows]

    def export_csv(self, fh: IO[str], *, progress: Callable[[int], None] | None = None, **filters: Any) -> int:
        w = csv.writer(fh)
        w.writerow(CSV_FIELDS)
        n = 0
        for r in self.iter_rows(**filters):
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

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(Suppression).where(Suppression.active.is_(True))
            ).scalar_one()

    # -- what the server reads ------------------------------------------------------------------
    def load_active(self, now: float) -> tuple[int, list[tuple[str, str, str, float, float | None]]]:
        """(last change id, active unexpired rows) for building the in-memory index."""
        last = self.last_change_id()
        return last, [r for part in self.iter_active(now) for r in part]  # type: ignore[misc]

    def last_change_id(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.coalesce(func.max(Change.id), 0))).scalar_one()  # type: ignore[no-any-return]

    def iter_active(self, now: float, batch: int = 20000) -> Iterator[Sequence[Any]]:
        """Active unexpired (address, tenant, reason, created_at, expires_at) rows, ``batch`` at a time.

        Streamed (a server-side cursor on PostgreSQL; SQLite's cursor steps as it is read), so
        a million rows never sit in memory at once: read ``last_change_id`` first, then these.
        """
        t = Suppression.__table__
        with self.engine.connect() as conn:
            res = conn.execution_options(stream_results=True, yield_per=batch).execute(
                select(t.c.address, t.c.tenant, t.c.reason, t.c.created_at, t.c.expires_at)
                .where(t.c.active.is_(True))
                .where((t.c.expires_at.is_(None)) | (t.c.expires_at > now))
            )
            yield from res.partitions()

    def changes_since(self, last_id: int, limit: int = 50000) -> list[Any]:
        """Change-feed rows with id > last_id, in id order (see ChangeCursor for out-of-order commits)."""
        t = Change.__table__
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(
                        t.c.id,
                        t.c.kind,
                        t.c.address,
                        t.c.tenant,
                        t.c.active,
                        t.c.reason,
                        t.c.created_at,
                        t.c.expires_at,
                    )
                    .where(t.c.id > last_id)
                    .order_by(t.c.id)
                    .limit(limit)
                ).all()
            )
