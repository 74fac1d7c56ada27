"""Rate-limit counters in the database: saved periodically, loaded at start."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Engine, delete, insert, select

from sidecar.store.db import dialect_insert
from sidecar.store.models import Change, RateLimitCounter


def load_counters(engine: Engine, now: float) -> list[tuple[str, float]]:
    t = RateLimitCounter.__table__
    with engine.connect() as conn:
        return [(k, v) for k, v in conn.execute(select(t.c.key, t.c.tat).where(t.c.tat > now))]


_SQLITE_UPSERT = (
    "INSERT INTO ratelimit_counters (key, tat, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET tat = excluded.tat, updated_at = excluded.updated_at"
)


def save_counters(engine: Engine, items: Mapping[str, float | None], now: float) -> None:
    """Upsert TATs; None deletes the row (the key went idle)."""
    dels = [k for k, v in items.items() if v is None]
    with engine.begin() as conn:
        if len(dels) < len(items):
            if conn.dialect.name == "sqlite":
                # Thousands of rows a second: the driver's executemany costs a third of Core's.
                cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                try:
                    cur.executemany(_SQLITE_UPSERT, ((k, v, now) for k, v in items.items() if v is not None))  # type: ignore[arg-type]
                finally:
                    cur.close()
            else:
                ups = [{"key": k, "tat": v, "updated_at": now} for k, v in items.items() if v is not None]
                ins = dialect_insert(conn, RateLimitCounter.__table__)
                conn.execute(
                    ins.on_conflict_do_update(
                        index_elements=["key"], set_={"tat": ins.excluded.tat, "updated_at": ins.excluded.updated_at}
                    ),
                    ups,
                )
        for i in range(0, len(dels), 500):
            conn.execute(delete(RateLimitCounter).where(RateLimitCounter.key.in_(dels[i : i + 500])))


def counters_for(engine: Engine, key: str) -> list[tuple[str, float]]:
    t = RateLimitCounter.__table__
    with engine.connect() as conn:
        return [
            (k, v)
            for k, v in conn.execute(select(t.c.key, t.c.tat).where(t.c.key.startswith(key + "#", autoescape=True)))
        ]


def reset_key(engine: Engine, key: str, now: float) -> int:
    """Clear a key's counters and tell every running server through the change feed."""
    with engine.begin() as conn:
        n = conn.execute(
            delete(RateLimitCounter).where(RateLimitCounter.key.startswith(key + "#", autoescape=True))
        ).rowcount
        conn.execute(insert(Change).values(kind="limit-reset", address=key, tenant="", active=False, changed_at=now))
    return n
