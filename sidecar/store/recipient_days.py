"""The record of recipients in the database: each node's day filters and each day's tenants.

Everything here blocks: the service calls it from its database thread pool; the ingester
(one process per message, or the hand-off service's pool) through :class:`StoredRecipients`.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine, delete, select

from sidecar.recipient_filters import DayFilters, RecipientRecorder, day_of, first_day
from sidecar.store.db import dialect_insert
from sidecar.store.models import RecipientFilter, RecipientTenant

F, T = RecipientFilter.__table__, RecipientTenant.__table__


def flush(
    engine: Engine, recorder: RecipientRecorder, node: str, pending: dict[int, set[tuple[str, str]]], now: float
) -> int:
    """Hash ``pending`` into the recorder's filters, then write every changed filter and its
    tenants (:func:`stored_bits`, ``recorder.apply``, :func:`save_dirty`, all in the calling
    thread). The days applied are removed from ``pending`` (what is left after an error was not
    recorded). Returns the distinct pairs added."""
    added = 0
    for day in sorted(pending):
        stored = stored_bits(engine, node, day) if day not in recorder.filters else None
        added += recorder.apply(day, pending.pop(day), stored)
    save_dirty(engine, recorder, node, now)
    return added


def stored_bits(engine: Engine, node: str, day: int) -> bytes | None:
    """This node's stored filter of ``day``: a day's filter not in memory yet starts from it (a
    restart within the day keeps what was recorded before it)."""
    with engine.connect() as conn:
        return conn.execute(select(F.c.bits).where(F.c.day == day, F.c.node == node)).scalar()


def save_dirty(engine: Engine, recorder: RecipientRecorder, node: str, now: float) -> None:
    """Write every filter changed since it was saved, and its tenants, in one transaction."""
    rows = recorder.dirty()
    if not rows:
        return
    with engine.begin() as conn:
        for day, data, items, tenants in rows:
            ins = dialect_insert(conn, F)
            conn.execute(
                ins.values(day=day, node=node, bits=data, items=items, updated_at=now).on_conflict_do_update(
                    index_elements=["day", "node"],  # the blob is sent once
                    set_={
                        "bits": ins.excluded.bits,
                        "items": ins.excluded["items"],
                        "updated_at": ins.excluded.updated_at,
                    },
                )
            )
            if tenants:
                conn.execute(
                    dialect_insert(conn, T).on_conflict_do_nothing(), [{"day": day, "tenant": t} for t in tenants]
                )
    recorder.saved([r[0] for r in rows], now)


def prune(engine: Engine, now: float, retention: float) -> int:
    """Delete the days that left the window; returns the filter rows deleted."""
    lo = first_day(now, retention)
    with engine.begin() as conn:
        n = conn.execute(delete(RecipientFilter).where(RecipientFilter.day < lo)).rowcount
        conn.execute(delete(RecipientTenant).where(RecipientTenant.day < lo))
    return n


class StoredRecipients:
    """``RecipientLookup`` over the store: the window's filters, cached with their update stamps.

    Each lookup reads the stamps (one small query) and loads only the filters that changed
    since the last one, so a long-lived process (the hand-off service) reads each filter once
    per flush, and a one-shot ``sidecar ingest`` reads the window once. With ``max_age``, a
    lookup within that many seconds of the last reading of the same window reads nothing (the
    service's: a burst of bounces asked twice per address, ~0.4 ms each, for filters that change
    once per ``flush_interval``). Thread-safe."""

    def __init__(self, engine: Engine, retention: float, max_age: float = 0.0) -> None:
        self.engine = engine
        self.retention = retention
        self.max_age = max_age
        self.days = DayFilters()
        self._lock = threading.Lock()
        self._read: tuple[int, int, float] | None = None  # (first day, last day, monotonic time) of the last read

    def refresh(self, now: float) -> None:
        lo, hi = first_day(now, self.retention), day_of(now)
        last, t0 = self._read, time.monotonic()
        if last is not None and last[:2] == (lo, hi) and t0 - last[2] < self.max_age:
            return
        with self.engine.connect() as conn:
            stamps = {
                (d, n): at
                for d, n, at in conn.execute(
                    select(F.c.day, F.c.node, F.c.updated_at).where(F.c.day >= lo, F.c.day <= hi)
                )
            }
            stale = self.days.stale(stamps)
            for day in stale:  # every node's filter of a day that changed, one day at a time
                self.days.put_day(
                    day,
                    [
                        (n, at, bits)
                        for n, at, bits in conn.execute(
                            select(F.c.node, F.c.updated_at, F.c.bits).where(F.c.day == day).order_by(F.c.node)
                        )
                    ],
                )
            tenants: dict[int, set[str]] = {}
            for d, t in conn.execute(select(T.c.day, T.c.tenant).where(T.c.day >= lo, T.c.day <= hi)):
                tenants.setdefault(d, set()).add(t)
        self.days.keep({d for d, _ in stamps} | set(stale), {d: frozenset(ts) for d, ts in tenants.items()})
        self._read = (lo, hi, t0)

    def tenants_for(self, address: str, now: float) -> frozenset[str]:
        with self._lock:
            self.refresh(now)
            return self.days.tenants_for(address, now, self.retention)
