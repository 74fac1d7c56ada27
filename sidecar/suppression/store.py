"""Suppression store: SQLAlchemy Core over the shared schema (SQLite or PostgreSQL).

Every method is synchronous; the service runs them in its database thread pool, the
CLI and the ingester call them directly. Each write to a suppression also appends a
row to the change feed, which every running server reads (no full reloads). The bulk
paths (import in chunks, COPY on PostgreSQL; CSV export) live in sidecar.suppression.bulk,
to which import_rows, import_csv and export_csv delegate.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update

from sidecar.store.db import dialect_insert, insert_for
from sidecar.store.models import Change, Suppression, SuppressionCause
from sidecar.suppression import bulk
from sidecar.suppression.address import canonical
from sidecar.suppression.fields import check_text
from sidecar.units import check_time, iso

__all__ = ["SuppressionRow", "SuppressionStore", "iso"]


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


# The statements of ``add``, built once (per dialect) with bound parameters: built per call, with
# the values in them, SQLAlchemy's construction and coercion cost ~1.2 ms of CPU per suppression.
_ADD_COLUMNS = ("address", "tenant", "reason", "category", "source", "note", "created_at", "expires_at")


@functools.cache
def _upsert(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (address, tenant) DO UPDATE ... RETURNING id: the row's id either way."""
    ins = insert_for(dialect, Suppression.__table__).values(
        {**{c: bindparam(c) for c in _ADD_COLUMNS}, "active": True, "updated_at": bindparam("created_at")}
    )
    return ins.on_conflict_do_update(
        index_elements=["address", "tenant"],
        set_={
            k: ins.excluded[k]
            for k in ("reason", "category", "source", "note", "active", "created_at", "updated_at", "expires_at")
        },
    ).returning(Suppression.id)


_FEED_ADD = insert(Change).values(
    kind="suppression",
    address=bindparam("address"),
    tenant=bindparam("tenant"),
    active=True,
    reason=bindparam("reason"),
    created_at=bindparam("created_at"),
    expires_at=bindparam("expires_at"),
    changed_at=bindparam("created_at"),
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
        row = {
            "address": addr,
            "tenant": tenant,
            "reason": reason,
            "category": category,
            "source": source,
            "note": note,
            "created_at": now,
            "expires_at": expires_at,
        }
        sid = int(conn.execute(_upsert(conn.dialect.name), row).scalar_one())
        ids = list(cause_event_ids)
        if ids:
            conn.execute(
                dialect_insert(conn, SuppressionCause.__table__).on_conflict_do_nothing(),
                [{"suppression_id": sid, "event_id": e} for e in ids],
            )
        conn.execute(_FEED_ADD, row)
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

    def import_rows(self, rows: Iterable[dict[str, str]], **kw: Any) -> int:
        """Upsert many suppressions (from CSV dicts), all or nothing: see sidecar.suppression.bulk.import_rows."""
        return bulk.import_rows(self, rows, **kw)

    def import_csv(self, fh: IO[str], **kw: Any) -> int:
        """A CSV file (our export's format): see sidecar.suppression.bulk.import_csv."""
        return bulk.import_csv(self, fh, **kw)

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
        """The rows ``iter_rows(**filters)`` gives, as CSV: see sidecar.suppression.bulk.export_csv."""
        return bulk.export_csv(self, fh, progress=progress, **filters)

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
