"""Suppression store: SQLAlchemy Core over the shared schema (SQLite or PostgreSQL).

Every method is synchronous; the service runs them in its database thread pool, the
CLI and the ingester call them directly. Each write to a suppression also appends a
row to the change feed, which every running server reads (no full reloads).
"""

from __future__ import annotations

import csv
import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from sidecar.store.models import Change, Suppression, SuppressionCause
from sidecar.suppression.address import AddressError, canonical

CSV_FIELDS = ("address", "tenant", "reason", "category", "created_at", "expires_at", "source", "note")


def parse_when(value: str, now: float | None = None) -> float | None:
    """An expiry given as ISO 8601 date/time, POSIX seconds, a relative duration ("7d") or empty."""
    from sidecar.config import parse_duration

    v = (value or "").strip()
    if not v or v.lower() in ("never", "none"):
        return None
    try:
        return float(v) if v.replace(".", "", 1).isdigit() and len(v) > 8 else (
            (now or time.time()) + parse_duration(v))
    except ValueError:
        pass
    try:
        d = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r}: expected an ISO 8601 date/time, a duration like \"7d\", or empty") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return d.timestamp()


def iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        return {"address": self.address, "tenant": self.tenant, "reason": self.reason, "category": self.category,
                "source": self.source, "note": self.note, "active": self.active,
                "created_at": iso(self.created_at), "updated_at": iso(self.updated_at),
                "expires_at": iso(self.expires_at) or None}


def _insert(conn: Connection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


class SuppressionStore:
    def __init__(self, engine: Engine, case_sensitive_local: bool = False) -> None:
        self.engine = engine
        self.case_sensitive_local = case_sensitive_local

    def canonical(self, address: str) -> str:
        """Stored form: domain lower-cased; the local part too unless configured case-sensitive."""
        a = canonical(address)
        return a if self.case_sensitive_local else a.lower()

    # -- writes ------------------------------------------------------------------------------
    def add(self, address: str, *, tenant: str = "", reason: str, category: str | None = None,
            source: str = "manual", note: str | None = None, expires_at: float | None = None,
            now: float | None = None, cause_event_ids: Iterable[int] = (), conn: Connection | None = None) -> int:
        """Suppress ``address`` (for ``tenant``, "" = global). Returns the suppression id."""
        if conn is None:
            with self.engine.begin() as c:
                return self.add(address, tenant=tenant, reason=reason, category=category, source=source,
                                note=note, expires_at=expires_at, now=now, cause_event_ids=cause_event_ids, conn=c)
        now = time.time() if now is None else now
        addr = self.canonical(address)
        row = dict(address=addr, tenant=tenant, reason=reason, category=category, source=source, note=note,
                   active=True, created_at=now, updated_at=now, expires_at=expires_at)
        ins = _insert(conn, Suppression.__table__).values(**row)
        ins = ins.on_conflict_do_update(
            index_elements=["address", "tenant"],
            set_={k: ins.excluded[k] for k in ("reason", "category", "source", "note", "active",
                                                "created_at", "updated_at", "expires_at")})
        conn.execute(ins)
        sid = conn.execute(select(Suppression.id).where(Suppression.address == addr,
                                                        Suppression.tenant == tenant)).scalar_one()
        ids = list(cause_event_ids)
        if ids:
            conn.execute(_insert(conn, SuppressionCause.__table__).on_conflict_do_nothing(),
                         [{"suppression_id": sid, "event_id": e} for e in ids])
        conn.execute(Change.__table__.insert().values(kind="suppression", address=addr, tenant=tenant, active=True,
                                                      reason=reason, created_at=now, expires_at=expires_at,
                                                      changed_at=now))
        return sid

    def remove(self, address: str, *, tenant: str = "", now: float | None = None) -> bool:
        """Reactivate ``address``: the row stays (history), marked inactive."""
        now = time.time() if now is None else now
        addr = self.canonical(address)
        with self.engine.begin() as conn:
            res = conn.execute(update(Suppression).where(Suppression.address == addr, Suppression.tenant == tenant,
                                                         Suppression.active.is_(True))
                               .values(active=False, updated_at=now))
            if not res.rowcount:
                return False
            conn.execute(Change.__table__.insert().values(kind="suppression", address=addr, tenant=tenant,
                                                          active=False, changed_at=now))
            return True

    def import_rows(self, rows: Iterable[dict[str, str]], *, default_reason: str = "imported",
                    default_tenant: str = "", default_expires: float | None = None, source: str = "import",
                    batch: int = 5000,
                    progress: Callable[[int], None] | None = None, now: float | None = None) -> int:
        """Upsert many suppressions (from CSV dicts). Raises ValueError naming the bad line."""
        now = time.time() if now is None else now
        done = 0
        buf: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal done
            if not buf:
                return
            with self.engine.begin() as conn:
                ins = _insert(conn, Suppression.__table__)
                ins = ins.on_conflict_do_update(
                    index_elements=["address", "tenant"],
                    set_={k: ins.excluded[k] for k in ("reason", "category", "source", "note", "active",
                                                        "created_at", "updated_at", "expires_at")})
                conn.execute(ins, buf)
                conn.execute(Change.__table__.insert(), [
                    {"kind": "suppression", "address": r["address"], "tenant": r["tenant"], "active": True,
                     "reason": r["reason"], "created_at": r["created_at"], "expires_at": r["expires_at"],
                     "changed_at": now} for r in buf])
            done += len(buf)
            buf.clear()
            if progress:
                progress(done)

        seen: set[tuple[str, str]] = set()
        for lineno, r in enumerate(rows, start=2):
            try:
                addr = self.canonical(r.get("address") or "")
                created = parse_when(r.get("created_at") or "", now) or now
                expires = parse_when(r["expires_at"], now) if r.get("expires_at") else default_expires
            except (AddressError, ValueError) as e:
                raise ValueError(f"line {lineno}: {e}") from None
            tenant = (r.get("tenant") or default_tenant).strip()
            if (addr, tenant) in seen:   # one statement may not touch a row twice (PostgreSQL)
                flush()
                seen.clear()
            seen.add((addr, tenant))
            buf.append(dict(address=addr, tenant=tenant, reason=(r.get("reason") or default_reason).strip(),
                            category=(r.get("category") or None), source=(r.get("source") or source),
                            note=(r.get("note") or None), active=True, created_at=created, updated_at=now,
                            expires_at=expires))
            if len(buf) >= batch:
                flush()
                seen.clear()
        flush()
        return done

    def import_csv(self, fh: IO[str], **kw: Any) -> int:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "address" not in reader.fieldnames:
            raise ValueError("CSV needs a header line with at least an 'address' column "
                             f"(known columns: {', '.join(CSV_FIELDS)})")
        unknown = set(reader.fieldnames) - set(CSV_FIELDS)
        if unknown:
            raise ValueError(f"CSV has unknown columns: {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(CSV_FIELDS)})")
        return self.import_rows(reader, **kw)

    # -- reads -------------------------------------------------------------------------------
    def iter_rows(self, *, active_only: bool = True, tenant: str | None = None, reason: str | None = None,
                  address_prefix: str | None = None, after_id: int = 0, limit: int | None = None,
                  chunk: int = 10000) -> Iterator[SuppressionRow]:
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
            rows = conn.execute(select(*Suppression.__table__.c).where(Suppression.address == addr)
                                .order_by(Suppression.tenant)).all()
        return [SuppressionRow(*r) for r in rows]

    def export_csv(self, fh: IO[str], *, progress: Callable[[int], None] | None = None, **filters: Any) -> int:
        w = csv.writer(fh)
        w.writerow(CSV_FIELDS)
        n = 0
        for r in self.iter_rows(**filters):
            w.writerow((r.address, r.tenant, r.reason, r.category or "", iso(r.created_at), iso(r.expires_at),
                        r.source, r.note or ""))
            n += 1
            if progress and n % 10000 == 0:
                progress(n)
        return n

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(Suppression)
                                .where(Suppression.active.is_(True))).scalar_one()

    # -- what the server reads ------------------------------------------------------------------
    def load_active(self, now: float) -> tuple[int, list[tuple[str, str, str, float, float | None]]]:
        """(last change id, active unexpired rows) for building the in-memory index."""
        t = Suppression.__table__
        with self.engine.connect() as conn:
            last = conn.execute(select(func.coalesce(func.max(Change.id), 0))).scalar_one()
            rows = conn.execute(select(t.c.address, t.c.tenant, t.c.reason, t.c.created_at, t.c.expires_at)
                                .where(t.c.active.is_(True))
                                .where((t.c.expires_at.is_(None)) | (t.c.expires_at > now))).all()
        return last, rows  # type: ignore[return-value]

    def changes_since(self, last_id: int, limit: int = 50000) -> list[Any]:
        """Change-feed rows with id > last_id, in id order (see ChangeCursor for out-of-order commits)."""
        t = Change.__table__
        with self.engine.connect() as conn:
            return list(conn.execute(select(t.c.id, t.c.kind, t.c.address, t.c.tenant, t.c.active, t.c.reason,
                                            t.c.created_at, t.c.expires_at)
                                     .where(t.c.id > last_id).order_by(t.c.id).limit(limit)).all())
