"""Retention: raw messages and events older than the configured days are pruned.

What explains a suppression stays: events linked from ``suppression_causes`` and the raw
messages those events came from are kept however old, as are the suppressions themselves.
"""

from __future__ import annotations

from sqlalchemy import Engine, and_, delete, exists, select

from sidecar.store.models import Event, RawMessage, SuppressionCause


def prune(engine: Engine, now: float, days: int, batch: int = 5000) -> tuple[int, int]:
    """(events deleted, raw messages deleted); ``days`` 0 keeps everything."""
    if days <= 0:
        return 0, 0
    cutoff = now - days * 86400.0
    ev = evs = 0
    with engine.begin() as conn:
        old_events = (
            select(Event.id)
            .where(Event.created_at < cutoff, ~exists().where(SuppressionCause.event_id == Event.id))
            .limit(batch)
        )
        while True:
            ids = [r[0] for r in conn.execute(old_events)]
            if not ids:
                break
            ev += conn.execute(delete(Event).where(Event.id.in_(ids))).rowcount
        old_messages = (
            select(RawMessage.id)
            .where(RawMessage.received_at < cutoff, ~exists().where(and_(Event.message_id == RawMessage.id)))
            .limit(batch)
        )
        while True:
            ids = [r[0] for r in conn.execute(old_messages)]
            if not ids:
                break
            evs += conn.execute(delete(RawMessage).where(RawMessage.id.in_(ids))).rowcount
    return ev, evs
